"""Activation statistics of the ANN for calibration: a streamed percentile, and batch helpers.

`ActivationStatistics` (a Keras predict callback) keeps each spiking layer's
p-th percentile and maximum over the calibration images in one pass;
`predict_with_callbacks` and `predict_batches` run a model batch by batch
without keeping its outputs whole; `default_batch_size` bounds the batch by
the model's activations rather than by the data.
"""

import keras
import numpy as np

from bsnn_tf import console

# The default batch: at most MAX_BATCH images, and as many as keep the activations of
# every spiking layer, ACTIVATION_COPIES times (the outputs, and the statistics' working
# copies), within ACTIVATION_BYTES.
MAX_BATCH = 64
ACTIVATION_BYTES = 1 << 29
ACTIVATION_COPIES = 3


def default_batch_size(graph, budget=ACTIVATION_BYTES):
    """Calibration images per batch for `graph`: memory bounded by the model, not the data."""
    shapes = graph.shapes()
    units = sum(int(np.prod(shapes[node.name])) for node in graph.spiking_nodes())
    return int(np.clip(budget // max(units * 4 * ACTIVATION_COPIES, 1), 1, MAX_BATCH))


class ActivationStatistics(keras.callbacks.Callback):
    """Streams the exact p-th percentile of each output over predict batches.

    np.percentile of N values interpolates between the sorted values at
    positions floor(q) and floor(q) + 1, q = p / 100 * (N - 1); both lie in
    the top N - floor(q) values, so only that many are kept, and once they
    are, a batch's values at or below the smallest kept one are passed over
    without sorting (after a few batches, nearly all of them). The largest
    kept value is the maximum (`maxima`), so one pass gives both.

    Args:
        names: one name per model output.
        totals: how many values each output has over the whole data, per
            channel if `channelwise`.
        percentile: p in (0, 100]; 100 is the maximum.
        channelwise: one statistic per channel (last axis) instead of per output.

    Example:
        >>> stats = ActivationStatistics(["relu"], totals=[40], percentile=90)
        >>> values = np.arange(40, dtype="float32").reshape(4, 10)
        >>> stats.on_predict_batch_end(0, {"outputs": [values]})
        >>> round(stats.result()["relu"], 2)
        35.1
    """

    def __init__(self, names, totals, percentile=100.0, channelwise=False):
        super().__init__()
        self.names = list(names)
        self.positions = [percentile / 100.0 * (total - 1) for total in totals]
        self.keep = [total - int(np.floor(pos)) for total, pos in zip(totals, self.positions)]
        self.channelwise = channelwise
        self.top = [None] * len(self.names)

    def on_predict_batch_end(self, batch, logs=None):
        for index, values in enumerate(as_list(logs["outputs"])):
            values = as_columns(values, self.channelwise)
            top, keep = self.top[index], self.keep[index]
            if top is not None:
                if len(top) == keep:  # top[0] is the smallest kept value of each column
                    values = _above(values, top[0])
                values = np.concatenate([top, values])
            keep = min(keep, len(values))
            self.top[index] = np.partition(values, len(values) - keep, axis=0)[-keep:]

    def result(self):
        """{name: statistic}: a float, or a per-channel array if channelwise."""
        results = {}
        for name, top, position in zip(self.names, self.top, self.positions):
            ordered = np.sort(top, axis=0)
            fraction = position - np.floor(position)
            upper = ordered[1] if len(ordered) > 1 else ordered[0]
            results[name] = self._per_output(ordered[0] + fraction * (upper - ordered[0]))
        return results

    def maxima(self):
        """{name: the largest value} (NaN if any value was NaN), shaped as `result`."""
        return {name: self._per_output(np.max(top, axis=0))
                for name, top in zip(self.names, self.top)}

    def _per_output(self, column_values):
        return column_values if self.channelwise else float(column_values[0])


def predict_with_callbacks(model, data, batch_size, callbacks, verbose):
    """model.predict's callback protocol, without keeping the outputs; progress over images."""
    steps = -(-len(data) // batch_size)
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=1, steps=steps)
    progress = console.Progress(len(data), "Calibrating", verbose=verbose)
    callback_list.on_predict_begin()
    for step in range(steps):
        callback_list.on_predict_batch_begin(step)
        batch = data[step * batch_size:(step + 1) * batch_size]
        outputs = model.predict_on_batch(batch)
        callback_list.on_predict_batch_end(step, {"outputs": outputs})
        progress.add(len(batch))
    callback_list.on_predict_end()


def predict_batches(model, data, batch_size, progress):
    """model.predict(data) batch by batch, reporting images to `progress`; a list of outputs."""
    parts = []
    for start in range(0, len(data), batch_size):
        batch = data[start:start + batch_size]
        parts.append([np.asarray(o) for o in as_list(model.predict_on_batch(batch))])
        progress.add(len(batch))
    return [np.concatenate(outputs) for outputs in zip(*parts)]


def as_list(values):
    """`values` as a list (a model's outputs: one tensor, or several)."""
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _above(values, floor):
    """The values of each column (last axis) above its `floor`, and any NaN (so that the
    statistics still show it), as columns of equal length padded with -inf."""
    mask = ~(values <= floor)
    counts = mask.sum(axis=0)
    columns, rows = np.nonzero(mask.T)  # column by column, so each column's values are a run
    starts = np.cumsum(counts) - counts
    above = np.full((int(counts.max(initial=0)), values.shape[1]), -np.inf, values.dtype)
    above[np.arange(len(rows)) - starts[columns], columns] = values[rows, columns]
    return above


def as_columns(values, channelwise):
    """`values` as rows of one column, or of one column per channel (last axis)."""
    values = np.asarray(values)
    return values.reshape(-1, values.shape[-1] if channelwise else 1)
