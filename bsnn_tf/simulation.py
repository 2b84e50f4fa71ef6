"""Simulation: compiled chunks of time, batch after batch.

`simulate` runs a SpikingNetwork for T steps on a batch of images, chunk by
chunk (the state is carried between chunks, so memory does not grow with T)
and returns a `SimulationResult`: the logits at T and at checkpoints, spike
counts per layer and, when the ANN is given, spikes of inactivated neurons.

Example:
    >>> result = bsnn_tf.simulate(snn, x_test[:100], timesteps=128, checkpoints=[32, 64],
    ...                           verbose=0)
    >>> 0.0 <= result.accuracy(y_test[:100]) <= 1.0
    True
    >>> result.outputs_at[64].shape
    (100, 10)
"""

import dataclasses
import weakref

import keras
import numpy as np

from bsnn_tf import backend, observers
from bsnn_tf.validation import (check_inputs, check_labels, check_mode, check_spiking_network,
                                check_timesteps, check_whole_periods, warn_before_first_readout)

_COMPILED = weakref.WeakKeyDictionary()
_MEMORY_BUDGET = 1 << 30


@dataclasses.dataclass
class SimulationResult:
    """What a simulation produced.

    Attributes:
        timesteps: T, steps simulated.
        outputs: (N, classes) logits after T steps, in ANN units.
        outputs_at: {T_c: (N, classes)} logits after each checkpoint T_c.
        spike_counts: {layer: (N,)} spikes per sample; None with `count_spikes=False`.
        unit_spike_counts: {layer: (*units)} spikes per unit, summed over samples
            (None with `count_spikes=False`).
        neurons: {layer: neurons per sample} (a BIF unit has two).
        values: {layer: (N, *units)} each unit's output per period in ANN
            units (emitted value / periods * lambda); only with `record_values`.
        sin: {layer: (spiking inactivated units, inactivated units)} summed
            over samples; only when the ANN is given.
        trace: {layer: (N, T, *units)} what every neuron and gate emitted at
            every step (period in period mode); only with `trace=True`.
    """

    timesteps: int
    outputs: np.ndarray
    outputs_at: dict
    spike_counts: dict | None
    unit_spike_counts: dict | None
    neurons: dict
    values: dict | None = None
    sin: dict | None = None
    trace: dict | None = None

    def accuracy(self, labels, timesteps=None):
        """Top-1 accuracy of the logits after `timesteps` (default T).

        Args:
            labels: one integer class per simulated image, shape (N,).
        """
        logits = self.outputs if timesteps is None else self.outputs_at[timesteps]
        labels = check_labels(labels, len(logits))
        return float(np.mean(np.argmax(logits, axis=-1) == labels))

    def firing_rates(self):
        """{layer: spikes per neuron per step}, averaged over samples."""
        if self.spike_counts is None:
            raise ValueError("This simulation did not count spikes; run bsnn_tf.simulate "
                             "with count_spikes=True.")
        return {name: float(np.mean(counts) / (self.neurons[name] * self.timesteps))
                for name, counts in self.spike_counts.items()}

    def sin_rates(self):
        """{layer: fraction of inactivated units (ANN activation <= 0) that spiked}."""
        return {name: spiked / max(inactive, 1) for name, (spiked, inactive) in self.sin.items()}


def simulate(snn, x, *, timesteps, mode=None, checkpoints=None, batch_size=None, ann=None,
             count_spikes=True, record_values=False, trace=False, chunk=None, jit_compile="auto",
             verbose="auto", distribute=False):
    """Simulates `snn` on images `x` for `timesteps` steps.

    Args:
        snn: a SpikingNetwork from `bsnn_tf.convert`.
        x: images (N, *input_shape), preprocessed like the ANN's input.
        timesteps: T, a positive int.
        mode: "period" (exact and fast; BSNN only, T and checkpoints multiples
            of the phases) or "step" (every time step). Default: the SNN's mode.
        checkpoints: step counts at which to also record the logits.
        batch_size: images per batch (default: all, at most 128).
        ann: the source keras.Model; with it, spikes of inactivated neurons are counted.
        count_spikes: count spikes per layer and unit (metrics, TensorBoard, SIN);
            False compiles a logits-only simulation that carries no counters.
        record_values: also return each unit's output per period (for `verify`).
        trace: also return every neuron's and gate's output at every step (small nets).
        chunk: periods per compiled chunk (default: as many as fit about 1 GiB).
        jit_compile: XLA-compile the simulation (True), or not; "auto": XLA
            except with TensorFlow on a CPU (see `bsnn_tf.backend`).
        verbose: 0 silent, 1 or "auto" a progress bar over batches.
        distribute: split every batch over all local devices (data parallel;
            `bsnn_tf.backend.devices`), the batch size rounded up to a multiple
            of the device count. The results equal a one-device run.

    Returns:
        A SimulationResult.

    Warns:
        EarlyReadoutWarning: T or a checkpoint comes before the SNN's first
            readout (`bsnn_tf.validation.first_readout`).
    """
    check_spiking_network(snn, "bsnn_tf.simulate")
    period_mode = check_mode(snn, mode or snn.mode)
    timesteps = check_timesteps(timesteps)
    span = snn.time_units(timesteps, period_mode)  # periods in period mode, else steps
    checkpoints = _check_checkpoints(checkpoints, timesteps, snn.phases if period_mode else 1)
    x = check_inputs(x, snn.unit_shapes[snn.encoder.name], what="input batch")
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    warn_before_first_readout(snn, checkpoints)
    devices = backend.devices(distribute)
    batch_size = -(-(batch_size or min(len(x), 128)) // devices.count) * devices.count
    chunk_length = min(_chunk_length(snn, batch_size // devices.count, chunk, period_mode),
                       -(-span // snn.phases) * snn.phases if not period_mode else span)
    if ann is not None and not count_spikes:
        raise ValueError("Counting spikes of inactivated neurons (ann=...) needs "
                         "count_spikes=True.")
    run_chunk, start_state = _compiled(snn, chunk_length, period_mode, trace, count_spikes,
                                       record_values, jit_compile, devices)
    probe = _activation_probe(snn, ann)

    batches = []
    progress = keras.utils.Progbar(len(x), verbose=0 if verbose == 0 else 1)
    for begin in range(0, len(x), batch_size):
        batch = devices.put(_pad(x[begin:begin + batch_size], batch_size))
        batches.append(_simulate_batch(snn, batch, run_chunk, start_state(batch), span,
                                       chunk_length, period_mode, checkpoints, timesteps,
                                       trace, devices))
        progress.update(min(begin + batch_size, len(x)))
    return _collect(snn, batches, x, timesteps, checkpoints, probe, count_spikes,
                    record_values, trace)


def evaluate(snn, x, y, timesteps, *, mode=None, batch_size=None, jit_compile="auto",
             verbose="auto", distribute=False):
    """{T: top-1 accuracy} of `snn` on (x, y) after each T in `timesteps`.

    One logits-only simulation to the largest T, read at every T.

    Args:
        y: one integer label per image, shape (N,).
        timesteps: a positive int or a non-empty list of them.
        mode, batch_size, jit_compile, verbose, distribute: as for `simulate`.
    """
    check_spiking_network(snn, "bsnn_tf.evaluate")
    timesteps = sorted({check_timesteps(t) for t in np.atleast_1d(timesteps).tolist()})
    if not timesteps:
        raise ValueError("timesteps is empty; give at least one number of time steps.")
    check_labels(y, len(x))
    result = simulate(snn, x, timesteps=timesteps[-1], mode=mode, checkpoints=timesteps,
                      batch_size=batch_size, count_spikes=False, jit_compile=jit_compile,
                      verbose=verbose, distribute=distribute)
    return {t: result.accuracy(y, t) for t in timesteps}


def _check_checkpoints(checkpoints, timesteps, multiple):
    points = sorted({check_timesteps(t) for t in (checkpoints or [])} | {timesteps})
    if points[-1] > timesteps:
        raise ValueError(f"Checkpoint {points[-1]} is beyond timesteps={timesteps}.")
    check_whole_periods(points, multiple)
    return points


def _chunk_length(snn, batch_size, chunk, period_mode):
    """Time units per compiled chunk: whole periods, about 1 GiB of activations."""
    if chunk is None:
        per_period = batch_size * sum(int(np.prod(s)) for s in snn.unit_shapes.values()) * 4
        per_period *= 1 if period_mode else snn.phases
        chunk = int(np.clip(_MEMORY_BUDGET // max(per_period, 1), 1, 16 if period_mode else 4))
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk <= 0:
        raise ValueError(f"chunk must be a positive number of periods, got {chunk!r}.")
    return int(chunk) * (1 if period_mode else snn.phases)


def _compiled(snn, length, period_mode, trace, count_spikes, record_values, jit_compile, devices):
    """Compiled ({(skew, stop): run_chunk}, initial_state) for this chunk shape and devices,
    cached per SNN.

    A run_chunk is compiled per (skew, stop) of `SpikingNetwork.chunk_starts` on
    first use. Everything they return is batch-major (the readout totals and the
    trace too), so that `devices` can split and gather it along axis 0.
    """
    cache = _COMPILED.setdefault(snn, {})
    key = (length, period_mode, trace, count_spikes, record_values, jit_compile, type(devices))
    if key not in cache:
        variables = snn.variables

        def compile_chunk(schedule):
            skew, stop = schedule

            def run_chunk(x, state, start, end):
                state, totals, traced = snn.run(x, state, start, length, period_mode, end,
                                                trace, skew=skew, stop=stop)
                batch_major = lambda t: keras.ops.moveaxis(t, 0, 1)
                return state, batch_major(totals), {k: batch_major(v) for k, v in traced.items()}

            return devices.compile(run_chunk, variables, jit_compile)

        initial_state = lambda x: snn.initial_state(x, count_spikes, record_values)
        cache[key] = (_Variants(compile_chunk),
                      devices.compile(initial_state, variables, jit_compile))
    return cache[key]


class _Variants(dict):
    """{key: make(key)}, each made on first use."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = self.make(key)
        return self[key]


def _pad(batch, size):
    if len(batch) == size:
        return batch
    padding = np.zeros((size - len(batch),) + batch.shape[1:], batch.dtype)
    return np.concatenate([batch, padding])


def _simulate_batch(snn, batch, run_chunk, state, span, chunk_length, period_mode,
                    checkpoints, timesteps, trace, devices):
    per_unit = snn.phases if period_mode else 1
    wanted = {t // per_unit - 1: t for t in checkpoints}
    totals_at, traces = {}, []
    logits_only = not (trace or any(o.key in state for o in observers.OBSERVERS))
    for start, skew, stop in snn.chunk_starts(span, chunk_length, period_mode, logits_only):
        state, totals, traced = run_chunk[skew, stop](batch, state, np.int32(start),
                                                      np.int32(span))
        in_chunk = {t: position - start for position, t in wanted.items()
                    if start <= position < start + chunk_length}
        if in_chunk:
            host_totals = devices.to_numpy(totals)
            totals_at.update({t: host_totals[:, index] for t, index in in_chunk.items()})
        if trace:
            traces.append(devices.to_numpy(traced))
    outputs_at = {t: keras.ops.convert_to_numpy(snn.readout.logits(totals_at[t], t))
                  for t in checkpoints}
    host_state = devices.to_numpy({key: state[key] for key in ("spikes", "emitted")
                                   if key in state})
    trace_arrays = None
    if trace:
        trace_arrays = {k: np.concatenate([c[k] for c in traces], axis=1)[:, :span]
                        for k in traces[0]}
    return outputs_at, host_state, trace_arrays


def _collect(snn, batches, x, timesteps, checkpoints, probe, count_spikes, record_values,
             trace):
    count = len(x)
    cat = lambda parts: np.concatenate(parts)[:count]
    outputs_at = {t: cat([b[0][t] for b in batches]) for t in checkpoints}
    result = SimulationResult(
        timesteps=timesteps,
        outputs=outputs_at[timesteps],
        outputs_at=outputs_at,
        spike_counts=None,
        unit_spike_counts=None,
        neurons={layer.name: layer.neurons_per_unit * int(np.prod(snn.unit_shapes[layer.name]))
                 for layer in snn.spiking_layers()},
    )
    if count_spikes:
        spikes = {name: cat([b[1]["spikes"][name] for b in batches])
                  for name in batches[0][1]["spikes"]}
        result.spike_counts = {name: s.reshape(count, -1).sum(axis=1)
                               for name, s in spikes.items()}
        result.unit_spike_counts = {name: s.sum(axis=0) for name, s in spikes.items()}
    if record_values:
        result.values = {}
        for layer in snn.spiking_layers():
            emitted = cat([b[1]["emitted"][layer.name] for b in batches])
            scale = snn.scales.get(layer.name, 1.0)
            result.values[layer.name] = layer.value_per_period(emitted, timesteps) * scale
    if probe is not None:
        result.sin = _count_sin(probe, x, spikes)
    if trace:
        result.trace = {k: cat([b[2][k] for b in batches]) for k in batches[0][2]}
    return result


def _activation_probe(snn, ann):
    """A model giving the ANN activation coded by each neuron layer, or None."""
    if ann is None:
        return None
    names = [n for n in snn.ann_layers if snn.ann_layers[n] in {l.name for l in ann.layers}]
    outputs = [ann.get_layer(snn.ann_layers[n]).output for n in names]
    return names, keras.Model(ann.inputs, outputs)


def _count_sin(probe, x, spikes):
    names, model = probe
    activations = model.predict(x, verbose=0)
    activations = activations if isinstance(activations, list) else [activations]
    sin = {}
    for name, activation in zip(names, activations):
        inactive = activation <= 0
        sin[name] = (int(np.sum(inactive & (spikes[name] > 0))), int(np.sum(inactive)))
    return sin
