"""The converters of the weightless Keras layers: pooling, reshaping, padding, merges.

Each becomes one graph node whose settings are read off the layer
(`ParameterFreeConverter`); `register_parameter_free` registers its op record
and its converter together. Global max pooling is the spiking max gate over
the whole image. Layers that are identities at inference time, and the
output's softmax, become nodes that the fold stage removes.

Example:
    >>> [node.op for node in ParameterFreeConverter("flatten").convert(
    ...     keras.layers.Flatten(), ["input"])]
    ['flatten']
"""

import keras

from bsnn_tf import layers as snn_layers
from bsnn_tf.conversion.converters import (LayerConverter, add_converter, channels_last_reason,
                                           register)
from bsnn_tf.conversion.graph import Node
from bsnn_tf.conversion.ops import (CHANNEL, FOLDED, GATE, RESHAPE, STACK, SUM, SYNAPSE, Op,
                                    register_op)


class ParameterFreeConverter(LayerConverter):
    """A layer that becomes one node of kind `op`, with `config(layer)` as its settings.

    Refuses channels_first layers, and whatever `reason(layer)` explains.
    """

    def __init__(self, op, config=None, reason=None):
        self.op, self.config, self.reason = op, config, reason

    def unsupported_reason(self, layer):
        return channels_last_reason(layer) or (self.reason(layer) if self.reason else None)

    def convert(self, layer, inputs):
        config = self.config(layer) if self.config else {}
        return [Node(layer.name, self.op, inputs, config, origin=layer.name)]


def register_parameter_free(op, keras_classes, config=None, reason=None, role=SYNAPSE,
                            scaling=CHANNEL, layer_arguments=None, **op_fields):
    """Registers a weightless op and its converter in one go.

    The node's settings are `config(layer)`; the Keras layer of the node is
    `keras_classes[0](**settings, **layer_arguments)`.
    """
    keras_class, layer_arguments = keras_classes[0], layer_arguments or {}

    def layer(node, use_bias, **kwargs):
        return keras_class(**node.config, **layer_arguments, **kwargs)

    register_op(Op(op, role, scaling, layer=layer,
                   layer_class=keras_class if role == SYNAPSE else None, **op_fields))
    add_converter(ParameterFreeConverter(op, config, reason), keras_classes)


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
        return channels_last_reason(layer)

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
