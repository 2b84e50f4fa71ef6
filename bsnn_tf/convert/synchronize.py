"""Stage 5, rewrite merges: spiking depth, synchronous layers and start periods.

A BIF layer passes information on one period after it receives it, so a
signal that has crossed d spiking layers is valid from period d on. At an
Add or Concatenate, branches that crossed fewer spiking layers arrive early
(a residual block's shortcut by one period). This stage inserts synchronous
layers (paper 3.5; `bsnn_tf.layers.SynchronousLayer`) right after the
spiking source of each short branch until every input of the merge has the
same depth, then gives every spiking layer its start period (depth - 1) and
the output its readout start (its input's depth).
"""

from bsnn_tf.convert.graph import LINEAR_OPS, SPIKING_OPS, Node


def synchronize(graph, enabled=True):
    """Returns a copy of `graph` with synchronous layers (if `enabled`) and start periods."""
    graph = graph.copy()
    if enabled:
        for merge in [n for n in graph if n.op in ("add", "concat")]:
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
        depths[node.name] = below + 1 if node.op in SPIKING_OPS else below
    return depths


def _equalize(graph, merge):
    depths = spiking_depths(graph)
    deepest = max(depths[name] for name in merge.inputs)
    for name in list(merge.inputs):
        missing = deepest - depths[name]
        if missing:
            for source, consumer in _branch_heads(graph, name, merge):
                _insert_delays(graph, source, consumer, missing)


def _branch_heads(graph, name, merge):
    """(spiking source, first node of the branch) pairs of the branch `name` -> `merge`."""
    node = graph[name]
    if node.op in SPIKING_OPS:
        return [(name, merge)]
    if node.op == "input":
        raise ValueError(
            f"'{merge.origin or merge.name}' merges the network input directly with a deeper "
            "branch; a synchronous layer cannot delay real-valued input. Use "
            "synchronous=False or input_encoding='spike'."
        )
    if node.op not in LINEAR_OPS or len(graph.consumers(name)) != 1:
        raise ValueError(
            f"Cannot synchronise the inputs of '{merge.origin or merge.name}': branch node "
            f"'{node.origin or name}' ({node.op}) is shared with another branch or is not "
            "linear. Use synchronous=False."
        )
    heads = []
    for source in node.inputs:
        if graph[source].op in SPIKING_OPS:
            heads.append((source, node))
        else:
            heads.extend(_branch_heads(graph, source, node))
    return heads


def _insert_delays(graph, source, consumer, count):
    for _ in range(count):
        delay = Node(graph.unique_name(f"{source}_sync"), "sync", [],
                     config={"lambda": graph[source].config.get("lambda", 1.0)},
                     origin=graph[source].origin)
        graph.insert(delay, source, [consumer])
        source = delay.name
