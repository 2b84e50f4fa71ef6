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

from bsnn_tf import backend, batches, console, observers
from bsnn_tf.engine import run_chunks
from bsnn_tf.schedule import Chunk
from bsnn_tf.validation import (check_inputs, check_labels, check_mode, check_spiking_network,
                                check_timesteps, check_whole_periods, warn_before_first_readout)

_COMPILED = weakref.WeakKeyDictionary()
# The default batch keeps the simulation state (membranes, counters) within STATE_BYTES.
STATE_BYTES = 1 << 28
MAX_BATCH = 128


@dataclasses.dataclass
class SimulationResult:
    """What a simulation produced.

    Attributes:
        timesteps: T, steps simulated.
        outputs: (N, classes) logits after T steps, in ANN units (None from a
            `Simulator` with `keep_outputs=False`).
        outputs_at: {T_c: (N, classes)} logits after each checkpoint T_c (likewise).
        spike_counts: {layer: (N,)} spikes per sample; None with `count_spikes=False`.
        unit_spike_counts: {layer: (*units)} spikes per unit, summed over samples
            (None with `count_spikes=False`).
        count_window: the time steps the spike counts (and SIN) cover:
            "schedule", each layer's periods in the logits-only run's schedule
            (from its `active_from` to its `needed_until` T); "whole", all T;
            None with `count_spikes=False`.
        counted_steps: {layer: steps its spikes were counted in}
            (`Schedule.count_steps`); the firing rates divide by these.
        neurons: {layer: neurons per sample} (a BIF unit has two).
        values: {layer: (N, *units)} each unit's output per period in ANN
            units (emitted value / periods * lambda); only with `record_values`.
        sin: {layer: (spiking inactivated units, inactivated units)} summed
            over samples; only when the ANN is given.
        trace: {layer: (N, T, *units)} what every neuron and gate emitted at
            every step (period in period mode); only with `trace=True`.
    """

    timesteps: int
    outputs: np.ndarray | None
    outputs_at: dict | None
    spike_counts: dict | None
    unit_spike_counts: dict | None
    neurons: dict
    values: dict | None = None
    sin: dict | None = None
    trace: dict | None = None
    count_window: str | None = None
    counted_steps: dict | None = None

    def accuracy(self, labels, timesteps=None):
        """Top-1 accuracy of the logits after `timesteps` (default T).

        Args:
            labels: one integer class per simulated image, shape (N,).
        """
        if self.outputs is None:
            raise ValueError("This result kept no logits (Simulator(keep_outputs=False)); "
                             "count the correct ones from Simulator.update's return.")
        logits = self.outputs if timesteps is None else self.outputs_at[timesteps]
        labels = check_labels(labels, len(logits), logits.shape[-1])
        return float(np.mean(np.argmax(logits, axis=-1) == labels))

    def firing_rates(self):
        """{layer: spikes per neuron per step}, averaged over samples.

        A layer's spikes are divided by the steps they were counted in
        (`counted_steps`): with `count_window="schedule"` the steps of the
        periods the layer runs in, not T; 0 for a layer that never runs.
        """
        if self.spike_counts is None:
            raise ValueError("This simulation did not count spikes; run bsnn_tf.simulate "
                             "with count_spikes=True.")
        steps = self.counted_steps or dict.fromkeys(self.spike_counts, self.timesteps)
        return {name: float(np.mean(counts) / max(self.neurons[name] * steps[name], 1))
                for name, counts in self.spike_counts.items()}

    def sin_rates(self):
        """{layer: fraction of inactivated units (ANN activation <= 0) that spiked}."""
        return {name: spiked / max(inactive, 1) for name, (spiked, inactive) in self.sin.items()}


def simulate(snn, x, *, timesteps, mode=None, checkpoints=None, batch_size=None, ann=None,
             count_spikes=True, record_values=False, trace=False, chunk=None, jit_compile="auto",
             verbose="auto", distribute=False, count_window="schedule"):
    """Simulates `snn` on images `x` for `timesteps` steps.

    Memory is bounded by the network and the batch: spike counts and SIN are
    reduced batch by batch (only per-image totals are kept); only
    `record_values` and `trace`, which ask for per-unit arrays, keep them per image.

    Args:
        snn: a SpikingNetwork from `bsnn_tf.convert`.
        x: images (N, *input_shape), preprocessed like the ANN's input: an array,
            or a stream of batches (`tf.data.Dataset`, `keras.utils.PyDataset`,
            generator; labels in it are ignored), read once (`bsnn_tf.batches`).
        timesteps: T, a positive int.
        mode: "period" (exact and fast; BSNN only, T and checkpoints multiples
            of the phases) or "step" (every time step). Default: the SNN's mode.
        checkpoints: step counts at which to also record the logits.
        batch_size: images per compiled batch (default: `default_batch_size`, at
            most N; for a stream, at most its first batch).
        ann: the source keras.Model; with it, spikes of inactivated neurons are counted.
        count_spikes: count spikes per layer and unit (metrics, TensorBoard, SIN);
            False compiles a logits-only simulation that carries no counters.
        record_values: also return each unit's output per period (for `verify`).
        trace: also return every neuron's and gate's output at every step (small nets).
        chunk: periods per compiled chunk (default: `SpikingNetwork.chunk_length`).
        jit_compile: XLA-compile the simulation (True), or not; "auto": XLA
            except with TensorFlow on a CPU (see `bsnn_tf.backend`).
        verbose: 0 silent, 1 or "auto" a progress bar over images.
        distribute: split every batch over all local devices (data parallel;
            `bsnn_tf.backend.devices`), the batch size rounded up to a multiple
            of the device count. The results equal a one-device run.
        count_window: which steps the spike counts, SIN and firing rates cover.
            "schedule" (default): each layer only in the periods the logits-only
            run simulates it, from its `active_from` to its `needed_until` T
            (the light cone of the readout at T); the run simulates that
            schedule too: it costs the logits-only run plus the count itself.
            "whole": every layer over all T steps (every layer simulated to T).

    Returns:
        A SimulationResult.

    Warns:
        EarlyReadoutWarning: T or a checkpoint comes before the SNN's first
            readout (`SpikingNetwork.first_readout`).
    """
    check_spiking_network(snn, "bsnn_tf.simulate")
    images = batches.count(x)
    if images is not None:
        x = _checked_images(snn, x)  # before compiling anything
    simulator = Simulator(snn, timesteps=timesteps, mode=mode, checkpoints=checkpoints,
                          batch_size=batch_size, ann=ann, count_spikes=count_spikes,
                          count_window=count_window, record_values=record_values, trace=trace,
                          chunk=chunk, jit_compile=jit_compile, distribute=distribute,
                          images=images)
    progress = console.Progress(images, f"Simulating {snn.name}", verbose=verbose)
    for batch, _ in batches.iterate(x, simulator.batch_size, image_rank=_image_rank(snn)):
        simulator.update(batch)
        progress.add(len(batch))
    progress.finish()
    return simulator.result()


class Simulator:
    """A simulation fed batch by batch: `update(x)` simulates a batch and adds it to the
    running totals, `result()` gives the `SimulationResult` of everything fed so far.

    It takes `simulate`'s keywords (compiled once, for one batch size), plus:

    Args:
        keep_outputs: keep every image's logits for `result()`; False keeps none
            (memory flat in the number of images): read them from `update`'s return.
        images: the number of images to come, if known (caps the default batch).

    Example:
        >>> simulator = bsnn_tf.Simulator(snn, timesteps=64, checkpoints=[32],
        ...                                          count_spikes=False, keep_outputs=False)
        >>> logits = simulator.update(x_test[:10])
        >>> sorted(logits), logits[64].shape
        ([32, 64], (10, 10))
    """

    def __init__(self, snn, *, timesteps, mode=None, checkpoints=None, batch_size=None,
                 ann=None, count_spikes=True, count_window="schedule", record_values=False,
                 trace=False, chunk=None, jit_compile="auto", distribute=False,
                 keep_outputs=True, images=None):
        check_spiking_network(snn, "bsnn_tf.simulate")
        self.snn = snn
        self.period_mode = check_mode(snn, mode or snn.mode)
        self.timesteps = check_timesteps(timesteps)
        self.span = snn.schedule.time_units(self.timesteps, self.period_mode)  # in units
        self.checkpoints = _check_checkpoints(checkpoints, self.timesteps,
                                              snn.schedule.steps_per_unit(self.period_mode))
        warn_before_first_readout(snn, self.checkpoints)
        if ann is not None and not count_spikes:
            raise ValueError("Counting spikes of inactivated neurons (ann=...) needs "
                             "count_spikes=True.")
        observers.check_count_window(count_window)
        self.devices = backend.devices(distribute)
        self._settings = dict(mode=mode, chunk=chunk, trace=trace, count_spikes=count_spikes,
                              count_window=count_window, record_values=record_values,
                              jit_compile=jit_compile)
        self.light_cone = _light_cone(count_spikes, record_values, trace, count_window)
        self._requested_batch = _check_batch_size(batch_size)
        self.batch_size = None
        if images is not None or batch_size is not None:
            self._compile(images)
        self._totals = _Totals(snn, _activation_probe(snn, ann), self.timesteps,
                               self.checkpoints, count_window if count_spikes else None,
                               keep_outputs)

    def _compile(self, images):
        """Fixes the batch size (at most `images`) and compiles the chunks for it."""
        settings, snn = self._settings, self.snn
        default = lambda: default_batch_size(snn, settings["count_spikes"],
                                             settings["record_values"], self.timesteps,
                                             settings["mode"],
                                             count_window=settings["count_window"])
        self.batch_size = _batch_size(images, self._requested_batch, self.devices.count,
                                      default)
        self.chunk_length = _chunk_length(snn, self.batch_size // self.devices.count,
                                          self.span, settings["chunk"], self.period_mode,
                                          self.light_cone)
        self._chunks = snn.chunk_starts(self.span, self.chunk_length, self.period_mode,
                                        self.light_cone)
        self._run_chunk, self._start_state = _compiled(
            snn, self.chunk_length, self.period_mode, settings["trace"],
            settings["count_spikes"], settings["record_values"], settings["jit_compile"],
            self.devices, settings["count_window"])

    def update(self, x):
        """Simulates the images `x` (any number); returns {T: their logits} at every
        checkpoint and at `timesteps`."""
        x = _checked_images(self.snn, x)
        if self.batch_size is None:
            self._compile(len(x))
        outputs = {t: [] for t in self.checkpoints}
        for begin in range(0, len(x), self.batch_size):
            images = x[begin:begin + self.batch_size]
            batch = _pad(images, self.batch_size)
            placed = self.devices.put(batch)
            outputs_at, state, traced = self._simulate_batch(placed)
            self._totals.add(batch, len(images), outputs_at, state, traced)
            for t in self.checkpoints:
                outputs[t].append(outputs_at[t][:len(images)])
        return {t: np.concatenate(parts) for t, parts in outputs.items()}

    def _simulate_batch(self, batch):
        """One batch: ({T: logits}, the observers' totals as numpy, the trace or None)."""
        snn, devices, length = self.snn, self.devices, self.chunk_length
        trace = self._settings["trace"]
        steps_per_unit = snn.schedule.steps_per_unit(self.period_mode)
        wanted = {t // steps_per_unit - 1: t for t in self.checkpoints}
        totals_at, traces = {}, []

        def advance(state, start, skew, stop):
            state, totals, traced = self._run_chunk[skew, stop](batch, state, np.int32(start),
                                                                np.int32(self.span))
            in_chunk = {t: position - start for position, t in wanted.items()
                        if start <= position < start + length}
            if in_chunk:
                host_totals = devices.to_numpy(totals)
                totals_at.update({t: host_totals[:, index] for t, index in in_chunk.items()})
            if trace:
                traces.append(devices.to_numpy(traced))
            return state

        state = run_chunks(self._chunks, length, advance, self._start_state(batch))
        outputs_at = {t: keras.ops.convert_to_numpy(snn.readout.logits(totals_at[t], t))
                      for t in self.checkpoints}
        observed = devices.to_numpy({o.key: state[o.key] for o in observers.OBSERVERS
                                     if o.key in state})
        trace_arrays = None
        if trace:
            trace_arrays = {k: np.concatenate([c[k] for c in traces], axis=1)[:, :self.span]
                            for k in traces[0]}
        return outputs_at, observed, trace_arrays

    def result(self):
        """The `SimulationResult` of every image fed so far."""
        if not self._totals.images:
            raise ValueError("Nothing was simulated: the images were an empty stream. Pass "
                             "at least one batch of images.")
        return self._totals.result()


def _checked_images(snn, x):
    return check_inputs(x, snn.unit_shapes[snn.encoder.name], what="input batch")


def _classes(snn):
    return snn.unit_shapes[snn.readout.name][-1]


def _image_rank(snn):
    return len(snn.unit_shapes[snn.encoder.name])


def default_batch_size(snn, count_spikes=True, record_values=False, timesteps=None,
                       mode=None, budget=STATE_BYTES, count_window="schedule"):
    """Images per batch: at most MAX_BATCH, as many as keep the simulation state
    (`snn.state_bytes`) within `budget` bytes, and, given `timesteps`, as many as let one
    chunk span the periods each layer runs (`Schedule.batch_for_chunks`), so that
    few chunks are compiled. Memory then depends on the network, not on N or T."""
    batch = budget // max(snn.state_bytes(count_spikes, record_values), 1)
    if timesteps is not None:
        period_mode = check_mode(snn, mode or snn.mode)
        light_cone = _light_cone(count_spikes, record_values, False, count_window)
        batch = min(batch, snn.schedule.batch_for_chunks(
            snn.schedule.time_units(timesteps, period_mode), period_mode,
            snn.chunk_bytes(period_mode), light_cone))
    return int(np.clip(batch, 1, MAX_BATCH))


def evaluate(snn, x, y=None, timesteps=None, *, mode=None, batch_size=None,
             jit_compile="auto", verbose="auto", distribute=False):
    """{T: top-1 accuracy} of `snn` on (x, y) after each T in `timesteps`.

    One logits-only simulation to the largest T, read at every T; only the
    correct counts are kept, so memory does not grow with the number of images.

    Args:
        x: images (an array), or a stream of (images, labels) batches (`bsnn_tf.batches`).
        y: one integer label per image, shape (N,); None for a stream.
        timesteps: a positive int or a non-empty list of them.
        mode, batch_size, jit_compile, verbose, distribute: as for `simulate`.
    """
    check_spiking_network(snn, "bsnn_tf.evaluate")
    if timesteps is None:
        raise TypeError("evaluate needs timesteps: a positive int or a list of them.")
    timesteps = sorted({check_timesteps(t) for t in np.atleast_1d(timesteps).tolist()})
    if not timesteps:
        raise ValueError("timesteps is empty; give at least one number of time steps.")
    images = batches.count(x)
    if images is not None:
        if y is None:
            raise ValueError("evaluate needs the labels y of the images x (one integer "
                             "class per image), or a stream of (images, labels) batches.")
        check_labels(y, len(x), _classes(snn))
        x = _checked_images(snn, x)
    simulator = Simulator(snn, timesteps=timesteps[-1], mode=mode, checkpoints=timesteps,
                          batch_size=batch_size, count_spikes=False, jit_compile=jit_compile,
                          distribute=distribute, keep_outputs=False, images=images)
    progress = console.Progress(images, f"Simulating {snn.name}", verbose=verbose)
    correct, seen = dict.fromkeys(timesteps, 0), 0
    for batch, labels in batches.iterate(x, simulator.batch_size, labels=y,
                                         image_rank=_image_rank(snn)):
        if labels is None:
            raise ValueError("The stream's batches have no labels: evaluate needs "
                             "(images, labels) batches.")
        labels = check_labels(labels, len(batch), _classes(snn))
        logits = simulator.update(batch)
        for t in timesteps:
            correct[t] += int(np.sum(np.argmax(logits[t], axis=-1) == labels))
        seen += len(batch)
        progress.add(len(batch))
    progress.finish()
    if not seen:
        raise ValueError("Nothing was evaluated: the stream gave no images.")
    return {t: correct[t] / seen for t in timesteps}


def _check_checkpoints(checkpoints, timesteps, multiple):
    points = sorted({check_timesteps(t) for t in (checkpoints or [])} | {timesteps})
    if points[-1] > timesteps:
        raise ValueError(f"Checkpoint {points[-1]} is beyond timesteps={timesteps}.")
    check_whole_periods(points, multiple)
    return points


def _check_batch_size(batch_size):
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    return batch_size


def _batch_size(count, batch_size, devices, default):
    """The batch size: given or `default()` per device, at most `count` (if known: no
    padding beyond the images), rounded up to a multiple of the device count."""
    if batch_size is None:
        batch_size = default() * devices
    batch_size = int(batch_size) if count is None else min(int(batch_size), count)
    return -(-batch_size // devices) * devices


def _light_cone(count_spikes, record_values, trace, count_window):
    """Whether a run may stop each layer at the light cone's trailing edge
    (`Schedule.chunk_starts(logits_only=True)`): it keeps nothing but the
    logits and the spike counts on the schedule."""
    return not (record_values or trace) and (not count_spikes or count_window == "schedule")


def _chunk_length(snn, batch_size, span, chunk, period_mode, logits_only):
    """Time units per compiled chunk: `chunk` periods, or `snn.chunk_length`."""
    if chunk is None:
        return snn.chunk_length(batch_size, span, period_mode, logits_only)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk <= 0:
        raise ValueError(f"chunk must be a positive number of periods, got {chunk!r}.")
    units_per_period = snn.schedule.units_per_period(period_mode)
    return min(int(chunk) * units_per_period, -(-span // units_per_period) * units_per_period)


def _compiled(snn, length, period_mode, trace, count_spikes, record_values, jit_compile, devices,
              count_window="whole"):
    """Compiled ({(skew, stop): run_chunk}, start_state) for this chunk shape and devices,
    cached per SNN.

    A run_chunk is compiled per (skew, stop) of `Schedule.chunk_starts` on
    first use. Everything they return is batch-major (the readout totals and the
    trace too), so that `devices` can split and gather it along axis 0.
    """
    cache = _COMPILED.setdefault(snn, {})
    key = (length, period_mode, trace, count_spikes, record_values, jit_compile, type(devices),
           count_window)
    if key not in cache:
        variables = snn.variables

        def compile_chunk(schedule):
            skew, stop = schedule

            def run_chunk(x, state, start, end):
                result = snn.run_chunk(x, state, Chunk(start, length, period_mode, end, skew,
                                                       stop, trace, count_window))
                batch_major = lambda t: keras.ops.moveaxis(t, 0, 1)
                return (result.state, batch_major(result.totals),
                        {k: batch_major(v) for k, v in result.trace.items()})

            return devices.compile(run_chunk, variables, jit_compile)

        start_state = lambda x: snn.start_state(x, count_spikes, record_values)
        cache[key] = (_Variants(compile_chunk),
                      devices.compile(start_state, variables, jit_compile))
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


class _Totals:
    """A simulation's results, reduced batch by batch as they come.

    Per image it keeps the logits and each layer's spike total; per unit the
    spike counts and SIN summed over images; per image and unit only what was
    asked for by name (`record_values`, `trace`).
    """

    def __init__(self, snn, probe, timesteps, checkpoints, count_window=None,
                 keep_outputs=True):
        self.snn, self.probe = snn, probe
        self.timesteps, self.checkpoints = timesteps, checkpoints
        self.count_window = count_window  # None: no spikes counted
        self.outputs_at = {t: [] for t in checkpoints} if keep_outputs else None
        self.images = 0
        self.spikes, self.unit_spikes, self.sin = {}, {}, {}
        self.values, self.traces = {}, {}

    def add(self, batch, count, outputs_at, observed, traced):
        """Adds the first `count` images of a (padded) batch."""
        self.images += count
        for t in self.checkpoints if self.outputs_at is not None else ():
            self.outputs_at[t].append(outputs_at[t][:count])
        if observers.SPIKES.key in observed:
            spikes = {name: value[:count]
                      for name, value in observed[observers.SPIKES.key].items()}
            for name, value in spikes.items():
                self.spikes.setdefault(name, []).append(value.reshape(count, -1).sum(axis=1))
                self.unit_spikes[name] = self.unit_spikes.get(name, 0) + value.sum(axis=0)
            if self.probe is not None:
                self._add_sin(batch, count, spikes)
        if observers.EMITTED.key in observed:
            for layer in self.snn.spiking_layers():
                emitted = observed[observers.EMITTED.key][layer.name][:count]
                value = (layer.value_per_period(emitted, self.timesteps)
                         * self.snn.scales.get(layer.name, 1.0))
                self.values.setdefault(layer.name, []).append(np.asarray(value))
        for name, value in (traced or {}).items():
            self.traces.setdefault(name, []).append(value[:count])

    def _add_sin(self, batch, count, spikes):
        names, model = self.probe
        activations = model.predict_on_batch(batch)
        activations = activations if isinstance(activations, list) else [activations]
        for name, activation in zip(names, activations):
            inactive = np.asarray(activation)[:count] <= 0
            spiked, total = self.sin.get(name, (0, 0))
            self.sin[name] = (spiked + int(np.sum(inactive & (spikes[name] > 0))),
                              total + int(np.sum(inactive)))

    def result(self):
        outputs_at = (None if self.outputs_at is None else
                      {t: np.concatenate(parts) for t, parts in self.outputs_at.items()})
        snn = self.snn
        return SimulationResult(
            timesteps=self.timesteps,
            outputs=None if outputs_at is None else outputs_at[self.timesteps],
            outputs_at=outputs_at,
            spike_counts={n: np.concatenate(p) for n, p in self.spikes.items()} or None,
            unit_spike_counts=self.unit_spikes or None,
            neurons={layer.name: layer.neurons_per_unit
                     * int(np.prod(snn.unit_shapes[layer.name]))
                     for layer in snn.spiking_layers()},
            values={n: np.concatenate(p) for n, p in self.values.items()} or None,
            sin=self.sin if self.probe is not None else None,
            trace={n: np.concatenate(p) for n, p in self.traces.items()} or None,
            count_window=self.count_window,
            counted_steps=(None if self.count_window is None
                           else snn.schedule.count_steps(self.timesteps, self.count_window)),
        )


def _activation_probe(snn, ann):
    """A model giving the ANN activation coded by each neuron layer, or None."""
    if ann is None:
        return None
    names = [n for n in snn.ann_layers if snn.ann_layers[n] in {l.name for l in ann.layers}]
    outputs = [ann.get_layer(snn.ann_layers[n]).output for n in names]
    return names, keras.Model(ann.inputs, outputs)
