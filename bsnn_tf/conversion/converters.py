"""Stage 1, validate: Keras layers to graph nodes, one converter and one op record per kind.

Each Keras layer class has a registered `LayerConverter` that can say why a
given layer cannot be converted (`unsupported_reason`) or turn it into
graph nodes (`convert`). Beside each converter stands the `ops.Op` record of
the nodes it makes: how the stages treat them and which Keras layer computes
them. Supporting a new layer type means adding both here (docs/DESIGN.md,
"Adding a layer type"). `trace` checks every layer first and raises one
ValueError listing every layer that cannot convert, with its class and why.

Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
    >>> [node.op for node in trace(model)]
    ['input', 'dense', 'relu']
"""

import dataclasses

import keras
import numpy as np

from bsnn_tf import layers as snn_layers
from bsnn_tf.quantized import QuantizedReLU
from bsnn_tf.conversion import ops
from bsnn_tf.conversion.graph import Graph, Node
from bsnn_tf.conversion.ops import (CHANNEL, FOLDED, GATE, INPUT, NEURON, RESHAPE, STACK, SUM,
                                    SYNAPSE, WEIGHTS, Op, register_op)
from bsnn_tf.validation import check_finite_weights

# The weights are always set after building: zeros skip compiling random initialisers.
_ZEROS = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}


def _weights(layer):
    return [np.asarray(w, "float64") for w in layer.get_weights()]


# ---------------------------------------------------------------- nodes stages insert

register_op(Op("input", INPUT))
register_op(Op(  # a synchronous layer (synchronize.py); the identity in the ANN
    "sync", NEURON, layer=lambda node, use_bias, **kwargs: keras.layers.ReLU(**kwargs),
    snn_layer=lambda node, context: snn_layers.SynchronousLayer(
        context.phases, node.config.get("start_period", 0),
        initial_membrane=context.initial_membrane, name=node.name, dtype=context.dtype),
))
register_op(Op(
    "affine", SYNAPSE, WEIGHTS, weight_names=("scale", "bias"), calibrated=True,  # unfolded bn
    layer=lambda node, use_bias, **kwargs: snn_layers.ChannelAffine(
        node.weights["scale"].shape, use_shift=use_bias, **kwargs),
    layer_class=snn_layers.ChannelAffine, rescale=ops.rescale_channels,
    output_channels=ops.scale_channels,
    macs=lambda layer, in_shape, out_shape: int(np.prod(out_shape)),
    reference=lambda layer: {"op": "scale", "scale": _weights(layer)[0]},
))
# A rescaling synapse (normalize.py): an affine map without shift.
register_op(dataclasses.replace(ops.get("affine"), name="scale", calibrated=False))

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


# Activation name: (op, config); a ReLU clipped at max_value is a ReLU whose
# lambda is at most max_value: the neuron's top level is its clip.
_ACTIVATION_OPS = {"relu": ("relu", {}), "relu6": ("relu", {"max_value": 6.0}),
                   "linear": (None, {}), "softmax": ("softmax", {})}


def _activation_reason(layer):
    name = _activation_name(layer)
    if name not in _ACTIVATION_OPS:
        return (f"activation '{name}' is not ReLU; spiking neurons code ReLU activations only. "
                "Retrain with ReLU or ReLU6 (softmax is allowed on the output layer)")
    return None


def _with_activation(layer, node):
    nodes = [node]
    op, config = _ACTIVATION_OPS[_activation_name(layer)]
    if op:
        nodes.append(Node(f"{layer.name}_{op}", op, [node.name], dict(config),
                          origin=layer.name))
    else:
        node.origin = layer.name
    return nodes


def _kernel_nodes(layer, op, inputs, config_keys):
    """The `op` node of a layer with a kernel and an optional bias, then its activation's."""
    config = {k: layer.get_config()[k] for k in config_keys}
    weights = {"kernel": keras.ops.convert_to_numpy(layer.kernel)}
    if layer.use_bias:
        weights["bias"] = keras.ops.convert_to_numpy(layer.bias)
    return _with_activation(layer, Node(layer.name, op, inputs, config, weights))


register_op(Op(
    "conv2d", SYNAPSE, WEIGHTS, weight_names=("kernel", "bias"), absorbs_batch_norm=True,
    calibrated=True,
    layer=lambda node, use_bias, **kwargs: keras.layers.Conv2D(
        **node.config, use_bias=use_bias, **_ZEROS, **kwargs),
    layer_class=keras.layers.Conv2D, rescale=ops.rescale_kernel,
    output_channels=ops.kernel_channels,
    macs=lambda layer, in_shape, out_shape: (
        int(np.prod(out_shape)) * int(np.prod(layer.kernel_size)) * in_shape[-1]),
    reference=lambda layer: {"op": "conv2d", "kernel": _weights(layer)[0],
                             "strides": layer.strides, "padding": layer.padding},
))


@register(keras.layers.Conv2D)
class Conv2DConverter(LayerConverter):
    def unsupported_reason(self, layer):
        if layer.data_format != "channels_last":
            return "data_format 'channels_first' is not supported; rebuild the model channels_last"
        if layer.groups != 1:
            return f"grouped convolution (groups={layer.groups}) is not supported"
        return _activation_reason(layer)

    def convert(self, layer, inputs):
        return _kernel_nodes(layer, "conv2d", inputs, ("filters", "kernel_size", "strides",
                                                       "padding", "dilation_rate"))


register_op(Op(
    "depthwise", SYNAPSE, WEIGHTS, weight_names=("kernel", "bias"), absorbs_batch_norm=True,
    calibrated=True,
    layer=lambda node, use_bias, **kwargs: keras.layers.DepthwiseConv2D(
        **node.config, use_bias=use_bias, depthwise_initializer="zeros",
        bias_initializer="zeros", **kwargs),
    layer_class=keras.layers.DepthwiseConv2D, rescale=ops.rescale_depthwise,
    output_channels=ops.depthwise_channels,
    # Each output reads one input channel through a kh x kw window.
    macs=lambda layer, in_shape, out_shape: (
        int(np.prod(out_shape)) * int(np.prod(layer.kernel_size))),
    reference=lambda layer: {"op": "depthwise", "kernel": _weights(layer)[0],
                             "strides": layer.strides, "padding": layer.padding},
))


@register(keras.layers.DepthwiseConv2D)
class DepthwiseConv2DConverter(LayerConverter):
    def unsupported_reason(self, layer):
        return _channels_last_reason(layer) or _activation_reason(layer)

    def convert(self, layer, inputs):
        return _kernel_nodes(layer, "depthwise", inputs, ("kernel_size", "strides", "padding",
                                                          "depth_multiplier", "dilation_rate"))


@register(keras.layers.SeparableConv2D)
class SeparableConv2DConverter(LayerConverter):
    """A depthwise node, then a 1 x 1 conv2d node (which gets the bias and activation)."""

    def unsupported_reason(self, layer):
        return _channels_last_reason(layer) or _activation_reason(layer)

    def convert(self, layer, inputs):
        config = layer.get_config()
        depthwise = Node(f"{layer.name}_depthwise", "depthwise", inputs,
                         {k: config[k] for k in ("kernel_size", "strides", "padding",
                                                 "depth_multiplier", "dilation_rate")},
                         {"kernel": keras.ops.convert_to_numpy(layer.depthwise_kernel)})
        pointwise_config = {"filters": config["filters"], "kernel_size": (1, 1),
                            "strides": (1, 1), "padding": "valid", "dilation_rate": (1, 1)}
        weights = {"kernel": keras.ops.convert_to_numpy(layer.pointwise_kernel)}
        if layer.use_bias:
            weights["bias"] = keras.ops.convert_to_numpy(layer.bias)
        pointwise = Node(layer.name, "conv2d", [depthwise.name], pointwise_config, weights)
        return [depthwise, *_with_activation(layer, pointwise)]


register_op(Op(
    "dense", SYNAPSE, WEIGHTS, weight_names=("kernel", "bias"), absorbs_batch_norm=True,
    calibrated=True,
    layer=lambda node, use_bias, **kwargs: keras.layers.Dense(
        node.config["units"], use_bias=use_bias, **_ZEROS, **kwargs),
    layer_class=keras.layers.Dense, rescale=ops.rescale_kernel,
    output_channels=ops.kernel_channels,
    macs=lambda layer, in_shape, out_shape: int(np.prod(in_shape)) * layer.units,
    reference=lambda layer: {"op": "dense", "kernel": _weights(layer)[0]},
))


@register(keras.layers.Dense)
class DenseConverter(LayerConverter):
    def unsupported_reason(self, layer):
        return _activation_reason(layer)

    def convert(self, layer, inputs):
        return _kernel_nodes(layer, "dense", inputs, ("units",))


register_op(Op(
    "relu", NEURON, owns_bias=True,
    # In the ANN (calibration statistics see the clip, so lambda <= max_value).
    layer=lambda node, use_bias, **kwargs: keras.layers.ReLU(
        max_value=node.config.get("max_value"), **kwargs),
    snn_layer=lambda node, context: context.method.neuron(
        context.phases, node.config.get("start_period", 0), bias_shape=context.bias.shape,
        initial_membrane=context.initial_membrane, name=node.name, dtype=context.dtype),
))


@register(keras.layers.Activation)
class ActivationConverter(LayerConverter):
    def unsupported_reason(self, layer):
        return _activation_reason(layer)

    def convert(self, layer, inputs):
        op, config = _ACTIVATION_OPS[_activation_name(layer)]
        return [Node(layer.name, op or "identity", inputs, dict(config), origin=layer.name)]


@register(keras.layers.ReLU)
class ReLUConverter(LayerConverter):
    def unsupported_reason(self, layer):
        if layer.negative_slope or layer.threshold:
            return ("only ReLU with negative_slope=0 and threshold=0 converts (max_value may "
                    f"be set); got negative_slope={layer.negative_slope}, "
                    f"threshold={layer.threshold}")
        if layer.max_value is not None and not layer.max_value > 0:
            return f"max_value={layer.max_value}: a ReLU clipped at or below 0 is constant"
        return None

    def convert(self, layer, inputs):
        config = {} if layer.max_value is None else {"max_value": float(layer.max_value)}
        return [Node(layer.name, "relu", inputs, config, origin=layer.name)]


@register(QuantizedReLU)
class QuantizedReLUConverter(LayerConverter):
    """A ReLU trained with the quantiser in the loop: its lambda is the one it learned
    (calibration keeps it), its K and membrane at rest are checked against the conversion's."""

    def convert(self, layer, inputs):
        config = {"threshold": keras.ops.convert_to_numpy(layer.threshold),
                  "trained_phases": layer.phases,
                  "trained_membrane": layer.initial_membrane}
        if layer.max_value is not None:
            config["max_value"] = layer.max_value
        return [Node(layer.name, "relu", inputs, config, origin=layer.name)]


register_op(Op(
    "bn", FOLDED, weight_names=("gamma", "beta", "mean", "variance"),
    layer=lambda node, use_bias, **kwargs: keras.layers.BatchNormalization(
        epsilon=node.config["epsilon"], **kwargs),
))


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


def _channels_last_reason(layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "data_format 'channels_first' is not supported; rebuild the model channels_last"
    return None


class ParameterFreeConverter(LayerConverter):
    """A layer that becomes one node of kind `op`, with `config(layer)` as its settings.

    Refuses channels_first layers, and whatever `reason(layer)` explains.
    """

    def __init__(self, op, config=None, reason=None):
        self.op, self.config, self.reason = op, config, reason

    def unsupported_reason(self, layer):
        return _channels_last_reason(layer) or (self.reason(layer) if self.reason else None)

    def convert(self, layer, inputs):
        config = self.config(layer) if self.config else {}
        return [Node(layer.name, self.op, inputs, config, origin=layer.name)]


def register_parameter_free(op, keras_classes, config=None, reason=None, role=SYNAPSE,
                            scaling=CHANNEL, layer_arguments=None, **op_fields):
    """Registers a weightless op and its converter in one go.

    The node's settings are `config(layer)`; the Keras layer of the node is
    `keras_classes[0](**settings, **layer_arguments)`, and the reference op
    reads the same settings.
    """
    keras_class, layer_arguments = keras_classes[0], layer_arguments or {}

    def layer(node, use_bias, **kwargs):
        return keras_class(**node.config, **layer_arguments, **kwargs)

    synapse = role == SYNAPSE
    register_op(Op(op, role, scaling, layer=layer, layer_class=keras_class if synapse else None,
                   reference=(lambda lay: {"op": op, **(config(lay) if config else {})})
                   if synapse else None, **op_fields))
    converter = ParameterFreeConverter(op, config, reason)
    for layer_class in keras_classes:
        _CONVERTERS[layer_class] = converter


def _pool_config(layer):
    return {"pool_size": tuple(layer.pool_size), "strides": tuple(layer.strides),
            "padding": layer.padding}


def _pairs(values):
    """((top, bottom), (left, right)) as plain ints."""
    return tuple(tuple(int(v) for v in axis) for axis in values)


register_parameter_free(
    "maxpool", [keras.layers.MaxPooling2D], _pool_config, role=GATE,
    snn_layer=lambda node, context: snn_layers.SpikingMaxPool(
        **node.config, per_period=context.method.max_pool_per_period, phases=context.phases,
        name=node.name, dtype=context.dtype))
register_parameter_free("avgpool", [keras.layers.AveragePooling2D], _pool_config)


@register(keras.layers.GlobalMaxPooling2D)
class GlobalMaxPoolingConverter(LayerConverter):
    """Global max pooling is the spiking max gate ("maxpool") with one window, the whole
    image; then a flatten unless `keepdims`."""

    def unsupported_reason(self, layer):
        return _channels_last_reason(layer)

    def convert(self, layer, inputs):
        size = tuple(int(d) for d in layer.input.shape[1:3])
        window = {"pool_size": size, "strides": size, "padding": "valid"}
        if layer.keepdims:
            return [Node(layer.name, "maxpool", inputs, window, origin=layer.name)]
        gate = Node(f"{layer.name}_gate", "maxpool", inputs, window)
        return [gate, Node(layer.name, "flatten", [gate.name], origin=layer.name)]
register_parameter_free("gap", [keras.layers.GlobalAveragePooling2D],
                        lambda layer: {"keepdims": layer.keepdims})
register_parameter_free("flatten", [keras.layers.Flatten], scaling=RESHAPE)
register_parameter_free("reshape", [keras.layers.Reshape],
                        lambda layer: {"target_shape": tuple(layer.target_shape)},
                        scaling=RESHAPE)
register_parameter_free("zeropad", [keras.layers.ZeroPadding2D],
                        lambda layer: {"padding": _pairs(layer.padding)})
register_parameter_free("crop", [keras.layers.Cropping2D],
                        lambda layer: {"cropping": _pairs(layer.cropping)})
register_parameter_free(
    "upsample", [keras.layers.UpSampling2D], lambda layer: {"size": tuple(layer.size)},
    reason=lambda layer: None if layer.interpolation == "nearest" else (
        f"interpolation '{layer.interpolation}' mixes neighbouring spikes; only 'nearest' "
        "(each unit repeated) converts"))
register_parameter_free("add", [keras.layers.Add], scaling=SUM, merge=True)
register_parameter_free(
    "concat", [keras.layers.Concatenate], scaling=STACK, merge=True,
    layer_arguments={"axis": -1},
    reason=lambda layer: None if layer.axis in (-1, len(layer.output.shape) - 1) else (
        f"Concatenate on axis {layer.axis}; only the channel (last) axis converts"))
# Removed by fold: identities at inference time, and the output's softmax.
register_parameter_free("identity", [keras.layers.Identity, keras.layers.Dropout,
                                     keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
                                     keras.layers.GaussianDropout], role=FOLDED, scaling=None)
register_parameter_free("softmax", [keras.layers.Softmax], role=FOLDED, scaling=None)


# ------------------------------------------------------------------- tracing


def trace(model):
    """Validates `model` and returns its graph.

    A subclassed keras.Model that has been built (called on a batch) is
    traced as the Functional model of its `call` on a symbolic input
    (`as_functional`).

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: the model has several inputs or outputs, is not built, or
            has layers that cannot convert (all of them are listed, each with
            its class and the reason).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    if hasattr(model, "ann_layers"):  # a SpikingNetwork (the network imports conversion)
        raise TypeError(f"Model '{model.name}' is a SpikingNetwork, converted already "
                        f"(method={model.method!r}); convert the ANN it came from instead.")
    model = as_functional(model)
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
    check_finite_weights(model)
    graph = Graph(model.inputs[0].shape[1:])
    graph.add(Node("input", "input", []))
    graph.output = _trace_into(graph, model, "input")
    return graph


def as_functional(model):
    """`model`, or for a built subclassed keras.Model (no `inputs`) the Functional model
    of its `call` on a `keras.Input` of the shape it was built with.

    The Functional model shares the subclass's layers and weights, so it
    computes the same as long as `call` is a graph of layers (Python control
    flow on the input's values cannot be traced).
    """
    if getattr(model, "inputs", None) or not model.built:
        return model
    shapes = list((getattr(model, "_build_shapes_dict", None) or {}).values())
    if len(shapes) != 1 or not isinstance(shapes[0], (tuple, list)) or not shapes[0]:
        raise ValueError(
            f"Model '{model.name}' is a subclassed keras.Model built on {shapes or 'no'} "
            "input shapes; conversion needs one image input. Rebuild it as a Sequential "
            "or Functional model with keras.Input(...).")
    inputs = keras.Input(tuple(shapes[0])[1:], name="input")
    try:
        outputs = model.call(inputs)
    except Exception as error:  # whatever the user's call() raises on a symbolic input
        raise ValueError(
            f"Model '{model.name}' is a subclassed keras.Model whose call() cannot be traced "
            f"on a symbolic input ({type(error).__name__}: {error}). Rebuild it as a "
            "Sequential or Functional model with keras.Input(...).") from error
    return keras.Model(inputs, outputs, name=model.name)


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


