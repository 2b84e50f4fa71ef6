"""The op table: one `Op` record per kind of graph node, the one place each stage asks.

A graph node (`graph.Node`) names its kind in `node.op`; `node.spec` is that
kind's `Op`. Tracing, folding, calibration, normalisation, synchronization,
building and the synaptic-operation count read what they need from it, so
that no stage tests op names. The records of the Keras layers' ops are
registered beside their converters (`converters.py`); this module holds the
record, the table and the weight arithmetic that several ops share.

Example:
    >>> from bsnn_tf.conversion import ops
    >>> spec = ops.get("conv2d")
    >>> spec.role.value, spec.weight_names
    ('synapse', ('kernel', 'bias'))
"""

import dataclasses

import numpy as np

from bsnn_tf.roles import Role

# Roles (`bsnn_tf.roles`): what a node becomes in the SNN.
INPUT, SYNAPSE, NEURON, GATE, FOLDED = (Role.INPUT, Role.SYNAPSE, Role.NEURON, Role.GATE,
                                        Role.FOLDED)

# How the scale of a signal (normalize.py) passes an op.
WEIGHTS = "weights"    # the op's weights convert the input scale to its target
CHANNEL = "channel"    # per-channel scale passes unchanged
RESHAPE = "reshape"    # the scale is rearranged with the values
SUM = "sum"            # every input must carry the same scale
STACK = "stack"        # channel-concatenation of the inputs' scales


@dataclasses.dataclass(frozen=True)
class Op:
    """How one kind of graph node goes through the conversion stages.

    Attributes:
        name: the `node.op` string.
        role: one of INPUT, SYNAPSE, NEURON, GATE, FOLDED.
        scaling: how normalisation treats it (WEIGHTS, CHANNEL, RESHAPE, SUM,
            STACK; `None` for neurons, the input and folded ops).
        merge: it reads several inputs (the Keras layer gets a list).
        weight_names: `node.weights` keys in the order of the Keras layer's
            weights; for a synapse the first is the one that rescales and an
            optional "bias" follows.
        absorbs_batch_norm: a following BatchNormalization folds into it.
        calibrated: calibration may fit its weights ("advanced") and move a
            bias correction into it ("light"); rescaling synapses are not.
        layer: `(node, use_bias, **kwargs) -> keras layer` computing the op
            in the ANN, and in the SNN for synapses (kwargs: name, dtype);
            `None` for ops without one (neurons are ReLU in the ANN).
        snn_layer: `(node, context) -> keras layer` of the SNN for ops that
            are not synapses (`build.py`; `context` holds the method, K, the
            bias, the membrane at rest and the dtype).
        owns_bias: its SNN layer receives the constant part of its input
            (the bias of the synapses before it) as its own bias.
        layer_class: the Keras class `layer` builds, to find the op of an
            SNN layer (`for_layer`).
        rescale: `(weights, in_factor, out_factor, out_gain) -> weights`: the
            weights for an input carrying values / in_factor and an output
            carrying values / out_factor, times out_gain (per-channel or
            scalar factors; `rescale_kernel`).
        output_channels: `weights -> number of output channels`.
        macs: `(layer, in_shape, out_shape) -> multiply-accumulates per image`
            (synapses with weights).
    """

    name: str
    role: str
    scaling: str = None
    merge: bool = False
    weight_names: tuple = ()
    absorbs_batch_norm: bool = False
    calibrated: bool = False
    layer: object = None
    snn_layer: object = None
    owns_bias: bool = False
    layer_class: type = None
    rescale: object = None
    output_channels: object = None
    macs: object = None

    @property
    def spike_source(self):
        """Its output is a spike train (delays may follow it; it bounds a linear cone)."""
        return self.role in (NEURON, GATE)

    @property
    def parameter_free(self):
        """Computes without weights from its inputs alone (spikes in, non-negative out)."""
        return self.role in (SYNAPSE, GATE) and not self.weight_names


OPS = {}


def register_op(op):
    """Adds `op` to the table; returns it."""
    if op.name in OPS:
        raise ValueError(f"Op {op.name!r} is registered twice.")
    OPS[op.name] = op
    return op


def get(name):
    """The `Op` called `name`."""
    if name not in OPS:
        raise ValueError(f"Unknown op {name!r}; known: {', '.join(sorted(OPS))}.")
    return OPS[name]


def for_layer(layer):
    """The `Op` whose Keras layer `layer` is, or None."""
    for op in OPS.values():
        if op.layer_class is not None and isinstance(layer, op.layer_class):
            return op
    return None


# ------------------------------------------------ weight arithmetic shared by ops


def rescale_kernel(weights, in_factor=1.0, out_factor=1.0, out_gain=1.0):
    """A (..., in, out) kernel and its bias for an input carrying values / `in_factor` and an
    output carrying values / `out_factor`, times `out_gain` (a folded batch norm's scale)."""
    kernel = weights["kernel"]
    in_shape = [1] * kernel.ndim
    in_shape[-2] = -1
    scaled = {"kernel": kernel * np.reshape(in_factor, in_shape) / out_factor * out_gain}
    return _with_bias(weights, scaled, out_factor, out_gain)


def rescale_channels(weights, in_factor=1.0, out_factor=1.0, out_gain=1.0):
    """A per-channel scale and its shift, rescaled as `rescale_kernel` does."""
    scaled = {"scale": weights["scale"] * in_factor / out_factor * out_gain}
    return _with_bias(weights, scaled, out_factor, out_gain)


def rescale_depthwise(weights, in_factor=1.0, out_factor=1.0, out_gain=1.0):
    """A depthwise kernel (kh, kw, in, multiplier) and its bias, rescaled as
    `rescale_kernel` does; output channel c * multiplier + m reads input channel c."""
    kernel = weights["kernel"]
    channels, multiplier = kernel.shape[2:]
    per_input = np.reshape(np.broadcast_to(in_factor, (channels,)), (channels, 1))

    def per_output(factor):
        return np.reshape(np.broadcast_to(factor, (channels * multiplier,)),
                          (channels, multiplier))

    scaled = {"kernel": kernel * per_input / per_output(out_factor) * per_output(out_gain)}
    return _with_bias(weights, scaled, out_factor, out_gain)


def _with_bias(weights, scaled, out_factor, out_gain):
    if "bias" in weights:
        scaled["bias"] = weights["bias"] / out_factor * out_gain
    return {key: np.asarray(value, "float32") for key, value in scaled.items()}


def kernel_channels(weights):
    """Output channels of a (..., in, out) kernel."""
    return weights["kernel"].shape[-1]


def depthwise_channels(weights):
    """Output channels of a depthwise kernel: input channels x multiplier."""
    return int(np.prod(weights["kernel"].shape[2:]))


def scale_channels(weights):
    """Output channels of a per-channel scale."""
    return weights["scale"].shape[-1]
