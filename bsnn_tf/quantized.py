"""QuantizedReLU: a ReLU that outputs what a BIF layer emits at its first readout.

A BSNN's output at its first readout, T = (D + 1) K, is the ANN with every
ReLU `a = relu(z)` replaced by `lambda * Q(z / lambda + rest)`: K bits of
[0, lambda] (`neurons.bif_first_output`). `QuantizedReLU` is that function as
a Keras layer with a learned `lambda` (its threshold), so that a network can
be trained with the quantiser in the loop (QCFS, Bu et al. 2022; LSQ, Esser
et al. 2020): `train.py --snn_phases K` trains with it, and
`convert(calibration="finetune")` fine-tunes the converted network with it.
A network trained with it converts with its thresholds as the normalisation,
so its BSNN's first readout is exactly the trained network (BN folded).

The rounding has a straight-through gradient (that of clip(z / lambda, 0,
top)); lambda gets the LSQ gradient, the rounding error inside the range and
the top level above it. lambda is learned in log space, so its Adam steps are
relative to its size, whatever the layer's range, and `threshold_rate` times
the weights' steps: at the small learning rates that fine-tuning needs, lambda
would otherwise stay within a few percent of its start (Adam's steps are about
the learning rate each, whatever the gradient's size).

Example:
    >>> layer = QuantizedReLU(phases=2, threshold=1.0)
    >>> np.asarray(layer(np.array([[-1.0, 0.1, 0.3, 0.55, 2.0]], "float32"))).tolist()
    [[0.0, 0.0, 0.25, 0.5, 0.75]]
"""

import keras
import numpy as np
from keras import ops

from bsnn_tf import coding
from bsnn_tf.neurons import bif_first_output


@keras.saving.register_keras_serializable(package="bsnn_tf")
class QuantizedReLU(keras.layers.Layer):
    """lambda * Q(z / lambda + rest): a BIF layer's first output as an ANN activation.

    Args:
        phases: K, the bits of the code.
        initial_membrane: the neurons' membrane at rest, in units of 2**-K (0.5
            rounds to the nearest level; the BSNN default).
        threshold: lambda's initial value (a float, or one per channel).
        channelwise: one lambda per channel (last axis) instead of one per layer.
        max_value: a ReLU6-like clip: lambda stays at most max_value / top, so the
            top level is at most the clip.
        threshold_rate: lambda's optimiser steps (in log lambda) relative to the
            weights'. The variable holds log(lambda) / threshold_rate.
    """

    def __init__(self, phases=4, initial_membrane=0.5, threshold=1.0, channelwise=False,
                 max_value=None, threshold_rate=1.0, **kwargs):
        super().__init__(**kwargs)
        self.phases = coding.check_phases(phases)
        self.initial_membrane = float(initial_membrane)
        self.initial_threshold = np.asarray(threshold, "float32")
        if np.any(self.initial_threshold <= 0) or not np.all(np.isfinite(self.initial_threshold)):
            raise ValueError(f"threshold must be positive and finite, got {threshold!r}.")
        self.channelwise = bool(channelwise)
        self.max_value = None if max_value is None else float(max_value)
        self.threshold_rate = float(threshold_rate)
        if not self.threshold_rate > 0:
            raise ValueError(f"threshold_rate must be positive, got {threshold_rate!r}.")

    @property
    def top(self):
        """The largest output level, in units of lambda: 1 - 2**-K."""
        return 1.0 - 2.0**-self.phases

    def build(self, input_shape):
        shape = (input_shape[-1],) if self.channelwise else ()
        self.scaled_log_threshold = self.add_weight(
            shape=shape, initializer=keras.initializers.Constant(
                self.scaled_log(self.initial_threshold, shape)), name="scaled_log_threshold")

    def scaled_log(self, threshold, shape):
        """The variable's value for lambda = `threshold`."""
        return np.broadcast_to(np.log(threshold) / self.threshold_rate, shape).astype("float32")

    @property
    def threshold(self):
        """lambda, as used (clipped to max_value / top where there is a clip)."""
        value = ops.exp(self.scaled_log_threshold * self.threshold_rate)
        if self.max_value is not None:
            value = ops.minimum(value, self.max_value / self.top)
        return value

    def call(self, z):
        threshold = ops.cast(self.threshold, z.dtype)
        scaled = z / threshold
        smooth = ops.clip(scaled, 0.0, self.top)
        levels = bif_first_output(scaled, self.phases, self.initial_membrane)
        return threshold * (smooth + ops.stop_gradient(levels - smooth))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(phases=self.phases, initial_membrane=self.initial_membrane,
                      threshold=self.initial_threshold.tolist(), channelwise=self.channelwise,
                      max_value=self.max_value, threshold_rate=self.threshold_rate)
        return config


def quantize_relus(model, phases, initial_membrane=0.5, channelwise=False):
    """`model` with every ReLU (a ReLU layer, or a layer's relu/relu6 activation) replaced
    by a `QuantizedReLU`: a Functional model sharing `model`'s other layers and weights.

    Its thresholds start at 1; `set_thresholds` fits them to data.

    Example:
        >>> cnn = keras.Sequential([keras.Input((8, 8, 1)),
        ...                         keras.layers.Conv2D(4, 3, activation="relu"),
        ...                         keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> [type(l).__name__ for l in quantize_relus(cnn, phases=3).layers[1:]]
        ['Conv2D', 'QuantizedReLU', 'Flatten', 'Dense']
    """
    def quantizer(name, max_value=None):
        return QuantizedReLU(phases, initial_membrane, channelwise=channelwise,
                             max_value=max_value, name=name)

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.ReLU) and not (layer.negative_slope or layer.threshold):
            return quantizer(layer.name, layer.max_value)(*args, **kwargs)
        activation = getattr(getattr(layer, "activation", None), "__name__", None)
        if activation not in _CLIPS:
            return layer(*args, **kwargs)
        linear = type(layer).from_config({**layer.get_config(), "activation": "linear"})
        outputs = linear(*args, **kwargs)
        linear.set_weights(layer.get_weights())
        return quantizer(f"{layer.name}_relu", _CLIPS[activation])(outputs)

    if isinstance(model, keras.Sequential):
        inputs = keras.Input(model.inputs[0].shape[1:])
        outputs = inputs
        for layer in model.layers:
            outputs = call(layer, outputs)
        return keras.Model(inputs, outputs, name=model.name)
    return keras.models.clone_model(model, clone_function=lambda layer: layer,
                                    call_function=call)


# The ReLU activations a layer may carry, and their clips.
_CLIPS = {"relu": None, "relu6": 6.0}


def set_thresholds(model, x, percentile=99.99, batch_size=64):
    """Sets every QuantizedReLU's lambda of `model` to the `percentile` of the ReLU of its
    input on images `x` (per channel where it is channelwise): a start for training."""
    quantizers = [layer for layer in layers_of(model) if isinstance(layer, QuantizedReLU)]
    if not quantizers:
        return
    probe = keras.Model(model.inputs, [layer.input for layer in quantizers])
    inputs = probe.predict(x, batch_size=batch_size, verbose=0)
    inputs = inputs if isinstance(inputs, list) else [inputs]
    for layer, z in zip(quantizers, inputs):
        a = np.maximum(np.asarray(z), 0).reshape(-1, z.shape[-1])
        value = (np.percentile(a, percentile, axis=0) if layer.channelwise
                 else np.percentile(a, percentile))
        value = np.where(value > 0, value, 1.0).astype("float32")
        variable = layer.scaled_log_threshold
        variable.assign(layer.scaled_log(value, variable.shape))


def trained_settings(model):
    """{(phases, initial_membrane): the name of the first layer trained for them}, over
    every QuantizedReLU of `model` (empty for a model trained without them).

    Example:
        >>> list(trained_settings(quantize_relus(ann, phases=3)))
        [(3, 0.5)]
    """
    settings = {}
    for layer in layers_of(model):
        if isinstance(layer, QuantizedReLU):
            settings.setdefault((layer.phases, layer.initial_membrane), layer.name)
    return settings


def layers_of(model):
    """Every layer of `model`, nested models' included (not the models themselves)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from layers_of(layer)
        else:
            yield layer
