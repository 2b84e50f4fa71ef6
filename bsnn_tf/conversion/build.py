"""The build stage: the prepared graph as a SpikingNetwork (a keras.Model).

Linear nodes become bias-free Keras synapses; ReLU nodes become neurons of
the chosen method; max-pool nodes become spiking max gates. Biases move to
the neurons: a neuron's bias is the constant part of its input, what its
synapses deliver when every spiking source is silent and the input is zero.
"""

import dataclasses

import numpy as np
from keras import ops

from bsnn_tf import coding, layers
from bsnn_tf.conversion import ops as graph_ops
from bsnn_tf.conversion.keras_graph import make_layer, set_weights
from bsnn_tf.network import SpikingNetwork


@dataclasses.dataclass(frozen=True)
class LayerContext:
    """What an op's `snn_layer(node, context)` needs to make its neuron or gate: the
    conversion's method record, K, membrane at rest and dtype, and the node's bias."""

    method: object
    phases: int
    initial_membrane: float
    dtype: str
    bias: object = None


def build(graph, config, input_scale=1.0, name=None, calibration_record=None,
          calibration_range=None):
    """Builds the SNN of a normalised, synchronized graph as `config` (a
    `ConversionConfig`) says: its method, K, membrane, readout delay and dtype.
    `calibration_record`: what the finetune stage did, if it ran (kept as
    `snn.calibration_record`, not saved)."""
    method, phases, dtype = config.method, config.phases, config.dtype
    biases = {name: _compact(offset) for name, offset in _bias_offsets(graph).items()}
    snn_layers = [coding.PhaseEncoder(phases, config.input_encoding, input_scale, name="input",
                                      dtype=dtype)]
    for node in graph:
        if node.spec.role != graph_ops.INPUT:
            bias = biases[node.inputs[0]] if node.spec.owns_bias else None
            snn_layers.append(_layer_for(node, config, bias))
    readout = layers.Readout(
        phases=phases if method.readout_per_period else 1,
        start_period=(graph.output_start if method.readout_waits_for_output else 0)
        + config.readout_delay,
        bias_shape=biases[graph.output].shape, name="readout", dtype=dtype,
    )
    snn = SpikingNetwork(
        snn_layers + [readout],
        [[node.name, node.inputs] for node in graph] + [["readout", [graph.output]]],
        method=method.name, timesteps=config.timesteps, name=name,
        ann_layers={n.name: n.origin for n in graph.spiking_nodes() if n.origin},
        scales={n.name: n.config["lambda"] for n in graph.spiking_nodes()},
        calibration_range=calibration_range, dtype=dtype,
    )
    snn.build((None,) + graph.input_shape)
    for node in graph:
        if node.spec.role == graph_ops.SYNAPSE:
            set_weights(snn.get_layer(node.name), node, use_bias=False)
        elif node.spec.owns_bias:
            snn.get_layer(node.name).bias.assign(biases[node.inputs[0]])
    readout.bias.assign(biases[graph.output])
    snn.calibration_record = calibration_record
    return snn


def _layer_for(node, config, bias):
    """The SNN layer of `node`; its op's `snn_layer(node, context)` makes neurons and gates."""
    if node.spec.role == graph_ops.SYNAPSE:
        return make_layer(node, use_bias=False, dtype=config.dtype)
    if node.spec.snn_layer is None:
        raise ValueError(f"Node '{node.name}' ({node.op}) has no SNN layer.")
    context = LayerContext(method=config.method, phases=config.phases, bias=bias,
                           initial_membrane=config.initial_membrane, dtype=config.dtype)
    return node.spec.snn_layer(node, context)


def _bias_offsets(graph):
    """Per node, its output when every spiking source is silent and the input is zero."""
    shapes = graph.shapes()
    offsets = {}
    for node in graph:
        if node.spec.role != graph_ops.SYNAPSE:
            offsets[node.name] = np.zeros((1,) + shapes[node.name], "float32")
            continue
        layer = make_layer(node)
        inputs = [ops.convert_to_tensor(offsets[i]) for i in node.inputs]
        layer_input = inputs if len(inputs) > 1 else inputs[0]
        shapes_in = [tuple(i.shape) for i in inputs]
        layer.build(shapes_in if len(inputs) > 1 else shapes_in[0])
        set_weights(layer, node)
        offsets[node.name] = ops.convert_to_numpy(layer(layer_input))
    return offsets


def _compact(offset):
    """A (1, ...) offset without its batch axis, per channel when it does not vary by position."""
    value = offset[0]
    if value.ndim == 0:
        return value
    per_channel = value.reshape(-1, value.shape[-1])
    return per_channel[0].copy() if np.all(per_channel == per_channel[0]) else value
