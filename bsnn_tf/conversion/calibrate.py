"""Stage 3, calibrate: activation statistics of every ReLU over calibration data.

The folded ANN is rebuilt with an output at every ReLU and run over the data
batch by batch; a Keras callback, `ActivationStatistics`, keeps the exact
maximum or p-th percentile of each activation (per layer or per channel)
without holding the activations in memory.
"""

import keras
import numpy as np

from bsnn_tf.conversion.graph import to_keras


class ActivationStatistics(keras.callbacks.Callback):
    """Streams the exact p-th percentile of each output over predict batches.

    np.percentile of N values interpolates between the sorted values at
    positions floor(q) and floor(q) + 1, q = p / 100 * (N - 1); both lie in
    the top N - floor(q) values, so only that many are kept.

    Args:
        names: one name per model output.
        totals: how many values each output has over the whole data, per
            channel if `channelwise`.
        percentile: p in (0, 100]; 100 is the maximum.
        channelwise: one statistic per channel (last axis) instead of per output.

    Example:
        >>> stats = ActivationStatistics(["relu"], totals=[n * 10], percentile=99.9)
        >>> # call on_predict_batch_end(step, {"outputs": [batch_activations]}) per batch
        >>> # stats.result() -> {"relu": value}
    """

    def __init__(self, names, totals, percentile=100.0, channelwise=False):
        super().__init__()
        self.names = list(names)
        self.positions = [percentile / 100.0 * (total - 1) for total in totals]
        self.keep = [total - int(np.floor(pos)) for total, pos in zip(totals, self.positions)]
        self.channelwise = channelwise
        self.top = [None] * len(self.names)

    def on_predict_batch_end(self, batch, logs=None):
        outputs = logs["outputs"]
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for index, values in enumerate(outputs):
            values = np.asarray(values)
            columns = values.shape[-1] if self.channelwise else 1
            values = values.reshape(-1, columns)
            if self.top[index] is not None:
                values = np.concatenate([self.top[index], values])
            keep = min(self.keep[index], len(values))
            self.top[index] = np.partition(values, len(values) - keep, axis=0)[-keep:]

    def result(self):
        """{name: statistic}: a float, or a per-channel array if channelwise."""
        results = {}
        for name, top, position in zip(self.names, self.top, self.positions):
            ordered = np.sort(top, axis=0)
            fraction = position - np.floor(position)
            upper = ordered[1] if len(ordered) > 1 else ordered[0]
            value = ordered[0] + fraction * (upper - ordered[0])
            results[name] = value if self.channelwise else float(value[0])
        return results


def check_inputs(x, input_shape, what="calibration data"):
    """Returns `x` as float32, or raises a ValueError saying what is wrong with it."""
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"The {what} must be a numeric array, got dtype {x.dtype}.")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"The {what} is empty; pass at least one image.")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"The {what} has shape {x.shape}, but the model expects (N, "
            f"{', '.join(map(str, input_shape))})."
        )
    x = x.astype("float32", copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"The {what} contains {bad} NaN or infinite values; clean it first.")
    return x


def calibrate(graph, data, percentile=99.99, channelwise=False, batch_size=64, verbose="auto"):
    """Activation statistic (lambda) of every ReLU of `graph` over `data`.

    Returns:
        {relu node name: lambda}, each a positive float or, if `channelwise`,
        an array with one value per channel. All-zero activations get 1.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile={percentile} is out of range: use (0, 100].")
    data = check_inputs(data, graph.input_shape)
    names = [node.name for node in graph.spiking_nodes()]
    probe, tensors = to_keras(graph, outputs=names)
    totals = []
    for name in names:
        shape = tensors[name].shape[1:]
        per_value = int(np.prod(shape[:-1] if channelwise else shape))
        totals.append(len(data) * per_value)
    stats = ActivationStatistics(names, totals, percentile, channelwise)
    _predict_with_callbacks(probe, data, batch_size, [stats], verbose)
    return {name: _positive(value) for name, value in stats.result().items()}


def _positive(value):
    if np.ndim(value) == 0:
        return value if value > 0 else 1.0
    return np.where(value > 0, value, 1.0).astype("float32")


def _predict_with_callbacks(model, data, batch_size, callbacks, verbose):
    """model.predict's callback protocol, without keeping the outputs."""
    steps = -(-len(data) // batch_size)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_progbar=verbose != 0, model=model,
        verbose=1 if verbose == "auto" else verbose, epochs=1, steps=steps,
    )
    callback_list.on_predict_begin()
    for step in range(steps):
        callback_list.on_predict_batch_begin(step)
        outputs = model.predict_on_batch(data[step * batch_size:(step + 1) * batch_size])
        callback_list.on_predict_batch_end(step, {"outputs": outputs})
    callback_list.on_predict_end()
