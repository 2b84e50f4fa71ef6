"""The loss a trained ANN is saved with: cross-entropy of logits with label smoothing.

`train.py` compiles its models with `SmoothedSparseCrossentropy`, so a saved
checkpoint holds it; it is registered with Keras here, in the library, so that
`keras.models.load_model` rebuilds it once `bsnn_tf` is imported.
"""

import keras


# Registered: a model saved by `train` holds its loss, and `keras.models.load_model`
# (compile=True) rebuilds it by this name once bsnn_tf is imported.
@keras.saving.register_keras_serializable(package="bsnn_tf")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels smoothed by `smoothing`.

    The target puts `1 - smoothing` on the label and spreads `smoothing`
    evenly over all classes (as `keras.losses.CategoricalCrossentropy`'s
    `label_smoothing`, which the sparse loss lacks).

    Example:
        >>> loss = SmoothedSparseCrossentropy(0.1)
        >>> float(loss(np.array([0]), np.array([[0.0, 0.0]])))   # log 2
        0.693...
    """

    def __init__(self, smoothing=0.0, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        log_probabilities = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        picked = keras.ops.take_along_axis(log_probabilities, labels[:, None], axis=-1)[:, 0]
        spread = keras.ops.mean(log_probabilities, axis=-1)
        return -((1.0 - self.smoothing) * picked + self.smoothing * spread)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}
