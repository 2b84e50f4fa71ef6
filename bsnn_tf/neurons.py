"""Spiking neurons as recurrent Keras layers: BistableIF (BSNN), PhaseIF, IF.

Each layer runs over a time-major sequence of input currents, like a Keras
RNN cell: `initial_state` gives the membrane state, `run` advances it over a
chunk of time and returns the emitted values and the new state, so a
simulation can go on chunk after chunk with memory that does not grow with T.
A neuron owns its bias: bias and real-valued input are constant currents
that reach the neuron scaled by its *drive* (see docs/DESIGN.md).

Example:
    >>> import numpy as np
    >>> from bsnn_tf.neurons import BistableIF
    >>> unit = BistableIF(phases=3)
    >>> current = np.zeros((9, 1, 1), "float32"); current[:3] = 0.75 / 3
    >>> np.asarray(unit(current))[3:6, 0, 0]     # period 1 emits Q(0.75) = 0.11b
    array([0.5 , 0.25, 0.  ], dtype=float32)
"""

import keras
from keras import ops

from bsnn_tf import backend, coding
from bsnn_tf.clock import Clock, split_constant
from bsnn_tf.roles import Role


def bif_first_output(current, phases, initial_membrane=0.0):
    """What a BIF unit at rest emits in its first output period for a constant input
    `current` integrated over one period: Q(current + rest), the K-bit rounding
    (`initial_membrane` 0.5) or truncation (0) of it, saturating at 1 - 2**-K.

    `BistableIF.mean_output`, the first-readout twin and `bsnn_tf.quantized.QuantizedReLU`
    all compute it here.
    """
    return coding.quantize(current + initial_membrane * 2.0**-phases, phases)


class SpikingNeuron(keras.layers.Layer):
    """Base class: a population of spiking neurons with threshold 1.

    Args:
        start_period: first period in which the layer's bias is injected
            (BSNN bias gating; ignored by the baselines).
        bias_shape: shape of the bias current, broadcastable to the units.
        initial_membrane: membrane potential at rest, in units of the smallest
            spike weight (2**-K, or 1 for IF). 0 is the spec; 0.5 makes every
            neuron round its output to the nearest level instead of truncating
            it, which removes a bias of half a level per layer that otherwise
            adds up with depth (docs/RESULTS.md, time-step study).
    """

    role = Role.NEURON

    supports_period = False
    neurons_per_unit = 1

    def __init__(self, phases=8, start_period=0, bias_shape=(), initial_membrane=0.0, **kwargs):
        super().__init__(**kwargs)
        self.phases = coding.check_phases(phases)
        self.start_period = int(start_period)
        self.bias_shape = tuple(bias_shape)
        self.initial_membrane = float(initial_membrane)

    @property
    def smallest_spike(self):
        """Weight of the least significant spike: 2**-K (1 for rate coding)."""
        return 2.0**-self.phases

    def build(self, input_shape=None):
        self.bias = self.add_weight(
            shape=self.bias_shape, initializer="zeros", trainable=False, name="bias"
        )

    def initial_state(self, batch_shape):
        """Membrane state at rest for a batch of `batch_shape` = (N, *units)."""
        rest = self.initial_membrane * self.smallest_spike
        return tuple(ops.full(batch_shape, rest, self.compute_dtype)
                     for _ in range(self.num_states))

    def run(self, inputs, state, clock):
        """Advances the neurons over `clock` (see `bsnn_tf.clock`).

        Args:
            inputs: [synaptic current], time-major (len(clock), N, *units), or
                [Constant(current)] for a constant input such as the
                real-valued image; [] for a layer driven by its bias only.
            state: from `initial_state` or the previous `run`.
            clock: a `bsnn_tf.clock.Clock`; period mode runs one period per
                time unit (BSNN only).

        Returns:
            (emitted values, time-major; new state).
        """
        if clock.period_mode and not self.supports_period:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has no period-level dynamics; "
                "use mode='step'."
            )
        current, constant = split_constant(inputs)
        bias = ops.cast(self.bias, self.compute_dtype)
        constant = bias if constant is None else bias + constant
        drive = self.drive(clock.time, clock.period_mode)

        def advance(carry, inputs):
            t, drive_t = inputs[0], inputs[1]
            total = drive_t * constant
            if current is not None:
                total = total + inputs[2]
            emitted, carry = self.update(total, carry, t, clock.period_mode)
            return carry, emitted

        inputs = (clock.time, drive) if current is None else (clock.time, drive, current)
        state, emitted = backend.time_scan(advance, tuple(state), inputs, len(clock))
        return emitted, state

    def call(self, currents):
        """Runs the neurons from rest over `currents` (T, N, *units) in step mode."""
        currents = ops.cast(currents, self.compute_dtype)
        state = self.initial_state(tuple(ops.shape(currents)[1:]))
        clock = Clock(ops.arange(ops.shape(currents)[0], dtype="int32"), period_mode=False)
        emitted, _ = self.run([currents], state, clock)
        return emitted

    def spike_count(self, emitted, period_mode=False):
        """Spikes behind `emitted` values."""
        return ops.cast(emitted > 0, self.compute_dtype)

    @property
    def code_phases(self):
        """Steps per code period: a unit's output per period approximates its activation."""
        return self.phases

    @property
    def first_output_step(self):
        """First step at which the layer emits what it was given."""
        return 0

    def active_periods(self, first_input):
        """(first period to simulate, first period that can emit), given the first
        period in which the input current can be non-zero.

        Before the first, the state provably stays at rest, so the simulation
        skips those periods (`SpikingNetwork.run_chunk`). The baselines inject their
        bias from step 0, so they are active from the start.
        """
        return 0, 0

    def input_needed_until(self, output_until):
        """The period from which the input can no longer change what the layer emits
        before period `output_until` (the light cone's trailing edge: `SpikingNetwork.needed_until`).

        A baseline neuron emits in the step it integrates: no delay.
        """
        return output_until

    def mean_output(self, current, timesteps):
        """What the output per code period averages to after `timesteps` steps.

        `current` is a constant input current (a normalised pre-activation);
        the result is the quantised activation that calibration fits the
        network to (`bsnn_tf.conversion.calibration`).
        """
        raise NotImplementedError

    def value_per_period(self, emitted_total, timesteps):
        """The ANN-scale estimate (times lambda) of a unit from its total emitted value."""
        periods = (timesteps - self.first_output_step) / self.code_phases
        return emitted_total / periods if periods > 0 else 0.0 * emitted_total

    def get_config(self):
        config = super().get_config()
        config.update(
            phases=self.phases, start_period=self.start_period, bias_shape=self.bias_shape,
            initial_membrane=self.initial_membrane,
        )
        return config


@keras.saving.register_keras_serializable(package="bsnn_tf")
class BistableIF(SpikingNeuron):
    """Units of two bistable IF neurons in antiphase (paper 3.4).

    Neuron A is in its spike stage in even periods, B in odd periods; the
    other integrates. A spike-stage neuron receives nothing and fires by the
    phase rule (threshold S(t), subtract S(t)), so in period p the unit emits
    exactly Q(V) of what it integrated in period p - 1. The state is kept as
    (spiking neuron, integrating neuron); the two swap at each period's end.

    Constant currents (bias, real input) are injected once per period, at
    phase 0, and the bias only from `start_period` on (bias gating).
    """

    supports_period = True
    neurons_per_unit = 2
    num_states = 2

    @property
    def first_output_step(self):
        return (self.start_period + 1) * self.phases

    def drive(self, time, period_mode=False):
        started = ops.cast(time >= self.start_period * (1 if period_mode else self.phases), "bool")
        if not period_mode:
            started = ops.logical_and(started, ops.equal(ops.mod(time, self.phases), 0))
        return ops.cast(started, self.compute_dtype)

    def update(self, current, state, t, period_mode):
        spiking, integrating = state
        if period_mode:
            emitted = coding.quantize(spiking, self.phases)
            return emitted, (integrating + current, spiking - emitted)
        threshold = coding.phase_weight(t, self.phases, self.compute_dtype)
        emitted = ops.cast(spiking >= threshold, self.compute_dtype) * threshold
        spiking = spiking - emitted
        integrating = integrating + current
        period_ends = ops.equal(ops.mod(t, self.phases), self.phases - 1)
        state = (
            ops.where(period_ends, integrating, spiking),
            ops.where(period_ends, spiking, integrating),
        )
        return emitted, state

    def active_periods(self, first_input):
        """A BIF unit integrates from its first input (or its bias, from `start_period`)
        and emits one period later; at a rest below one level it emits nothing before."""
        if self.initial_membrane >= 1:  # emits Q(rest) > 0 from period 0
            return 0, 0
        begin = min(first_input, self.start_period)
        return begin, begin + 1

    def input_needed_until(self, output_until):
        """A BIF unit emits in period p what it integrated in period p - 1."""
        return output_until - 1

    def spike_count(self, emitted, period_mode=False):
        if period_mode:
            return coding.count_bits(emitted, self.phases)
        return super().spike_count(emitted)

    def mean_output(self, current, timesteps=None):
        """Q(current + rest): exactly what the unit emits in its first output
        period, whatever T (the first readout is the K-bit quantised ANN)."""
        return bif_first_output(current, self.phases, self.initial_membrane)


@keras.saving.register_keras_serializable(package="bsnn_tf")
class PhaseIF(SpikingNeuron):
    """Weighted-spike IF neurons (Kim et al. 2018), the phase-coding baseline.

    Input arrives at every step; constant currents are weighted by S(t). A
    neuron fires when V >= S(t), emits S(t) and subtracts it, so it can fire
    early or late against the code (phase lead / lag) and spike while its
    ANN activation is zero (SIN).
    """

    num_states = 1

    def drive(self, time, period_mode=False):
        return coding.phase_weight(time, self.phases, self.compute_dtype)

    def mean_output(self, current, timesteps):
        """Approximately the K-bit code averaged over T / K periods:
        1 / (2**K * periods) steps, saturating at 1 - 2**-K."""
        levels = 2.0**self.phases * max(timesteps // self.phases, 1)
        return coding.uniform_levels(current, levels, 1.0 - self.smallest_spike,
                                     self.initial_membrane)

    def update(self, current, state, t, period_mode):
        (membrane,) = state
        membrane = membrane + current
        threshold = coding.phase_weight(t, self.phases, self.compute_dtype)
        emitted = ops.cast(membrane >= threshold, self.compute_dtype) * threshold
        return emitted, (membrane - emitted,)


@keras.saving.register_keras_serializable(package="bsnn_tf")
class IF(SpikingNeuron):
    """Integrate-and-fire neurons with soft reset (Rueckauer et al. 2017), the rate baseline.

    Constant currents arrive at every step; a neuron fires when V >= 1 and
    subtracts 1.
    """

    num_states = 1

    @property
    def code_phases(self):
        return 1

    @property
    def smallest_spike(self):
        return 1.0

    def drive(self, time, period_mode=False):
        return ops.ones(ops.shape(time), self.compute_dtype)

    def mean_output(self, current, timesteps):
        """Approximately the spike count over T, divided by T: steps of 1 / T
        up to 1 (the SNN Calibration model of an IF neuron at a target T)."""
        return coding.uniform_levels(current, float(timesteps), 1.0, self.initial_membrane)

    def update(self, current, state, t, period_mode):
        (membrane,) = state
        membrane = membrane + current
        emitted = ops.cast(membrane >= 1.0, self.compute_dtype)
        return emitted, (membrane - emitted,)

