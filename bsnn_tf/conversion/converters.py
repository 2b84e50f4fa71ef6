"""Keras layers to graph nodes: one converter and one op record per kind of layer.

Each Keras layer class has a registered `LayerConverter` that can say why a
given layer cannot be converted (`unsupported_reason`) or turn it into
graph nodes (`convert`). Beside each converter stands the `ops.Op` record of
the nodes it makes: how the stages treat them and which Keras layer computes
them. Supporting a new layer type means adding both here (docs/DESIGN.md,
"Adding a layer type"). This module holds the registry and the layers with
weights or activations; the weightless layers' converters are in
`weightless.py`. The trace stage (`trace.py`) asks `converter_for` each layer.

Example:
    >>> layer = keras.layers.ReLU(max_value=6.0)
    >>> [(node.op, node.config) for node in converter_for(layer).convert(layer, ["input"])]
    [('relu', {'max_value': 6.0})]
"""

import dataclasses

import keras
import numpy as np

from bsnn_tf import layers as snn_layers
from bsnn_tf.quantized import QuantizedReLU
from bsnn_tf.conversion import ops
from bsnn_tf.conversion.graph import Node
from bsnn_tf.conversion.ops import FOLDED, INPUT, NEURON, SYNAPSE, WEIGHTS, Op, register_op

# The weights are always set after building: zeros skip compiling random initialisers.
_ZEROS = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}


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
        add_converter(converter_class(), layer_classes)
        return converter_class

    return decorate


def add_converter(converter, layer_classes):
    """Registers the instance `converter` for each of `layer_classes`."""
    for layer_class in layer_classes:
        _CONVERTERS[layer_class] = converter


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


def supported_class_names():
    """The names of the Keras layer classes with a registered converter, sorted."""
    return sorted(c.__name__ for c in _CONVERTERS)


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
))


@register(keras.layers.DepthwiseConv2D)
class DepthwiseConv2DConverter(LayerConverter):
    def unsupported_reason(self, layer):
        return channels_last_reason(layer) or _activation_reason(layer)

    def convert(self, layer, inputs):
        return _kernel_nodes(layer, "depthwise", inputs, ("kernel_size", "strides", "padding",
                                                          "depth_multiplier", "dilation_rate"))


@register(keras.layers.SeparableConv2D)
class SeparableConv2DConverter(LayerConverter):
    """A depthwise node, then a 1 x 1 conv2d node (which gets the bias and activation)."""

    def unsupported_reason(self, layer):
        return channels_last_reason(layer) or _activation_reason(layer)

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


def channels_last_reason(layer):
    """Why a channels_first layer cannot convert (None for channels_last)."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "data_format 'channels_first' is not supported; rebuild the model channels_last"
    return None
