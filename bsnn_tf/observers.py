"""Observers: totals kept per neuron unit beside the dynamics, never part of them.

An observer watches what each neuron layer emits over a chunk and adds it to
a total of shape (N, *units). `SpikingNetwork.start_state` starts the
totals of the observers it is asked for; `SpikingNetwork.run_chunk` advances them.
A logits-only simulation carries none, so it compiles without counters.

Example:
    >>> import numpy as np
    >>> from keras import ops
    >>> from bsnn_tf.clock import Clock
    >>> from bsnn_tf.neurons import BistableIF
    >>> emitted = np.array([[[0.5]], [[0.25]], [[0.0]]], "float32")   # (time, N, units)
    >>> counter = SpikeCounter()
    >>> total = counter.observe(BistableIF(phases=3), emitted, np.zeros((1, 1), "float32"),
    ...                         Clock(ops.arange(3), period_mode=False))
    >>> np.asarray(total).tolist()
    [[2.0]]
"""

from keras import ops


class SpikeCounter:
    """Spikes per unit, counted before the clock's end (`SpikingNetwork.run_chunk` sets
    it to the end of each layer's count window)."""

    key = "spikes"

    def observe(self, layer, emitted, total, clock):
        counted = clock.counted(emitted.dtype)
        spikes = layer.spike_count(emitted, clock.period_mode)
        return total + ops.tensordot(counted, spikes, axes=1)  # one pass: weighted sum over time


class EmittedValues:
    """Each unit's emitted value summed from its layer's first output on (for `verify`)."""

    key = "emitted"

    def observe(self, layer, emitted, total, clock):
        first_output = layer.first_output_step // clock.steps_per_unit(layer.phases)
        valid = clock.counted(emitted.dtype) * ops.cast(clock.time >= first_output,
                                                         emitted.dtype)
        return total + ops.sum(emitted * _per_unit(valid, emitted), axis=0)


SPIKES, EMITTED = SpikeCounter(), EmittedValues()
OBSERVERS = (SPIKES, EMITTED)

# Which time units spike statistics cover (`bsnn_tf.simulate(count_window=...)`):
# "schedule": each neuron layer only in the periods a logits-only run simulates it
# (from `SpikingNetwork.active_from` to `needed_until` the run's end), "whole": all T steps.
COUNT_WINDOWS = ("schedule", "whole")


def check_count_window(count_window):
    """`count_window`, or a ValueError naming it and the choices."""
    if count_window not in COUNT_WINDOWS:
        raise ValueError(f"count_window must be one of {COUNT_WINDOWS}, got {count_window!r}.")
    return count_window


def chosen(count_spikes, record_values):
    """The observers a simulation asks for."""
    return [observer for observer, wanted in ((SPIKES, count_spikes), (EMITTED, record_values))
            if wanted]


def _per_unit(weights, emitted):
    """(time,) weights shaped to broadcast over time-major `emitted`."""
    return ops.reshape(weights, (-1,) + (1,) * (len(emitted.shape) - 1))
