"""Stage 3, calibrate: each spiking layer's scale lambda, and optionally its bias and weights.

A converted network's output is that of the ANN with every ReLU replaced by
the neurons' *mean output* (`SpikingNeuron.mean_output`): for BSNN at its
first readout exactly the K-bit quantised activation, for the baselines an
approximation at a target T. Calibration is therefore post-training
activation quantisation (docs/DESIGN.md, "Calibration"), in four modes:

- "percentile": lambda is the p-th percentile of the layer's activations
  (the data-norm of Rueckauer et al. 2017).
- "mse": lambda minimises the quantisation error of the activations,
  sum (lambda * f(a / lambda) - a)**2 on a sample of the images
  (SEARCH_IMAGES), over grids that contain the percentile, so on that sample
  it is never worse than "percentile".
- "light": "mse", then bias correction (SNN Calibration, Li et al. 2021):
  layer by layer, each pre-activation's mean error against the ANN, per
  channel, is added to its bias, so it is zero on the calibration data.
- "advanced": "light", with weight reconstruction before each bias
  correction: the weights between a layer and the spiking layers it reads
  take a bounded number of Adam steps on the error of its quantised output
  (straight-through rounding) against the ANN.

The scales come from the ANN's activations (`ActivationStatistics`, a Keras
callback, streams them); bias and weights are corrected on the normalised
graph (`correct`), with the network quantised as the neurons will be.
"""

import warnings

import keras
import numpy as np
from keras import ops

from bsnn_tf import console
from bsnn_tf.conversion import ops as graph_ops
from bsnn_tf.conversion.graph import Node
from bsnn_tf.conversion.keras_graph import make_layer, set_weights, to_keras
from bsnn_tf.validation import check_inputs

MODES = ("percentile", "mse", "light", "advanced", "finetune")
# The modes that search each layer's scale for the smallest quantisation error; the
# others keep the percentile ("finetune" trains the scales from `FineTuning.start`'s).
SEARCHING_MODES = ("mse", "light", "advanced")
# `convert`'s default, chosen by the calibration study in docs/RESULTS.md.
DEFAULT_CALIBRATION = "percentile"
# The "mse" search: fractions of the largest activation per pass (two passes), on at
# most SEARCH_IMAGES evenly spaced calibration images (the statistics use them all).
SEARCH_STEPS = 16
SEARCH_IMAGES = 2048
# Weight reconstruction ("advanced"): Adam steps per layer, batch size, step size.
RECONSTRUCTION_STEPS = 256
RECONSTRUCTION_BATCH = 32
RECONSTRUCTION_LEARNING_RATE = 1e-5
# Bias correction: fractions of the mean pre-activation error tried per channel.
BIAS_SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# The default batch: at most MAX_BATCH images, and as many as keep the activations of
# every spiking layer, ACTIVATION_COPIES times (the outputs, and the statistics' working
# copies), within ACTIVATION_BYTES.
MAX_BATCH = 64
ACTIVATION_BYTES = 1 << 29
ACTIVATION_COPIES = 3


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"calibration must be one of {', '.join(map(repr, MODES))}; "
                         f"got {mode!r}.")
    return mode


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
        for index, values in enumerate(_as_list(logs["outputs"])):
            values = _columns(values, self.channelwise)
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


def default_batch_size(graph, budget=ACTIVATION_BYTES):
    """Calibration images per batch for `graph`: memory bounded by the model, not the data."""
    shapes = graph.shapes()
    units = sum(int(np.prod(shapes[node.name])) for node in graph.spiking_nodes())
    return int(np.clip(budget // max(units * 4 * ACTIVATION_COPIES, 1), 1, MAX_BATCH))


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
    check_mode(mode)
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
        lambdas = _search(probe, names, data, lambdas, maxima, quantizer, channelwise,
                          batch_size, verbose)
    lambdas = _fit_clips(graph, lambdas, quantizer)
    lambdas.update(trained_thresholds(graph))
    return {name: _positive(value) for name, value in lambdas.items()}


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


def _search(probe, names, data, percentiles, maxima, quantizer, channelwise, batch_size,
            verbose):
    """The candidate scale with the smallest quantisation error, per layer (or channel).

    Two passes: SEARCH_STEPS fractions of the largest activation, then as many
    around the best of them; the percentile is a candidate in both. The errors
    are measured on `search_sample(data)`: a mean error needs far fewer images
    than a 99.99th percentile, and each pass costs 17 quantisations of every
    activation.
    """
    data = search_sample(data)
    fractions = np.arange(1, SEARCH_STEPS + 1) / SEARCH_STEPS
    best = _best_candidates(probe, names, data, percentiles, maxima, quantizer, channelwise,
                            batch_size, verbose, lambda name: fractions)
    fine = (np.arange(SEARCH_STEPS) - SEARCH_STEPS // 2) / SEARCH_STEPS**2
    return _best_candidates(probe, names, data, percentiles, maxima, quantizer, channelwise,
                            batch_size, verbose,
                            lambda name: best[name] / _nonzero(maxima[name]) + fine[:, None])


def search_sample(data):
    """The calibration images the scale search measures errors on: at most SEARCH_IMAGES,
    evenly spaced (rows round(linspace(0, N - 1, SEARCH_IMAGES)))."""
    if len(data) <= SEARCH_IMAGES:
        return data
    return data[np.round(np.linspace(0, len(data) - 1, SEARCH_IMAGES)).astype(int)]


def _nonzero(value):
    return np.where(np.asarray(value) > 0, value, 1.0)


def _best_candidates(probe, names, data, percentiles, maxima, quantizer, channelwise,
                     batch_size, verbose, fractions_of):
    """{name: the candidate scale with the smallest error}; candidates are the percentile
    and `fractions_of(name)` (per channel: (G, channels) or (G,)) times the maximum."""
    candidates = []
    for name in names:
        largest = np.atleast_1d(maxima[name])
        fractions = np.asarray(fractions_of(name), "float32")
        fractions = fractions.reshape(len(fractions), -1)
        grid = np.clip(fractions, 1.0 / SEARCH_STEPS**2, 1.0) * largest
        grid = np.concatenate([np.atleast_2d(percentiles[name]).reshape(1, -1), grid])
        candidates.append(np.where(largest > 0, grid, 1.0))  # silent units keep lambda 1
    measured = [QuantizationError(grid, quantizer, channelwise, name=f"{name}_error")(output)
                for name, grid, output in zip(names, candidates, _as_list(probe.outputs))]
    errors = _predict_batches(keras.Model(probe.inputs, measured), data, min(batch_size, 32),
                              console.Progress(len(data), "Searching scales", verbose=verbose))
    found = {}
    for name, grid, error in zip(names, candidates, _as_list(errors)):
        best = np.argmin(np.sum(error, axis=0), axis=0)  # ties keep the percentile (row 0)
        value = grid[best, np.arange(grid.shape[1])]
        found[name] = value if channelwise else float(value[0])
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


def _positive(value):
    if np.ndim(value) == 0:
        return value if value > 0 else 1.0
    return np.where(value > 0, value, 1.0).astype("float32")


# ------------------------------------------------------- bias and weights


def correct(graph, data, mode, quantizer, input_code=None, input_scale=1.0, batch_size=64,
            verbose="auto"):
    """Bias correction ("light") and weight reconstruction ("advanced") of a normalised graph.

    Spiking layers are taken one by one in topological order, then the output:
    the network is run quantised as calibrated so far, and the layer's
    pre-activation is fitted to the normalised ANN's on `data`.

    Args:
        graph: the normalised graph (stage 4); a corrected copy is returned.
        mode: "light" or "advanced" (anything else returns `graph` unchanged).
        quantizer: the neurons' mean output f.
        input_code: x -> what the input layer sends, in the graph's input scale
            (default: x / input_scale, real-valued input).
        input_scale: lambda_0, the scale of the graph's input.
    """
    if mode not in ("light", "advanced"):
        return graph
    inputs = _Inputs(
        reference=_input_layer(lambda x: x / input_scale) if input_scale != 1 else None,
        quantized=_input_layer(input_code) if input_code else (
            _input_layer(lambda x: x / input_scale) if input_scale != 1 else None))
    ann, graph = graph, graph.copy()
    trained = set()
    targets = _targets(graph)
    progress = console.Progress(len(targets), "Correcting", unit="layer", verbose=verbose)
    for name in targets:
        if mode == "advanced":
            _reconstruct(graph, ann, name, data, quantizer, inputs, trained, batch_size)
        _correct_bias(graph, ann, name, data, quantizer, inputs, batch_size)
        progress.add(1)
    return graph


class _Inputs:
    """Input layers of the reference ANN and of the quantised network (None: identity)."""

    def __init__(self, reference, quantized):
        self.reference, self.quantized = reference, quantized


def _input_layer(function):
    return lambda: MeanOutput(function, name="input_code")


def _targets(graph):
    """The layers whose input is corrected: spiking ReLUs in order, then the output."""
    return [n.name for n in graph.spiking_nodes()] + [graph.output]


def _preactivation(graph, name):
    """The node whose output is `name`'s input current (or `name` itself for the output)."""
    return name if name == graph.output else graph[name].inputs[0]


def quantized_model(graph, outputs, quantizer, input_layer=None):
    """The ANN of `graph` with every spiking layer replaced by `MeanOutput(quantizer)`."""
    return to_keras(graph, outputs=outputs, input_layer=input_layer,
                    spiking_layer=lambda node: MeanOutput(quantizer, name=node.name))[0]


def _pair(graph, ann, name, quantizer, inputs):
    """Models of `name`'s pre-activation in the ANN and in the quantised network."""
    source = _preactivation(graph, name)
    reference = to_keras(ann, outputs=[_preactivation(ann, name)],
                         input_layer=inputs.reference)[0]
    return reference, quantized_model(graph, [source], quantizer, inputs.quantized)


def _correct_bias(graph, ann, name, data, quantizer, inputs, batch_size):
    """Shifts `name`'s input by the mean error, scaled per channel by the fraction in
    BIAS_SHIFTS that minimises the error of its output (the output layer: the whole mean)."""
    reference, quantized = _pair(graph, ann, name, quantizer, inputs)
    difference = lambda z, q: ops.sum(z - q, axis=0)
    total, rows = _sum_over_batches(reference, quantized, data, batch_size, difference)
    mean_error = total / rows
    delta = mean_error
    if name != graph.output:
        shifts = np.multiply.outer(np.asarray(BIAS_SHIFTS, "float32"), mean_error)

        def output_errors(z, q):
            wanted = ops.relu(z)
            return ops.stack([ops.sum((quantizer(q + shift) - wanted) ** 2, axis=0)
                              for shift in shifts])

        errors, _ = _sum_over_batches(reference, quantized, data, batch_size, output_errors)
        delta = shifts[np.argmin(errors, axis=0), np.arange(shifts.shape[1])]
    add_bias(graph, _preactivation(graph, name), None if name == graph.output else name, delta)


def _sum_over_batches(reference, quantized, data, batch_size, reduce):
    """(sum over batches of reduce(z, q) on (rows, channels) views, number of rows)."""
    total, rows = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = data[start:start + batch_size]
        z, q = (ops.convert_to_tensor(_columns(m.predict_on_batch(batch), True))
                for m in (reference, quantized))
        total = total + ops.convert_to_numpy(reduce(z, q))
        rows += int(z.shape[0])
    return total, rows


def _reconstruct(graph, ann, name, data, quantizer, inputs, trained, batch_size):
    """Adam steps on the weights between `name` and the spiking layers it reads."""
    source = _preactivation(graph, name)
    sources, cone = _cone(graph, source)
    trainable = [n for n in cone if graph[n].spec.calibrated and n not in trained]
    if not trainable:
        return
    reference, _ = _pair(graph, ann, name, quantizer, inputs)
    target = reference.predict(data, batch_size=batch_size, verbose=0)
    wanted = target if name == graph.output else np.maximum(target, 0)
    feeds = _as_list(quantized_model(graph, sources, quantizer, inputs.quantized).predict(
        data, batch_size=batch_size, verbose=0))
    model = _cone_model(graph, sources, cone, source, trainable,
                        quantizer if name != graph.output else None)
    model.compile(optimizer=keras.optimizers.Adam(RECONSTRUCTION_LEARNING_RATE), loss="mse")
    before = model.evaluate(feeds, wanted, batch_size=batch_size, verbose=0)
    model.fit(_RandomBatches(feeds, wanted), epochs=1, verbose=0)
    if model.evaluate(feeds, wanted, batch_size=batch_size, verbose=0) >= before:
        return  # keep the weights: the steps did not lower the error on the calibration data
    for node_name in trainable:
        values = model.get_layer(node_name).get_weights()
        keys = [_weight_key(graph[node_name])] + (["bias"] if len(values) > 1 else [])
        graph[node_name].weights.update(
            {key: np.asarray(value, "float32") for key, value in zip(keys, values)})
        trained.add(node_name)


class _RandomBatches(keras.utils.PyDataset):
    """RECONSTRUCTION_STEPS batches drawn at random (seeded) from `inputs` and `targets`."""

    def __init__(self, inputs, targets, seed=0):
        super().__init__()
        self.inputs, self.targets = inputs, targets
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return RECONSTRUCTION_STEPS

    def __getitem__(self, index):
        rows = self.rng.integers(0, len(self.targets), min(RECONSTRUCTION_BATCH, len(self.targets)))
        inputs = [x[rows] for x in self.inputs]
        return (tuple(inputs) if len(inputs) > 1 else inputs[0]), self.targets[rows]


def _cone(graph, name):
    """(spike sources, linear nodes in order) of the linear sub-graph that computes `name`."""
    sources, cone, pending = [], set(), [name]
    while pending:
        node = graph[pending.pop()]
        if node.spec.spike_source or node.spec.role == graph_ops.INPUT:
            if node.name not in sources:
                sources.append(node.name)
        elif node.name not in cone:
            cone.add(node.name)
            pending.extend(node.inputs)
    order = [n.name for n in graph]
    return sorted(sources, key=order.index), [n for n in order if n in cone]


def _cone_model(graph, inputs, cone, output, trainable, quantizer):
    """A Keras model of the linear nodes `cone` from `inputs` to `output`; only
    `trainable` nodes train; the output goes through the straight-through quantiser."""
    shapes = graph.shapes()
    tensors = {name: keras.Input(shapes[name], name=name) for name in inputs}
    for name in cone:
        node = graph[name]
        layer = make_layer(node)
        sources = [tensors[i] for i in node.inputs]
        tensors[name] = layer(sources if len(sources) > 1 else sources[0])
        set_weights(layer, node)
        layer.trainable = name in trainable
    result = tensors[output]
    if quantizer is not None:
        result = MeanOutput(quantizer, straight_through=True, name="quantizer")(result)
    return keras.Model([tensors[name] for name in inputs], result)


@keras.saving.register_keras_serializable(package="bsnn_tf")
class MeanOutput(keras.layers.Layer):
    """A spiking layer's mean output f(x) as an ANN activation (calibration only).

    With `straight_through`, the gradient is that of clip(x, 0, 1) (the
    straight-through estimator of the rounding).
    """

    def __init__(self, quantizer=None, straight_through=False, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = quantizer
        self.straight_through = straight_through

    def call(self, x):
        value = self.quantizer(x)
        if not self.straight_through:
            return value
        smooth = ops.clip(x, 0.0, 1.0)
        return smooth + ops.stop_gradient(value - smooth)


def _as_list(values):
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


def _columns(values, channelwise):
    values = np.asarray(values)
    return values.reshape(-1, values.shape[-1] if channelwise else 1)


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


def _predict_batches(model, data, batch_size, progress):
    """model.predict(data) batch by batch, reporting images to `progress`; a list of outputs."""
    parts = []
    for start in range(0, len(data), batch_size):
        batch = data[start:start + batch_size]
        parts.append([np.asarray(o) for o in _as_list(model.predict_on_batch(batch))])
        progress.add(len(batch))
    return [np.concatenate(outputs) for outputs in zip(*parts)]


def add_bias(graph, name, consumer, delta):
    """Adds the per-channel `delta` to the output of node `name` as `consumer` sees it."""
    node = graph[name]
    alone = len(graph.consumers(name)) <= 1
    if node.spec.calibrated and alone:
        bias = node.weights.get("bias", np.zeros(node.spec.output_channels(node.weights),
                                                 "float32"))
        node.weights["bias"] = (bias + delta).astype("float32")
        return
    shift = Node(graph.unique_name(f"{name}_bias"), "affine", [],
                 weights={"scale": np.ones_like(delta, "float32"),
                          "bias": np.asarray(delta, "float32")}, origin=None)
    graph.insert(shift, name, [graph[consumer]] if consumer else [])
    if consumer is None:
        graph.output = shift.name


def _weight_key(node):
    return node.spec.weight_names[0]
