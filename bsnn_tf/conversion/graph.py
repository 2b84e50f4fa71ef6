"""The conversion graph: nodes in topological order, one input and one output.

`trace.trace` builds it from a Keras model; each stage returns a changed
copy; `keras_graph.to_keras` turns it back into the ANN it computes. What a
node's kind means to the stages is its `Op` record (`node.spec`, `ops.py`).

Example:
    >>> graph = Graph((4,))
    >>> inputs = graph.add(Node("input", "input", []))
    >>> fc = graph.add(Node("fc", "dense", ["input"], {"units": 3}))
    >>> graph.output = "fc"
    >>> [node.spec.role.value for node in graph]
    ['input', 'synapse']
"""

import copy
import dataclasses

from bsnn_tf.conversion import ops
from bsnn_tf.conversion.keras_graph import to_keras


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

    @property
    def spec(self):
        """The `ops.Op` record of this node's kind."""
        return ops.get(self.op)


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
        return [node for node in self if node.spec.role == ops.NEURON]

    def shapes(self):
        """Unit shape (no batch axis) of every node's output."""
        _, tensors = to_keras(self, with_weights=False)
        return {name: tuple(tensor.shape[1:]) for name, tensor in tensors.items()}
