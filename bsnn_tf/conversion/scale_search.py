"""The calibrate stage: each spiking layer's lambda from the ANN's activations.

"percentile" keeps the p-th percentile of a layer's activations
(`statistics.ActivationStatistics`); the searching modes ("mse", "light",
"advanced") pick, among a grid of candidates that contains the percentile, the
lambda with the smallest quantisation error sum (lambda * f(a / lambda) - a)**2
on a sample of the images (SEARCH_IMAGES).
"""

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from bsnn_tf import console
from bsnn_tf.conversion.calibration import SEARCHING_MODES, check_calibration_mode
from bsnn_tf.conversion.keras_graph import to_keras
from bsnn_tf.conversion.statistics import (ActivationStatistics, as_list, predict_batches,
                                           predict_with_callbacks)
from bsnn_tf.validation import check_inputs

# The "mse" search: fractions of the largest activation per pass (two passes), on at
# most SEARCH_IMAGES evenly spaced calibration images (the statistics use them all).
SEARCH_STEPS = 16
SEARCH_IMAGES = 2048


class QuantizationError(keras.layers.Layer):
    """Per batch, sum (lambda * f(a / lambda) - a)**2 of activations `a` for candidate scales.

    Args:
        candidates: (G, channels) candidate scales lambda; one column unless
            `channelwise`.
        quantizer: f, the neurons' mean output for a normalised current.
        channelwise: errors per channel (last axis) instead of per layer.

    Example:
        >>> errors = QuantizationError(np.array([[1.0], [2.0]]),
        ...                            lambda v: ops.clip(ops.floor(v * 2) / 2, 0, 0.5))
        >>> np.asarray(errors(np.array([[1.0]], "float32")))  # lambda 1 emits 0.5, 2 emits 1
        array([[[0.25],
                [0.  ]]], dtype=float32)
    """

    def __init__(self, candidates, quantizer, channelwise=False, **kwargs):
        super().__init__(**kwargs)
        self.candidates = np.asarray(candidates, "float32")
        self.quantizer = quantizer
        self.channelwise = channelwise

    def call(self, activations):
        columns = activations.shape[-1] if self.channelwise else 1
        values = ops.reshape(activations, (-1, columns))
        sums = []
        for scale in self.candidates:
            error = scale * self.quantizer(values / scale) - values
            sums.append(ops.sum(error * error, axis=0))
        return ops.stack(sums)[None]


def calibrate(graph, data, percentile=99.99, channelwise=False, batch_size=64, verbose="auto",
              mode="percentile", quantizer=None):
    """The scale lambda of every spiking layer of `graph`, from its ANN activations on `data`.

    Args:
        mode: "percentile" keeps the p-th percentile; any other mode searches
            the scale with the smallest quantisation error under `quantizer`.
        quantizer: the neurons' mean output f (needed unless "percentile").

    Returns:
        {spiking node name: lambda}, each a positive float or, if `channelwise`,
        an array with one value per channel.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile={percentile} is out of range: use (0, 100].")
    check_calibration_mode(mode)
    data = check_inputs(data, graph.input_shape)
    names = [node.name for node in graph.spiking_nodes()]
    probe, tensors = to_keras(graph, outputs=names)
    totals = [len(data) * int(np.prod(tensors[n].shape[1:-1] if channelwise
                                      else tensors[n].shape[1:])) for n in names]
    stats = ActivationStatistics(names, totals, percentile, channelwise)
    predict_with_callbacks(probe, data, batch_size, [stats], verbose)
    lambdas, maxima = stats.result(), stats.maxima()
    searching = mode in SEARCHING_MODES
    _check_statistics(graph, maxima, maxima if searching else lambdas)
    if searching:
        lambdas = _search(_Search(probe, names, data, lambdas, maxima, quantizer, channelwise,
                                  batch_size, verbose))
    lambdas = _fit_clips(graph, lambdas, quantizer)
    lambdas.update(trained_thresholds(graph))
    return {name: _positive_scale(value) for name, value in lambdas.items()}


def trained_thresholds(graph):
    """{node: lambda} of the ReLUs trained with the quantiser in the loop
    (`bsnn_tf.quantized.QuantizedReLU`): they keep the lambda they learned."""
    return {node.name: node.config["threshold"] for node in graph.spiking_nodes()
            if "threshold" in node.config}


def _fit_clips(graph, lambdas, quantizer):
    """A ReLU clipped at max_value whose lambda reaches the clip gets lambda = max_value /
    (the neurons' top level), so that their top level is the clip itself: a code with a
    largest value clips natively."""
    top = 1.0 if quantizer is None else float(
        ops.convert_to_numpy(quantizer(ops.convert_to_tensor(np.float32([2.0]))))[0])
    fitted = dict(lambdas)
    for node in graph.spiking_nodes():
        clip = node.config.get("max_value")
        if clip is not None:
            value = np.asarray(lambdas[node.name], "float32")
            value = np.where(value >= clip, np.float32(clip / top), value)
            fitted[node.name] = float(value) if value.ndim == 0 else value
    return fitted


@dataclasses.dataclass
class _Search:
    """What each pass of the scale search measures against: the probe model of the spiking
    layers `names`, the images, and each layer's percentile and maximum."""

    probe: keras.Model
    names: list
    data: object
    percentiles: dict
    maxima: dict
    quantizer: object
    channelwise: bool
    batch_size: int
    verbose: object


def _search(search):
    """The candidate scale with the smallest quantisation error, per layer (or channel).

    Two passes: SEARCH_STEPS fractions of the largest activation, then as many
    around the best of them; the percentile is a candidate in both. The errors
    are measured on `search_sample(data)`: a mean error needs far fewer images
    than a 99.99th percentile, and each pass costs 17 quantisations of every
    activation.
    """
    search = dataclasses.replace(search, data=search_sample(search.data))
    fractions = np.arange(1, SEARCH_STEPS + 1) / SEARCH_STEPS
    best = _best_candidates(search, lambda name: fractions)
    fine = (np.arange(SEARCH_STEPS) - SEARCH_STEPS // 2) / SEARCH_STEPS**2
    return _best_candidates(
        search, lambda name: best[name] / _positive_scale(search.maxima[name]) + fine[:, None])


def search_sample(data):
    """The calibration images the scale search measures errors on: at most SEARCH_IMAGES,
    evenly spaced (rows round(linspace(0, N - 1, SEARCH_IMAGES)))."""
    if len(data) <= SEARCH_IMAGES:
        return data
    return data[np.round(np.linspace(0, len(data) - 1, SEARCH_IMAGES)).astype(int)]


def _best_candidates(search, fractions_of):
    """{name: the candidate scale with the smallest error}; candidates are the percentile
    and `fractions_of(name)` (per channel: (G, channels) or (G,)) times the maximum."""
    candidates = []
    for name in search.names:
        largest = np.atleast_1d(search.maxima[name])
        fractions = np.asarray(fractions_of(name), "float32")
        fractions = fractions.reshape(len(fractions), -1)
        grid = np.clip(fractions, 1.0 / SEARCH_STEPS**2, 1.0) * largest
        grid = np.concatenate([np.atleast_2d(search.percentiles[name]).reshape(1, -1), grid])
        candidates.append(np.where(largest > 0, grid, 1.0))  # silent units keep lambda 1
    measured = [QuantizationError(grid, search.quantizer, search.channelwise,
                                  name=f"{name}_error")(output)
                for name, grid, output in zip(search.names, candidates,
                                              as_list(search.probe.outputs))]
    progress = console.Progress(len(search.data), "Searching scales", verbose=search.verbose)
    errors = predict_batches(keras.Model(search.probe.inputs, measured), search.data,
                             min(search.batch_size, 32), progress)
    found = {}
    for name, grid, error in zip(search.names, candidates, as_list(errors)):
        best = np.argmin(np.sum(error, axis=0), axis=0)  # ties keep the percentile (row 0)
        value = grid[best, np.arange(grid.shape[1])]
        found[name] = value if search.channelwise else float(value[0])
    return found


def _check_statistics(graph, maxima, scales):
    """A ValueError naming a layer with a NaN or infinite activation; a warning naming one
    whose scale statistic is 0 (its neurons would stay silent)."""
    for name, value in scales.items():
        origin = graph[name].origin or name
        if not np.all(np.isfinite(maxima[name])):
            raise ValueError(
                f"Layer '{origin}' has NaN or infinite activations on the calibration data; "
                "check the model's weights (np.isfinite) and the data.")
        if np.all(np.asarray(value) <= 0):
            warnings.warn(
                f"Layer '{origin}' never activates on the calibration data (every ReLU output "
                "is 0); its neurons will stay silent. Check the data's preprocessing.",
                stacklevel=4)


def _positive_scale(value):
    """`value` where it is positive, else 1: a silent layer (or channel) keeps lambda 1."""
    if np.ndim(value) == 0:
        return value if value > 0 else 1.0
    return np.where(value > 0, value, 1.0).astype("float32")
