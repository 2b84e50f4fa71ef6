"""Graph to Keras: the layer of a node, its weights, and the ANN a whole graph computes.

Each op's `Op.layer` builds its Keras layer; on the ANN side spiking nodes
are ReLU and the max gate MaxPooling2D. Calibration uses the ANN of a graph
(outputs at every spiking node) and the tests use it to check that each
conversion stage leaves the ANN's function unchanged.

Example:
    >>> from bsnn_tf.conversion.trace import trace
    >>> from bsnn_tf.conversion.fold import fold
    >>> model, tensors = to_keras(fold(trace(ann)))
    >>> np.allclose(model.predict(x, verbose=0), ann.predict(x, verbose=0), atol=1e-4)
    True
"""

import keras
import numpy as np

from bsnn_tf.conversion import ops


def make_layer(node, use_bias=True, dtype=None):
    """A Keras layer computing node `node` (weights not set yet).

    `use_bias=False` builds the bias-free synapse of an SNN (neurons own the bias).
    """
    spec = node.spec
    if spec.layer is None:
        raise ValueError(f"Node '{node.name}' ({node.op}) has no Keras layer.")
    return spec.layer(node, use_bias and "bias" in node.weights, name=node.name, dtype=dtype)


def set_weights(layer, node, use_bias=True):
    """Copies `node`'s weights into `layer`, built by `make_layer`."""
    names = [n for n in node.spec.weight_names
             if n in node.weights and (use_bias or n != "bias")]
    if names:
        layer.set_weights([np.asarray(node.weights[n], layer.variables[0].dtype)
                           for n in names])


def to_keras(graph, outputs=None, with_weights=True, spiking_layer=None, input_layer=None):
    """The ANN that `graph` computes, as a Keras Functional model.

    Spiking nodes become ReLU, the max gate MaxPooling2D.

    Args:
        spiking_layer: node -> Keras layer for the spiking nodes instead of ReLU
            (calibration's quantised network).
        input_layer: () -> a Keras layer applied to the input, or None.

    Returns:
        (model, {node name: KerasTensor}).
    """
    model_input = keras.Input(graph.input_shape, name="input")
    tensors = {"input": input_layer()(model_input) if input_layer else model_input}
    built = []
    for node in graph:
        if node.spec.role == ops.INPUT:
            continue
        layer = (spiking_layer(node) if spiking_layer and node.spec.role == ops.NEURON
                 else make_layer(node))
        inputs = [tensors[name] for name in node.inputs]
        tensors[node.name] = layer(inputs if node.spec.merge else inputs[0])
        built.append((layer, node))
    if with_weights:
        for layer, node in built:
            set_weights(layer, node)
    outputs = [graph.output] if outputs is None else list(outputs)
    model = keras.Model(model_input, [tensors[name] for name in outputs])
    return model, tensors
