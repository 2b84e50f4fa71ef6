"""Stage 1, validate: a Keras model as a small graph of convertible operations.

Each Keras layer class has a registered `LayerConverter` that can say why a
given layer cannot be converted (`unsupported_reason`) or turn it into
graph nodes (`convert`). `trace` checks every layer first and raises one
ValueError listing every layer that cannot convert, with its class and why.

Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
    >>> [node.op for node in trace(model)]
    ['input', 'dense', 'relu']
"""

import copy
import dataclasses

import keras
import numpy as np

from bsnn_tf import layers as snn_layers

LINEAR_OPS = {"conv2d", "dense", "affine", "scale", "avgpool", "gap", "flatten", "reshape",
              "zeropad", "add", "concat"}
SPIKING_OPS = {"relu", "sync"}
MERGE_OPS = {"add", "concat"}


@dataclasses.dataclass
class Node:
    """One operation of the graph.

    Attributes:
        name: unique name; also the name of the SNN layer built from it.
        op: operation kind ("input", "conv2d", "relu", ...).
        inputs: names of the nodes it reads.
        config: op settings (strides, padding, lambda, start period, ...).
        weights: numpy arrays (kernel, bias, scale, ...).
        origin: the Keras layer whose output this node's output equals in the
            ANN, when there is one (used to compare SNN and ANN layer by layer).
    """

    name: str
    op: str
    inputs: list
    config: dict = dataclasses.field(default_factory=dict)
    weights: dict = dataclasses.field(default_factory=dict)
    origin: str = None


class Graph:
    """Nodes in topological order, one input and one output."""

    def __init__(self, input_shape):
        self.input_shape = tuple(input_shape)
        self.nodes = {}
        self.output = None
        self.output_start = 0

    def __iter__(self):
        return iter(list(self.nodes.values()))

    def __getitem__(self, name):
        return self.nodes[name]

    def add(self, node):
        if node.name in self.nodes:
            raise ValueError(f"Duplicate node name {node.name!r}.")
        self.nodes[node.name] = node
        return node

    def copy(self):
        return copy.deepcopy(self)

    def consumers(self, name):
        """Nodes that read `name`'s output, in order."""
        return [node for node in self if name in node.inputs]

    def unique_name(self, base):
        name, index = base, 1
        while name in self.nodes:
            name, index = f"{base}_{index}", index + 1
        return name

    def bypass(self, name):
        """Removes single-input node `name`, wiring its consumers to its input."""
        (source,) = self.nodes[name].inputs
        for node in self.consumers(name):
            node.inputs = [source if i == name else i for i in node.inputs]
        if self.output == name:
            self.output = source
        del self.nodes[name]

    def insert(self, node, source, consumers):
        """Adds `node` reading `source` and makes `consumers` read `node` instead."""
        node.inputs = [source]
        self.add(node)
        for consumer in consumers:
            consumer.inputs = [node.name if i == source else i for i in consumer.inputs]
        self.sort()

    def sort(self):
        """Restores topological order after insertions."""
        ordered, seen = {}, set()

        def visit(name):
            if name in seen:
                return
            seen.add(name)
            for source in self.nodes[name].inputs:
                visit(source)
            ordered[name] = self.nodes[name]

        for name in list(self.nodes):
            visit(name)
        self.nodes = ordered

    def spiking_nodes(self):
        return [node for node in self if node.op in SPIKING_OPS]

    def shapes(self):
        """Unit shape (no batch axis) of every node's output."""
        _, tensors = to_keras(self, with_weights=False)
        return {name: tuple(tensor.shape[1:]) for name, tensor in tensors.items()}


# ---------------------------------------------------------------- converters


class LayerConverter:
    """Turns one Keras layer into graph nodes; subclasses register per layer class."""

    def unsupported_reason(self, layer):
        """Why `layer` cannot be converted, or None if it can."""
        return None

    def convert(self, layer, inputs):
        """Returns the list of nodes for `layer`; the last one is its output."""
        raise NotImplementedError


_CONVERTERS = {}


def register(*layer_classes):
    """Class decorator: registers a LayerConverter for Keras layer classes."""

    def decorate(converter_class):
        for layer_class in layer_classes:
            _CONVERTERS[layer_class] = converter_class()
        return converter_class

    return decorate


def converter_for(layer):
    """The converter of `layer`'s nearest registered class, or None.

    A subclass that overrides `call` computes something its base class's
    converter does not know: it gets a converter that refuses it.
    """
    for layer_class in type(layer).__mro__:
        if layer_class in _CONVERTERS:
            if type(layer).call is layer_class.call:
                return _CONVERTERS[layer_class]
            refused = LayerConverter()
            refused.unsupported_reason = lambda _: (
                f"subclass of {layer_class.__name__} that overrides call(); its converter "
                f"would silently convert it as a plain {layer_class.__name__}. Use "
                f"keras.layers.{layer_class.__name__} itself, or register a converter for "
                f"{type(layer).__name__} with bsnn_tf.conversion.register")
            return refused
    return None


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation)) if activation else "linear"


_ACTIVATION_OPS = {"relu": "relu", "linear": None, "softmax": "softmax"}


def _activation_reason(layer):
    name = _activation_name(layer)
    if name not in _ACTIVATION_OPS:
        return (f"activation '{name}' is not ReLU; spiking neurons code ReLU activations only. "
                "Retrain with ReLU (softmax is allowed on the output layer)")
    return None


def _with_activation(layer, node):
    nodes = [node]
    op = _ACTIVATION_OPS[_activation_name(layer)]
    if op:
        nodes.append(Node(f"{layer.name}_{op}", op, [node.name], origin=layer.name))
    else:
        node.origin = layer.name
    return nodes


@register(keras.layers.Conv2D)
class Conv2DConverter(LayerConverter):
    def unsupported_reason(self, layer):
        if layer.data_format != "channels_last":
            return "data_format 'channels_first' is not supported; rebuild the model channels_last"
        if layer.groups != 1:
            return f"grouped convolution (groups={layer.groups}) is not supported"
        return _activation_reason(layer)

    def convert(self, layer, inputs):
        config = {k: layer.get_config()[k] for k in ("filters", "kernel_size", "strides",
                                                   "padding", "dilation_rate")}
        weights = {"kernel": keras.ops.convert_to_numpy(layer.kernel)}
        if layer.use_bias:
            weights["bias"] = keras.ops.convert_to_numpy(layer.bias)
        return _with_activation(layer, Node(layer.name, "conv2d", inputs, config, weights))


@register(keras.layers.Dense)
class DenseConverter(LayerConverter):
    def unsupported_reason(self, layer):
        return _activation_reason(layer)

    def convert(self, layer, inputs):
        weights = {"kernel": keras.ops.convert_to_numpy(layer.kernel)}
        if layer.use_bias:
            weights["bias"] = keras.ops.convert_to_numpy(layer.bias)
        node = Node(layer.name, "dense", inputs, {"units": layer.units}, weights)
        return _with_activation(layer, node)


@register(keras.layers.Activation)
class ActivationConverter(LayerConverter):
    def unsupported_reason(self, layer):
        return _activation_reason(layer)

    def convert(self, layer, inputs):
        op = _ACTIVATION_OPS[_activation_name(layer)]
        return [Node(layer.name, op or "identity", inputs, origin=layer.name)]


@register(keras.layers.ReLU)
class ReLUConverter(LayerConverter):
    def unsupported_reason(self, layer):
        if layer.max_value is not None or layer.negative_slope or layer.threshold:
            return ("only plain ReLU converts (max_value=None, negative_slope=0, threshold=0); "
                    f"got max_value={layer.max_value}, negative_slope={layer.negative_slope}, "
                    f"threshold={layer.threshold}")
        return None

    def convert(self, layer, inputs):
        return [Node(layer.name, "relu", inputs, origin=layer.name)]


@register(keras.layers.Softmax)
class SoftmaxConverter(LayerConverter):
    def convert(self, layer, inputs):
        return [Node(layer.name, "softmax", inputs, origin=layer.name)]


@register(keras.layers.BatchNormalization)
class BatchNormalizationConverter(LayerConverter):
    def unsupported_reason(self, layer):
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            return (f"BatchNormalization over axis {layer.axis}; only the channel (last) axis "
                    "converts")
        return None

    def convert(self, layer, inputs):
        channels = layer.moving_mean.shape[0]
        values = lambda v, default: (keras.ops.convert_to_numpy(v) if v is not None
                                     else np.full(channels, default, "float32"))
        weights = {
            "gamma": values(layer.gamma, 1.0),
            "beta": values(layer.beta, 0.0),
            "mean": keras.ops.convert_to_numpy(layer.moving_mean),
            "variance": keras.ops.convert_to_numpy(layer.moving_variance),
        }
        return [Node(layer.name, "bn", inputs, {"epsilon": layer.epsilon}, weights,
                     origin=layer.name)]


def _pool_config(layer):
    if layer.data_format != "channels_last":
        return None
    return {"pool_size": tuple(layer.pool_size), "strides": tuple(layer.strides),
            "padding": layer.padding}


def _channels_last_reason(layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "data_format 'channels_first' is not supported; rebuild the model channels_last"
    return None


@register(keras.layers.MaxPooling2D)
class MaxPoolingConverter(LayerConverter):
    unsupported_reason = staticmethod(_channels_last_reason)

    def convert(self, layer, inputs):
        return [Node(layer.name, "maxpool", inputs, _pool_config(layer), origin=layer.name)]


@register(keras.layers.AveragePooling2D)
class AveragePoolingConverter(LayerConverter):
    unsupported_reason = staticmethod(_channels_last_reason)

    def convert(self, layer, inputs):
        return [Node(layer.name, "avgpool", inputs, _pool_config(layer), origin=layer.name)]


@register(keras.layers.GlobalAveragePooling2D)
class GlobalAveragePoolingConverter(LayerConverter):
    unsupported_reason = staticmethod(_channels_last_reason)

    def convert(self, layer, inputs):
        return [Node(layer.name, "gap", inputs, {"keepdims": layer.keepdims}, origin=layer.name)]


@register(keras.layers.Flatten)
class FlattenConverter(LayerConverter):
    unsupported_reason = staticmethod(_channels_last_reason)

    def convert(self, layer, inputs):
        return [Node(layer.name, "flatten", inputs, origin=layer.name)]


@register(keras.layers.Reshape)
class ReshapeConverter(LayerConverter):
    def convert(self, layer, inputs):
        config = {"target_shape": tuple(layer.target_shape)}
        return [Node(layer.name, "reshape", inputs, config, origin=layer.name)]


@register(keras.layers.ZeroPadding2D)
class ZeroPaddingConverter(LayerConverter):
    unsupported_reason = staticmethod(_channels_last_reason)

    def convert(self, layer, inputs):
        padding = tuple(tuple(int(p) for p in axis) for axis in layer.padding)
        return [Node(layer.name, "zeropad", inputs, {"padding": padding}, origin=layer.name)]


@register(keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
          keras.layers.GaussianDropout, keras.layers.Identity)
class InferenceIdentityConverter(LayerConverter):
    """Layers that are the identity at inference time: removed."""

    def convert(self, layer, inputs):
        return [Node(layer.name, "identity", inputs, origin=layer.name)]


@register(keras.layers.Add)
class AddConverter(LayerConverter):
    def convert(self, layer, inputs):
        return [Node(layer.name, "add", inputs, origin=layer.name)]


@register(keras.layers.Concatenate)
class ConcatenateConverter(LayerConverter):
    def unsupported_reason(self, layer):
        if layer.axis not in (-1, len(layer.output.shape) - 1):
            return f"Concatenate on axis {layer.axis}; only the channel (last) axis converts"
        return None

    def convert(self, layer, inputs):
        return [Node(layer.name, "concat", inputs, origin=layer.name)]


# ------------------------------------------------------------------- tracing


def trace(model):
    """Validates `model` and returns its graph.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: the model has several inputs or outputs, is not built, or
            has layers that cannot convert (all of them are listed, each with
            its class and the reason).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"Model '{model.name}' has no defined input; build it with keras.Input(...) "
            "or call it on a batch before converting."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; conversion needs exactly one of each."
        )
    problems = list(_unsupported(model))
    if problems:
        lines = "\n".join(f"  - '{name}' ({cls}): {why}" for name, cls, why in problems)
        raise ValueError(f"Model '{model.name}' cannot be converted:\n{lines}")
    graph = Graph(model.inputs[0].shape[1:])
    graph.add(Node("input", "input", []))
    graph.output = _trace_into(graph, model, "input")
    return graph


def _unsupported(model):
    """Yields (layer name, class name, reason) for every layer that cannot convert."""
    for op in _operations(model):
        if isinstance(op, keras.Model):
            yield from _unsupported(op)
            continue
        if isinstance(op, keras.layers.InputLayer):
            continue
        if not isinstance(op, keras.layers.Layer):
            yield (op.name, type(op).__name__,
                   "a keras.ops operation, not a layer; use the equivalent keras.layers layer "
                   "(e.g. keras.layers.Add instead of `a + b`)")
            continue
        converter = converter_for(op)
        if converter is None:
            yield (op.name, type(op).__name__,
                   "no converter is registered for this layer class; supported: "
                   + ", ".join(sorted(c.__name__ for c in _CONVERTERS)))
            continue
        reason = converter.unsupported_reason(op)
        if reason:
            yield op.name, type(op).__name__, reason
        elif len(_own_nodes(model, op)) > 1:
            yield op.name, type(op).__name__, "the layer is shared (called more than once)"


def _operations(model):
    return model.layers if isinstance(model, keras.Sequential) else model.operations


def _own_nodes(model, op):
    if isinstance(model, keras.Sequential):
        return [None]
    nodes = [node for depth_nodes in model._nodes_by_depth.values() for node in depth_nodes]
    return [node for node in nodes if node.operation is op]


def _trace_into(graph, model, input_name):
    """Adds `model`'s layers to `graph`, fed by node `input_name`; returns the output node name."""
    if isinstance(model, keras.Sequential):
        current = input_name
        for layer in model.layers:
            current = _add_layer(graph, layer, [current])
        return current
    produced = {}
    for op in model.operations:
        (node,) = _own_nodes(model, op)
        if isinstance(op, keras.layers.InputLayer):
            produced[id(node.output_tensors[0])] = input_name
            continue
        inputs = [produced[id(t)] for t in node.input_tensors]
        produced[id(node.output_tensors[0])] = _add_layer(graph, op, inputs)
    return produced[id(model.outputs[0])]


def _add_layer(graph, layer, inputs):
    if isinstance(layer, keras.Model):
        return _trace_into(graph, layer, inputs[0])
    if isinstance(layer, keras.layers.InputLayer):
        return inputs[0]
    nodes = converter_for(layer).convert(layer, inputs)
    renamed = {}
    for node in nodes:
        node.inputs = [renamed.get(name, name) for name in node.inputs]
        renamed[node.name] = graph.unique_name(node.name)
        node.name = renamed[node.name]
        graph.add(node)
    return nodes[-1].name


# ------------------------------------------------------- graph -> Keras (ANN)


def make_layer(node, use_bias=True, dtype=None):
    """A Keras layer computing linear node `node` (weights not set yet).

    `use_bias=False` builds the bias-free synapse of an SNN (neurons own the bias).
    """
    config, has_bias = node.config, use_bias and "bias" in node.weights
    kwargs = {"name": node.name, "dtype": dtype}
    # The weights are always set afterwards: zeros skip compiling random initialisers.
    initializers = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
    if node.op == "conv2d":
        return keras.layers.Conv2D(**config, use_bias=has_bias, **initializers, **kwargs)
    if node.op == "dense":
        return keras.layers.Dense(config["units"], use_bias=has_bias, **initializers, **kwargs)
    if node.op in ("affine", "scale"):
        return snn_layers.ChannelAffine(node.weights["scale"].shape,
                                        use_shift=use_bias and "bias" in node.weights, **kwargs)
    if node.op == "avgpool":
        return keras.layers.AveragePooling2D(**config, **kwargs)
    if node.op == "gap":
        return keras.layers.GlobalAveragePooling2D(keepdims=config["keepdims"], **kwargs)
    if node.op == "flatten":
        return keras.layers.Flatten(**kwargs)
    if node.op == "reshape":
        return keras.layers.Reshape(config["target_shape"], **kwargs)
    if node.op == "zeropad":
        return keras.layers.ZeroPadding2D(config["padding"], **kwargs)
    if node.op == "add":
        return keras.layers.Add(**kwargs)
    if node.op == "concat":
        return keras.layers.Concatenate(axis=-1, **kwargs)
    raise ValueError(f"Node '{node.name}' ({node.op}) is not a linear operation.")


def set_weights(layer, node, use_bias=True):
    """Copies `node`'s weights into `layer`, built by `make_layer`."""
    if node.op in ("conv2d", "dense"):
        values = [node.weights["kernel"]]
        if use_bias and "bias" in node.weights:
            values.append(node.weights["bias"])
    elif node.op in ("affine", "scale"):
        values = [node.weights["scale"]]
        if use_bias and "bias" in node.weights:
            values.append(node.weights["bias"])
    else:
        return
    layer.set_weights([np.asarray(v, layer.variables[0].dtype) for v in values])


def _ann_layer(node):
    """The ANN-side Keras layer of a non-linear node."""
    name = node.name
    if node.op in SPIKING_OPS:
        return keras.layers.ReLU(name=name)
    if node.op == "maxpool":
        return keras.layers.MaxPooling2D(**node.config, name=name)
    if node.op == "softmax":
        return keras.layers.Softmax(name=name)
    if node.op == "identity":
        return keras.layers.Identity(name=name)
    if node.op == "bn":
        return keras.layers.BatchNormalization(epsilon=node.config["epsilon"], name=name)
    return make_layer(node)


def to_keras(graph, outputs=None, with_weights=True, spiking_layer=None, input_layer=None):
    """The ANN that `graph` computes, as a Keras Functional model.

    Spiking nodes become ReLU, the max gate MaxPooling2D. Used to calibrate
    (outputs at every spiking node) and to check that each conversion stage
    leaves the ANN's function unchanged.

    Args:
        spiking_layer: node -> Keras layer for the spiking nodes instead of ReLU
            (calibration's quantised network).
        input_layer: () -> a Keras layer applied to the input, or None.

    Returns:
        (model, {node name: KerasTensor}).
    """
    model_input = keras.Input(graph.input_shape, name="input")
    tensors = {"input": input_layer()(model_input) if input_layer else model_input}
    built = []
    for node in graph:
        if node.op == "input":
            continue
        layer = (spiking_layer(node) if spiking_layer and node.op in SPIKING_OPS
                 else _ann_layer(node))
        inputs = [tensors[name] for name in node.inputs]
        tensors[node.name] = layer(inputs if node.op in MERGE_OPS else inputs[0])
        built.append((layer, node))
    if with_weights:
        for layer, node in built:
            if node.op == "bn":
                w = node.weights
                layer.set_weights([w["gamma"], w["beta"], w["mean"], w["variance"]])
            else:
                set_weights(layer, node)
    outputs = [graph.output] if outputs is None else list(outputs)
    model = keras.Model(model_input, [tensors[name] for name in outputs])
    return model, tensors
