"""What a simulation cost and how it behaved: firing rates, SIN, synaptic
operations against the ANN's multiply-accumulates, and TensorBoard logging.

A spike costs one accumulate (AC) per outgoing synapse; the ANN costs one
multiply-accumulate (MAC) per synapse. A synapse layer's synaptic operations
are its MACs times the spikes of its sources per source unit (its average
fan-out times the spikes it receives). Synapses fed by real-valued input
count their MACs once per image. The spikes are those the simulation counted:
by default on the run's schedule (`SimulationResult.count_window`).

Energy per image is estimated from these counts with the per-operation
energies `PJ_PER_AC` and `PJ_PER_MAC` (`energy`).

Example:
    >>> result = bsnn_tf.simulate(snn, x, timesteps=128, verbose=0)
    >>> bsnn_tf.metrics.summary(snn, result)
    Synaptic operations per image after T=128 (bsnn), spikes counted on the schedule
    layer  ANN MACs  SNN ops  ops/MAC
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

# Energy per operation, 32-bit floating point at 45 nm (M. Horowitz, "Computing's energy
# problem (and what we can do about it)", ISSCC 2014): an add 0.9 pJ, a multiply 3.7 pJ.
# A synaptic operation (a spike's weight accumulated) is an add; an ANN synapse (or one
# of the SNN's on its real-valued input) is a multiply-accumulate, 3.7 + 0.9 pJ.
# Memory access, which often dominates on real hardware, is left out of both.
PJ_PER_AC = 0.9
PJ_PER_MAC = 4.6
ENERGY_SOURCE = ("Horowitz, ISSCC 2014, 45 nm, 32-bit float: accumulate (add) 0.9 pJ, "
                 "multiply-accumulate 4.6 pJ; memory access not included")


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


def real_input_macs(snn):
    """{synapse layer: MACs per image} of the synapses on the real-valued input (no
    spike source; with `input_encoding="real"` they multiply the image once)."""
    return {name: macs for name, macs in ann_macs(snn).items()
            if not _spike_sources(snn, name) and snn.encoder.encoding == "real"}


def energy(snn, result):
    """Estimated energy per image, in picojoules, from `result`'s spike counts.

    The SNN: synaptic operations x PJ_PER_AC, plus the MACs of the synapses
    on a real-valued input x PJ_PER_MAC; the ANN: its MACs x PJ_PER_MAC
    (constants and their source, Horowitz 2014: `ENERGY_SOURCE`). Returns
    {"snn_pj", "ann_pj", "snn_per_ann", "layers": {synapse layer: SNN pJ},
    "pj_per_ac", "pj_per_mac", "source"}.
    """
    real_input = real_input_macs(snn)
    layers = {name: operations * (PJ_PER_MAC if name in real_input else PJ_PER_AC)
              for name, operations in synaptic_operations(snn, result).items()}
    snn_pj, ann_pj = sum(layers.values()), sum(ann_macs(snn).values()) * PJ_PER_MAC
    return {"snn_pj": snn_pj, "ann_pj": ann_pj, "snn_per_ann": snn_pj / max(ann_pj, 1e-30),
            "layers": layers, "pj_per_ac": PJ_PER_AC, "pj_per_mac": PJ_PER_MAC,
            "source": ENERGY_SOURCE}


def count_window_note(result):
    """Which steps `result`'s spike counts cover, in words (results.json, TensorBoard)."""
    if result.count_window == "schedule":
        return ("each layer's spikes are counted in the periods the logits-only run "
                "simulates it (from its first possible input to the last period whose "
                "output can still reach the readout at T); firing rates divide by those "
                "steps")
    return "every layer's spikes are counted over all T steps; firing rates divide by T"


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


_WINDOW_WORDS = {"schedule": "on the schedule", "whole": "over all T"}


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
    """Prints per synapse layer the ANN MACs, the SNN's synaptic operations and their
    ratio, then totals, the energy estimate (`energy`) and the firing rates."""
    macs, operations = ann_macs(snn), synaptic_operations(snn, result)
    print_fn(f"Synaptic operations per image after T={result.timesteps} ({snn.method}), "
             f"spikes counted {_WINDOW_WORDS.get(result.count_window, 'over all T')}")
    total_macs, total_ops = sum(macs.values()), sum(operations.values())
    width = max(14, len(f"{max(total_macs, total_ops):,.0f}") + 2)  # the totals are widest
    print_fn(f"{'layer':<30}{'ANN MACs':>{width}}{'SNN ops':>{width}}{'ops/MAC':>9}")
    real_input = real_input_macs(snn)
    for name in macs:
        kind = " (MACs on the real input)" if name in real_input else ""
        print_fn(f"{name:<30}{macs[name]:>{width},}{operations[name]:>{width},.0f}"
                 f"{operations[name] / max(macs[name], 1):>9.3f}{kind}")
    print_fn(f"{'total':<30}{total_macs:>{width},}{total_ops:>{width},.0f}"
             f"{total_ops / max(total_macs, 1):>9.3f}")
    estimate = energy(snn, result)
    print_fn(f"Energy per image: SNN {estimate['snn_pj'] / 1e6:,.3f} uJ, ANN "
             f"{estimate['ann_pj'] / 1e6:,.3f} uJ, SNN/ANN {estimate['snn_per_ann']:.3f} "
             f"({ENERGY_SOURCE})")
    rates = result.firing_rates()
    print_fn(f"{'spiking layer':<30}{'neurons':>14}{'rate':>14}")
    for name, rate in rates.items():
        print_fn(f"{name:<30}{result.neurons[name]:>14,}{rate:>14.4f}")


def write_tensorboard(logdir, snn, result, verification=None, accuracy=None, step=0):
    """Writes per-layer firing rates (scalar and histogram), SIN rates, ANN-SNN
    errors, synaptic operations against MACs, the energy estimate (`energy`),
    accuracy per T, and as text "count_window" which steps the counts cover.

    Uses tf.summary; without TensorFlow, writes the scalars to
    `logdir/scalars.json` instead and logs a warning.
    """
    scalars, histograms = _tensorboard_values(snn, result, verification)
    window = f"{result.count_window}: {count_window_note(result)}"
    try:
        import tensorflow as tf
    except ImportError:
        logging.warning("TensorFlow is not installed: writing %s/scalars.json instead of "
                        "TensorBoard events.", logdir)
        os.makedirs(logdir, exist_ok=True)
        with open(os.path.join(logdir, "scalars.json"), "w") as f:
            json.dump({"scalars": scalars, "accuracy": accuracy or {}, "count_window": window},
                      f, indent=1)
        return
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value, step=step)
        for tag, values in histograms.items():
            tf.summary.histogram(tag, values, step=step)
        for timesteps, value in (accuracy or {}).items():
            tf.summary.scalar("accuracy", value, step=int(timesteps))
        tf.summary.text("count_window", window, step=step)
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
                      / max(result.counted_steps[name], 1)
                      / snn.get_layer(name).neurons_per_unit)
        histograms[f"firing_rate_per_unit/{name}"] = per_neuron
    macs, operations = ann_macs(snn), synaptic_operations(snn, result)
    for name in macs:
        scalars[f"synops/{name}"] = operations[name]
        scalars[f"macs/{name}"] = float(macs[name])
        scalars[f"synops_per_mac/{name}"] = operations[name] / max(macs[name], 1)
    estimate = energy(snn, result)
    for name, picojoules in estimate["layers"].items():
        scalars[f"energy_pj/{name}"] = picojoules
    scalars["energy_pj/snn_total"] = estimate["snn_pj"]
    scalars["energy_pj/ann_total"] = estimate["ann_pj"]
    scalars["energy_pj/snn_per_ann"] = estimate["snn_per_ann"]
    if verification is not None:
        scalars["output_error/logits"] = verification.output_error
    return scalars, histograms
