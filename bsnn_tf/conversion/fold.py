"""The fold stage: simplify the graph to what the SNN computes; the ANN function is unchanged.

- Inference-time identities (Dropout, linear activations) are removed.
- A softmax on the output is dropped: the SNN reads out logits.
- BatchNormalization is folded into the preceding Conv2D/Dense (paper 3.2):
  W' = W * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta.
  A BatchNormalization that follows anything else becomes a per-channel affine synapse.
- max-pool -> ReLU becomes ReLU -> max-pool (equal, since ReLU is monotone),
  because the spiking max gate must see spikes.
- A plain ReLU (not clipped, not trained as a quantiser) on a signal that is already
  non-negative is removed.
"""

import numpy as np

from bsnn_tf.conversion import ops


def fold(graph):
    """Returns a folded copy of `graph`; raises ValueError for what cannot be folded."""
    graph = graph.copy()
    for node in [n for n in graph if n.op == "identity"]:  # Dropout, linear activations
        graph.bypass(node.name)
    _drop_output_softmax(graph)
    for node in [n for n in graph if n.op == "bn"]:
        _fold_batch_norm(graph, node)
    for node in [n for n in graph if n.spec.role == ops.GATE]:
        _move_relu_before(graph, node)
    for node in graph.spiking_nodes():
        # A clipped or trained (QuantizedReLU) ReLU changes a non-negative signal too.
        plain = not {"max_value", "threshold"} & set(node.config)
        if plain and _from_spikes(graph, graph[node.inputs[0]]):
            graph.bypass(node.name)
    _check_gate_inputs(graph)
    if not graph.spiking_nodes():
        raise ValueError("The model has no ReLU activation, so nothing becomes a spiking neuron.")
    return graph


def _drop_output_softmax(graph):
    while graph[graph.output].op == "softmax":
        graph.bypass(graph.output)
    for node in graph:
        if node.op == "softmax":
            raise ValueError(
                f"Softmax '{node.origin}' is not on the output; only a final softmax can be "
                "dropped (the SNN reads out logits)."
            )


def _fold_batch_norm(graph, bn):
    w = bn.weights
    scale = w["gamma"] / np.sqrt(w["variance"] + bn.config["epsilon"])
    shift = w["beta"] - w["mean"] * scale
    (source_name,) = bn.inputs
    source = graph[source_name]
    if source.spec.absorbs_batch_norm and len(graph.consumers(source_name)) == 1:
        source.weights.setdefault("bias", np.zeros_like(scale))
        source.weights = source.spec.rescale(source.weights, out_gain=scale)
        source.weights["bias"] = source.weights["bias"] + shift
        source.origin = bn.origin
        graph.bypass(bn.name)
    else:
        bn.op, bn.config = "affine", {}
        bn.weights = {"scale": scale.astype("float32"), "bias": shift.astype("float32")}


def _move_relu_before(graph, pool):
    """pool -> relu (relu its only consumer) becomes relu -> pool."""
    consumers = graph.consumers(pool.name)
    if len(consumers) != 1 or consumers[0].spec.role != ops.NEURON:
        return
    relu = consumers[0]
    for node in graph.consumers(relu.name):
        node.inputs = [pool.name if i == relu.name else i for i in node.inputs]
    if graph.output == relu.name:
        graph.output = pool.name
    relu.inputs, pool.inputs = pool.inputs, [relu.name]
    pool.origin, relu.origin = relu.origin, None
    graph.sort()


def _from_spikes(graph, node):
    """True if `node` outputs spikes or a parameter-free combination of them (so >= 0)."""
    if node.spec.role == ops.NEURON:
        return True
    if node.spec.parameter_free:
        return all(_from_spikes(graph, graph[name]) for name in node.inputs)
    return False


def _check_gate_inputs(graph):
    for pool in (n for n in graph if n.spec.role == ops.GATE):
        source = graph[pool.inputs[0]]
        if source.spec.role != ops.INPUT and not _from_spikes(graph, source):
            raise ValueError(
                f"MaxPooling2D '{pool.origin}' reads '{source.origin or source.name}' "
                f"({source.op}), not a ReLU output: the spiking max gate needs spikes. "
                "Put the ReLU before the pooling."
            )
