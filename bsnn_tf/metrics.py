"""What a simulation cost and how it behaved: firing rates, SIN, synaptic
operations against the ANN's multiply-accumulates, and TensorBoard logging.

A spike costs one accumulate (AC) per outgoing synapse; the ANN costs one
multiply-accumulate (MAC) per synapse. A synapse layer's synaptic operations
are its MACs times the spikes of its sources per source unit (its average
fan-out times the spikes it receives). Synapses fed by real-valued input
count their MACs once per image.

Example:
    >>> result = bsnn_tf.simulate(snn, x, timesteps=128, verbose=0)
    >>> bsnn_tf.metrics.summary(snn, result)
    Synaptic operations per image after T=128 (bsnn)
    layer  ANN MACs  SNN ACs  AC/MAC
    ...
    total ...
"""

import json
import logging
import os

import numpy as np

from bsnn_tf.conversion import ops
from bsnn_tf import roles
from bsnn_tf.roles import Role


def ann_macs(snn):
    """{synapse layer: the ANN's multiply-accumulates per image}."""
    macs = {}
    for name, inputs in snn.topology:
        layer = snn.get_layer(name)
        in_shape, out_shape = snn.unit_shapes[inputs[0]] if inputs else (), snn.unit_shapes[name]
        spec = ops.for_layer(layer) if roles.of(layer) == Role.SYNAPSE else None
        if spec is not None and spec.macs is not None:
            macs[name] = spec.macs(layer, in_shape, out_shape)
    return macs


def synaptic_operations(snn, result):
    """{synapse layer: synaptic operations (ACs) per image, averaged over images}."""
    spikes = {name: float(np.mean(counts)) for name, counts in result.spike_counts.items()}
    operations = {}
    for name, macs in ann_macs(snn).items():
        sources = _spike_sources(snn, name)
        if not sources:
            operations[name] = float(macs)
            continue
        units = sum(int(np.prod(snn.unit_shapes[s])) for s in sources)
        operations[name] = macs * sum(spikes[s] for s in sources) / units
    return operations


def _spike_sources(snn, name):
    """The neuron layers whose spikes reach synapse `name` through parameter-free layers."""
    inputs = dict((n, i) for n, i in snn.topology)
    sources, pending = [], list(inputs[name])
    while pending:
        current = pending.pop()
        role = roles.of(snn.get_layer(current))
        if role == Role.NEURON:
            sources.append(current)
        elif role != Role.INPUT and not snn.get_layer(current).weights:
            pending.extend(inputs[current])
    return sources


def layer_table(snn, result, verification=None):
    """One dict per spiking layer: neurons, firing rate, spikes per image, SIN rate, error."""
    rates = result.firing_rates()
    sin = result.sin_rates() if result.sin else {}
    errors = {e.layer: e.max_error for e in verification.layers} if verification else {}
    return [{
        "layer": layer.name,
        "neurons": result.neurons[layer.name],
        "firing_rate": rates[layer.name],
        "spikes_per_image": float(np.mean(result.spike_counts[layer.name])),
        "sin_rate": sin.get(layer.name),
        "output_error": errors.get(layer.name),
    } for layer in snn.spiking_layers()]


def summary(snn, result, print_fn=print):
    """Prints per synapse layer the ANN MACs, the SNN's ACs and their ratio, then totals."""
    macs, operations = ann_macs(snn), synaptic_operations(snn, result)
    print_fn(f"Synaptic operations per image after T={result.timesteps} ({snn.method})")
    total_macs, total_ops = sum(macs.values()), sum(operations.values())
    width = max(14, len(f"{max(total_macs, total_ops):,.0f}") + 2)  # the totals are widest
    print_fn(f"{'layer':<30}{'ANN MACs':>{width}}{'SNN ACs':>{width}}{'AC/MAC':>9}")
    for name in macs:
        print_fn(f"{name:<30}{macs[name]:>{width},}{operations[name]:>{width},.0f}"
                 f"{operations[name] / max(macs[name], 1):>9.3f}")
    print_fn(f"{'total':<30}{total_macs:>{width},}{total_ops:>{width},.0f}"
             f"{total_ops / max(total_macs, 1):>9.3f}")
    rates = result.firing_rates()
    print_fn(f"{'spiking layer':<30}{'neurons':>14}{'rate':>14}")
    for name, rate in rates.items():
        print_fn(f"{name:<30}{result.neurons[name]:>14,}{rate:>14.4f}")


def write_tensorboard(logdir, snn, result, verification=None, accuracy=None, step=0):
    """Writes per-layer firing rates (scalar and histogram), SIN rates, ANN-SNN
    errors, synaptic operations against MACs, and accuracy per T.

    Uses tf.summary; without TensorFlow, writes the scalars to
    `logdir/scalars.json` instead and logs a warning.
    """
    scalars, histograms = _tensorboard_values(snn, result, verification)
    try:
        import tensorflow as tf
    except ImportError:
        logging.warning("TensorFlow is not installed: writing %s/scalars.json instead of "
                        "TensorBoard events.", logdir)
        os.makedirs(logdir, exist_ok=True)
        with open(os.path.join(logdir, "scalars.json"), "w") as f:
            json.dump({"scalars": scalars, "accuracy": accuracy or {}}, f, indent=1)
        return
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value, step=step)
        for tag, values in histograms.items():
            tf.summary.histogram(tag, values, step=step)
        for timesteps, value in (accuracy or {}).items():
            tf.summary.scalar("accuracy", value, step=int(timesteps))
    writer.close()


def _tensorboard_values(snn, result, verification):
    scalars, histograms = {}, {}
    for row in layer_table(snn, result, verification):
        name = row["layer"]
        scalars[f"firing_rate/{name}"] = row["firing_rate"]
        if row["sin_rate"] is not None:
            scalars[f"sin_rate/{name}"] = row["sin_rate"]
        if row["output_error"] is not None:
            scalars[f"output_error/{name}"] = row["output_error"]
        per_neuron = (result.unit_spike_counts[name].reshape(-1) / len(result.outputs)
                      / result.timesteps / snn.get_layer(name).neurons_per_unit)
        histograms[f"firing_rate_per_unit/{name}"] = per_neuron
    macs, operations = ann_macs(snn), synaptic_operations(snn, result)
    for name in macs:
        scalars[f"synops/{name}"] = operations[name]
        scalars[f"macs/{name}"] = float(macs[name])
        scalars[f"synops_per_mac/{name}"] = operations[name] / max(macs[name], 1)
    if verification is not None:
        scalars["output_error/logits"] = verification.output_error
    return scalars, histograms
