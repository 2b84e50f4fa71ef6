"""Role: what a node of the conversion graph, or a layer of a SpikingNetwork, is.

The conversion stages ask a graph node's op record for its role
(`conversion.ops.Op.role`); the simulation loop asks each layer (`of`). A
layer of the SNN says its role in a class attribute `role`; any other Keras
layer in an SNN is a stateless synapse (Conv2D, Dense, pooling, Add, ...).

Example:
    >>> import keras
    >>> from bsnn_tf import neurons, roles
    >>> roles.of(neurons.BistableIF(phases=4)), roles.of(keras.layers.Dense(3))
    (<Role.NEURON: 'neuron'>, <Role.SYNAPSE: 'synapse'>)
"""

import enum


class Role(str, enum.Enum):
    INPUT = "input"        # the phase-coded input (the SNN's encoder)
    SYNAPSE = "synapse"    # a linear map, stateless: applied to a whole chunk at once
    NEURON = "neuron"      # spiking neurons (ReLU-like in the ANN), stateful
    GATE = "gate"          # the spiking max gate (max pooling), stateful
    READOUT = "readout"    # the SNN's output accumulator
    FOLDED = "folded"      # a graph node that `fold` removes (identity, softmax, batch norm)


def of(layer):
    """The role of a layer of a SpikingNetwork."""
    return getattr(layer, "role", Role.SYNAPSE)
