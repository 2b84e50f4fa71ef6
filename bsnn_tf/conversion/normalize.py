"""The normalize stage: data-norm (Rueckauer et al. 2017; paper 3.2 and 3.5).

After normalisation every ReLU output a is carried as y = a / lambda, with
lambda the ReLU's calibration statistic, so activations are at most about 1
and the threshold is 1. Think of every tensor as carrying ANN values divided
by a *scale*: the input has scale lambda_0, a ReLU has its lambda, and the
network output has scale 1 (ANN logits). A weighted layer converts scales,
W' = W * s_in / s_out and b' = b / s_out. A parameter-free path keeps its
scale, so where it meets a merge or a neuron that expects another scale a
rescaling synapse (s_in / s_out per channel) is inserted: this is the
identity-shortcut weight lambda_in / lambda_out of the paper's residual blocks.
"""

import numpy as np

from bsnn_tf.conversion import ops
from bsnn_tf.conversion.graph import Node


def normalize(graph, lambdas, input_scale=1.0):
    """Returns a normalised copy of `graph`.

    Args:
        lambdas: {ReLU node name: lambda}, floats or per-channel arrays.
        input_scale: lambda_0 (1 for real-valued input).
    """
    graph = graph.copy()
    shapes = graph.shapes()
    targets = _targets(graph, lambdas, shapes)
    scales = {"input": _compact(input_scale, shapes["input"])}
    for node in list(graph):
        role, scaling = node.spec.role, node.spec.scaling
        if role == ops.INPUT:
            continue
        if role == ops.NEURON:
            wanted = _compact(lambdas[node.name], shapes[node.name])
            _match(graph, scales, node, node.inputs[0], wanted, shapes)
            node.config["lambda"] = wanted
            scales[node.name] = wanted
        elif scaling == ops.WEIGHTS:
            scales[node.name] = _rescale_weights(node, scales[node.inputs[0]], targets, shapes)
        elif scaling == ops.CHANNEL:
            scales[node.name] = _channel_scale(scales[node.inputs[0]], node, graph)
        elif scaling == ops.RESHAPE:
            full = np.broadcast_to(scales[node.inputs[0]], shapes[node.inputs[0]])
            scales[node.name] = _compact(full.reshape(shapes[node.name]), shapes[node.name])
        elif scaling == ops.SUM:
            wanted = targets.get(node.name, scales[node.inputs[0]])
            for source in list(node.inputs):
                _match(graph, scales, node, source, wanted, shapes)
            scales[node.name] = wanted
        elif scaling == ops.STACK:
            scales[node.name] = _merge_concat(graph, scales, node, targets, shapes)
        else:
            raise ValueError(f"Cannot normalise node '{node.name}' ({node.op}).")
    output = graph[graph.output]
    if not _same(scales[output.name], 1.0):
        rescale = Node(graph.unique_name(f"{output.name}_rescale"), "scale", [],
                       weights={"scale": np.float32(1.0) * scales[output.name]})
        graph.insert(rescale, output.name, [])
        graph.output = rescale.name
    return graph


def _targets(graph, lambdas, shapes):
    """The scale each node's output must have for its consumers, where one is imposed."""
    targets = {}
    for node in reversed(list(graph)):
        demands = [1.0] if node.name == graph.output else []
        for consumer in graph.consumers(node.name):
            demand = _demand(graph, node, consumer, lambdas, targets, shapes)
            if demand is not None:
                demands.append(demand)
        if demands:
            targets[node.name] = _compact(demands[0], shapes[node.name])
    return targets


def _demand(graph, node, consumer, lambdas, targets, shapes):
    scaling = consumer.spec.scaling
    if consumer.spec.role == ops.NEURON:
        return lambdas[consumer.name]
    target = targets.get(consumer.name)
    if target is None or scaling == ops.WEIGHTS:
        return None
    if scaling == ops.SUM:
        return target
    if scaling == ops.STACK:
        return _concat_slice(graph, consumer, node.name, target, shapes)
    if scaling == ops.CHANNEL:
        return target if np.ndim(target) <= 1 else None
    if scaling == ops.RESHAPE:
        return np.broadcast_to(target, shapes[consumer.name]).reshape(shapes[node.name])
    return None


def _rescale_weights(node, scale_in, targets, shapes):
    """Scales `node`'s weights from input scale to its target scale; returns the output scale."""
    scale_out = targets.get(node.name, np.float32(1.0))
    in_channels = _per_channel(scale_in, node.name, "input")
    out_channels = _per_channel(scale_out, node.name, "output")
    node.weights = node.spec.rescale(node.weights, in_channels, out_channels)
    return scale_out


def _per_channel(scale, name, side):
    if np.ndim(scale) > 1:
        raise ValueError(
            f"Layer '{name}': its {side} scale varies across positions, which a per-channel "
            "weight cannot absorb. Use channelwise=False."
        )
    return np.asarray(scale, "float32")


def _channel_scale(scale, node, graph):
    if np.ndim(scale) > 1:
        raise ValueError(
            f"Node '{node.name}' ({node.op}) reads a signal whose scale varies across "
            "positions; use channelwise=False."
        )
    return scale


def _merge_concat(graph, scales, node, targets, shapes):
    target = targets.get(node.name)
    if target is not None:
        for source in list(node.inputs):
            wanted = _concat_slice(graph, node, source, target, shapes)
            _match(graph, scales, node, source, wanted, shapes)
        return target
    parts = [np.broadcast_to(scales[s], shapes[s][-1:]) if np.ndim(scales[s]) <= 1
             else _per_channel(scales[s], node.name, "input") for s in node.inputs]
    return _compact(np.concatenate(parts), shapes[node.name])


def _concat_slice(graph, concat, source, target, shapes):
    """The channels of `target` (the concat's scale) that come from input `source`."""
    if np.ndim(target) == 0:
        return target
    start = 0
    for name in concat.inputs:
        width = shapes[name][-1]
        if name == source:
            return np.broadcast_to(target, shapes[concat.name][-1:])[start:start + width]
        start += width
    raise ValueError(f"'{source}' is not an input of '{concat.name}'.")


def _match(graph, scales, consumer, source, wanted, shapes):
    """Makes the edge source -> consumer carry scale `wanted`, rescaling it if needed."""
    have = scales[source]
    if _same(have, wanted):
        return
    factor = _compact(np.asarray(have, "float32") / np.asarray(wanted, "float32"),
                      shapes[source])
    rescale = Node(graph.unique_name(f"{consumer.name}_rescale"), "scale", [],
                   weights={"scale": np.asarray(factor, "float32")})
    graph.insert(rescale, source, [consumer])
    scales[rescale.name] = wanted
    shapes[rescale.name] = shapes[source]


def _same(a, b):
    return np.allclose(a, b, rtol=1e-6, atol=0)


def _compact(scale, shape):
    """Smallest equivalent form of a scale: a scalar, a per-channel vector, or full."""
    scale = np.asarray(scale, "float32")
    full = np.broadcast_to(scale, shape) if scale.ndim <= len(shape) else scale
    if full.size == 0 or np.all(full == full.flat[0]):
        return np.float32(full.flat[0]) if full.size else np.float32(1.0)
    per_channel = full.reshape(-1, shape[-1])
    if np.all(per_channel == per_channel[0]):
        return per_channel[0].copy()
    return np.array(full)
