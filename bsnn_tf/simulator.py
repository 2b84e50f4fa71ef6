"""Simulator: a simulation fed batch by batch, its batch size and its compiled chunks.

A `Simulator` fixes a batch size (`default_batch_size`: within the memory
budgets), plans the chunks of a run once (`bsnn_tf.schedule`), compiles a
program per chunk schedule (cached per network, `_COMPILED`) and runs every
batch through the chunk loop (`bsnn_tf.engine.run_chunks`), adding it to the
running totals (`bsnn_tf.result`).

Example:
    >>> from bsnn_tf.simulator import default_batch_size
    >>> 1 <= default_batch_size(snn, count_spikes=False, timesteps=64) <= MAX_BATCH
    True
"""

import weakref

import keras
import numpy as np

from bsnn_tf import backend, observers
from bsnn_tf.engine import run_chunks
from bsnn_tf.result import Totals, activation_probe
from bsnn_tf.schedule import Chunk, chunk_bytes
from bsnn_tf.validation import (check_input_range, check_inputs, check_mode,
                                check_spiking_network, check_timesteps, check_whole_periods,
                                warn_before_first_readout)

_COMPILED = weakref.WeakKeyDictionary()
# The default batch keeps the simulation state (membranes, counters) within STATE_BYTES.
STATE_BYTES = 1 << 28
MAX_BATCH = 128


class Simulator:
    """A simulation fed batch by batch: `update(x)` simulates a batch and adds it to the
    running totals, `result()` gives the `SimulationResult` of everything fed so far.

    It takes `simulate`'s keywords (compiled once, for one batch size), plus:

    Args:
        keep_outputs: keep every image's logits for `result()`; "final" keeps them
            after T alone (a checkpoint's logits then cost no memory per image); False
            keeps none (memory flat in the number of images): read them from
            `update`'s return.
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
        if keep_outputs not in (True, False, "final"):
            raise ValueError(f'keep_outputs must be True, "final" or False, got '
                             f"{keep_outputs!r}.")
        self.devices = backend.devices(distribute)
        self._settings = dict(mode=mode, chunk=chunk, trace=trace, count_spikes=count_spikes,
                              count_window=count_window, record_values=record_values,
                              jit_compile=jit_compile)
        self.light_cone = _light_cone(count_spikes, record_values, trace, count_window)
        self._requested_batch = _check_batch_size(batch_size)
        self.batch_size = None
        self._range_checked = False
        if images is not None or batch_size is not None:
            self._compile(images)
        self._totals = Totals(snn, activation_probe(snn, ann), self.timesteps,
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
        x = checked_images(self.snn, x)
        if not self._range_checked:
            check_input_range(x, self.snn.calibration_range)
            self._range_checked = True
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


def checked_images(snn, x):
    """`x` checked as a batch of `snn`'s input images (`validation.check_inputs`)."""
    return check_inputs(x, snn.unit_shapes[snn.encoder.name], what="input batch")


def image_rank(snn):
    """The rank of one of `snn`'s input images."""
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
            chunk_bytes(snn.unit_shapes, snn.schedule.units_per_period(period_mode),
                        snn.compute_dtype), light_cone))
    return int(np.clip(batch, 1, MAX_BATCH))


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
