"""The trace stage: a Keras model checked layer by layer, then read into a `Graph`.

Every layer needs a registered converter (`converters.py`) that accepts it;
`trace` raises one ValueError listing each layer that cannot convert, with its
class and why, before reading any. A built subclassed keras.Model is traced
as the Functional model of its `call` (`as_functional`). Functional models
are read through Keras's node graph (`Functional._nodes_by_depth`, private:
the one place this package reads it), which says which tensors feed each
layer call.

Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
    >>> [node.op for node in trace(model)]
    ['input', 'dense', 'relu']
"""

import keras

import bsnn_tf.conversion.weightless  # noqa: F401 (registers the weightless layers' converters)
from bsnn_tf.conversion.converters import converter_for, supported_class_names
from bsnn_tf.conversion.graph import Graph, Node
from bsnn_tf.validation import check_finite_weights


def trace(model):
    """Validates `model` and returns its graph.

    A subclassed keras.Model that has been built (called on a batch) is
    traced as the Functional model of its `call` on a symbolic input
    (`as_functional`).

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: the model has several inputs or outputs, is not built, or
            has layers that cannot convert (all of them are listed, each with
            its class and the reason).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    if hasattr(model, "ann_layers"):  # a SpikingNetwork (the network imports conversion)
        raise TypeError(f"Model '{model.name}' is a SpikingNetwork, converted already "
                        f"(method={model.method!r}); convert the ANN it came from instead.")
    model = as_functional(model)
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"Model '{model.name}' has no defined input; build it with keras.Input(...) "
            "or call it on a batch before converting."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; conversion needs exactly one of each."
        )
    problems = list(_unsupported(model))
    if problems:
        lines = "\n".join(f"  - '{name}' ({cls}): {why}" for name, cls, why in problems)
        raise ValueError(f"Model '{model.name}' cannot be converted:\n{lines}")
    check_finite_weights(model)
    graph = Graph(model.inputs[0].shape[1:])
    graph.add(Node("input", "input", []))
    graph.output = _trace_into(graph, model, "input")
    return graph


def as_functional(model):
    """`model`, or for a built subclassed keras.Model (no `inputs`) the Functional model
    of its `call` on a `keras.Input` of the shape it was built with.

    The Functional model shares the subclass's layers and weights, so it
    computes the same as long as `call` is a graph of layers (Python control
    flow on the input's values cannot be traced).
    """
    if getattr(model, "inputs", None) or not model.built:
        return model
    shapes = list((getattr(model, "_build_shapes_dict", None) or {}).values())
    if len(shapes) != 1 or not isinstance(shapes[0], (tuple, list)) or not shapes[0]:
        raise ValueError(
            f"Model '{model.name}' is a subclassed keras.Model built on {shapes or 'no'} "
            "input shapes; conversion needs one image input. Rebuild it as a Sequential "
            "or Functional model with keras.Input(...).")
    inputs = keras.Input(tuple(shapes[0])[1:], name="input")
    try:
        outputs = model.call(inputs)
    except Exception as error:  # whatever the user's call() raises on a symbolic input
        raise ValueError(
            f"Model '{model.name}' is a subclassed keras.Model whose call() cannot be traced "
            f"on a symbolic input ({type(error).__name__}: {error}). Rebuild it as a "
            "Sequential or Functional model with keras.Input(...).") from error
    return keras.Model(inputs, outputs, name=model.name)


def _unsupported(model):
    """Yields (layer name, class name, reason) for every layer that cannot convert."""
    for op in _operations(model):
        if isinstance(op, keras.Model):
            yield from _unsupported(op)
            continue
        if isinstance(op, keras.layers.InputLayer):
            continue
        if not isinstance(op, keras.layers.Layer):
            yield (op.name, type(op).__name__,
                   "a keras.ops operation, not a layer; use the equivalent keras.layers layer "
                   "(e.g. keras.layers.Add instead of `a + b`)")
            continue
        converter = converter_for(op)
        if converter is None:
            yield (op.name, type(op).__name__,
                   "no converter is registered for this layer class; supported: "
                   + ", ".join(supported_class_names()))
            continue
        reason = converter.unsupported_reason(op)
        if reason:
            yield op.name, type(op).__name__, reason
        elif len(_own_nodes(model, op)) > 1:
            yield op.name, type(op).__name__, "the layer is shared (called more than once)"


def _operations(model):
    return model.layers if isinstance(model, keras.Sequential) else model.operations


def _own_nodes(model, op):
    if isinstance(model, keras.Sequential):
        return [None]
    nodes = [node for depth_nodes in model._nodes_by_depth.values() for node in depth_nodes]
    return [node for node in nodes if node.operation is op]


def _trace_into(graph, model, input_name):
    """Adds `model`'s layers to `graph`, fed by node `input_name`; returns the output node name."""
    if isinstance(model, keras.Sequential):
        current = input_name
        for layer in model.layers:
            current = _add_layer(graph, layer, [current])
        return current
    produced = {}
    for op in model.operations:
        (node,) = _own_nodes(model, op)
        if isinstance(op, keras.layers.InputLayer):
            produced[id(node.output_tensors[0])] = input_name
            continue
        inputs = [produced[id(t)] for t in node.input_tensors]
        produced[id(node.output_tensors[0])] = _add_layer(graph, op, inputs)
    return produced[id(model.outputs[0])]


def _add_layer(graph, layer, inputs):
    if isinstance(layer, keras.Model):
        return _trace_into(graph, layer, inputs[0])
    if isinstance(layer, keras.layers.InputLayer):
        return inputs[0]
    nodes = converter_for(layer).convert(layer, inputs)
    renamed = {}
    for node in nodes:
        node.inputs = [renamed.get(name, name) for name in node.inputs]
        renamed[node.name] = graph.unique_name(node.name)
        node.name = renamed[node.name]
        graph.add(node)
    return nodes[-1].name


