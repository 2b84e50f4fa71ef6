"""The synchronize stage, rewriting merges: spiking depth, synchronous layers and start periods.

A BIF layer passes information on one period after it receives it, so a
signal that has crossed d spiking layers is valid from period d on. At an
Add or Concatenate, branches that crossed fewer spiking layers arrive early
(a residual block's shortcut by one period). This stage inserts synchronous
layers (paper 3.5; `bsnn_tf.layers.SynchronousLayer`) right after the
spiking source of each short branch until every input of the merge has the
same depth, then gives every spiking layer its start period (depth - 1) and
the output its readout start (its input's depth).
"""

from bsnn_tf.conversion import ops
from bsnn_tf.conversion.graph import Node


def synchronize(graph, enabled=True):
    """Returns a copy of `graph` with synchronous layers (if `enabled`) and start periods."""
    graph = graph.copy()
    if enabled:
        for merge in [n for n in graph if n.spec.merge]:
            _equalize(graph, merge)
    depths = spiking_depths(graph)
    for node in graph.spiking_nodes():
        node.config["start_period"] = depths[node.name] - 1
    graph.output_start = depths[graph.output]
    return graph


def spiking_depths(graph):
    """{node name: number of spiking layers on the longest path from the input}."""
    depths = {}
    for node in graph:
        below = max((depths[name] for name in node.inputs), default=0)
        depths[node.name] = below + 1 if node.spec.role == ops.NEURON else below
    return depths


def _equalize(graph, merge):
    depths = spiking_depths(graph)
    deepest = max(depths[name] for name in merge.inputs)
    for name in list(merge.inputs):
        missing = deepest - depths[name]
        if missing:
            for source, consumer in _branch_heads(graph, name, merge):
                _insert_delays(graph, source, consumer, missing)


def _branch_heads(graph, name, consumer):
    """(spike source, node reading it) pairs of the branch that ends at `consumer`.

    A linear node that the branch shares with another branch is copied, so
    that delaying this branch leaves the other one alone.
    """
    node = graph[name]
    if node.spec.spike_source:
        return [(name, consumer)]
    if node.spec.role != ops.SYNAPSE:
        raise ValueError(
            f"Cannot synchronize the branch through '{node.origin or name}' ({node.op}): a "
            "synchronous layer cannot delay the real-valued network input. Use "
            "synchronous=False."
        )
    if len(graph.consumers(name)) > 1:
        node = _copy_for(graph, node, consumer)
    heads = []
    for source in node.inputs:
        heads.extend(_branch_heads(graph, source, node))
    return heads


def _copy_for(graph, node, consumer):
    copy = Node(graph.unique_name(f"{node.name}_copy"), node.op, list(node.inputs),
                dict(node.config), dict(node.weights), node.origin)
    graph.add(copy)
    consumer.inputs = [copy.name if i == node.name else i for i in consumer.inputs]
    graph.sort()
    return copy


def _insert_delays(graph, source, consumer, count):
    for _ in range(count):
        delay = Node(graph.unique_name(f"{source}_sync"), "sync", [],
                     config={"lambda": _scale_of(graph, source)}, origin=graph[source].origin)
        graph.insert(delay, source, [consumer])
        source = delay.name


def _scale_of(graph, name):
    """lambda of the spike train leaving `name` (a gate passes its ReLU's on)."""
    node = graph[name]
    while "lambda" not in node.config and node.inputs:
        node = graph[node.inputs[0]]
    return node.config.get("lambda", 1.0)
