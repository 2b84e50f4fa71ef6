"""The correct stage: bias correction ("light") and weight reconstruction ("advanced").

On the normalised graph, spiking layers are taken one by one in topological
order, then the output: the network is run quantised as calibrated so far
(`MeanOutput` in place of each spiking layer), and the layer's pre-activation
is fitted to the normalised ANN's, by a per-channel bias shift (SNN
Calibration, Li et al. 2021) and, for "advanced", first by a bounded number of
Adam steps on the weights of the linear cone between it and the spiking
layers it reads (straight-through rounding).
"""

import keras
import numpy as np
from keras import ops

from bsnn_tf import console
from bsnn_tf.conversion import ops as graph_ops
from bsnn_tf.conversion.graph import Node
from bsnn_tf.conversion.keras_graph import make_layer, set_weights, to_keras
from bsnn_tf.conversion.statistics import as_columns, as_list

# Weight reconstruction ("advanced"): Adam steps per layer, batch size, step size.
RECONSTRUCTION_STEPS = 256
RECONSTRUCTION_BATCH = 32
RECONSTRUCTION_LEARNING_RATE = 1e-5
# Bias correction: fractions of the mean pre-activation error tried per channel.
BIAS_SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def correct(graph, data, config, input_code=None, input_scale=1.0, batch_size=64,
            verbose="auto"):
    """Bias correction ("light") and weight reconstruction ("advanced") of a normalised graph.

    Spiking layers are taken one by one in topological order, then the output:
    the network is run quantised as calibrated so far, and the layer's
    pre-activation is fitted to the normalised ANN's on `data`.

    Args:
        graph: the normalised graph (after the normalize stage); a corrected copy is returned.
        config: the conversion's `ConversionConfig`: its calibration mode, "light" or
            "advanced" (any other returns `graph` unchanged), and its neurons'
            mean output f (`config.quantizer()`).
        input_code: x -> what the input layer sends, in the graph's input scale
            (default: x / input_scale, real-valued input).
        input_scale: lambda_0, the scale of the graph's input.
    """
    mode = config.calibration
    if mode not in ("light", "advanced"):
        return graph
    quantizer = config.quantizer()
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
        z, q = (ops.convert_to_tensor(as_columns(m.predict_on_batch(batch), True))
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
    feeds = as_list(quantized_model(graph, sources, quantizer, inputs.quantized).predict(
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
