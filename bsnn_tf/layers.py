"""Layers of a converted SNN besides the neurons: synchronous layer, spiking
max gate, channel affine synapse, readout, and `Synapse`, which runs any
stateless Keras layer over time.

All act on time-major sequences (T, N, ...) through
`run(inputs, state, clock) -> (outputs, state)`, the interface of every
simulation layer (`bsnn_tf.clock`).
"""

import keras
from keras import ops

from bsnn_tf import neurons
from bsnn_tf.roles import Role


class Synapse:
    """A stateless Keras layer (Conv2D, Dense, Add, ...) as a simulation layer.

    It applies the layer to every time unit of a chunk at once, as one batch
    of len(clock) x N: synapses have no dynamics of their own.

    Example:
        >>> import numpy as np
        >>> from bsnn_tf.clock import Clock
        >>> dense = keras.layers.Dense(3, use_bias=False)
        >>> spikes = np.ones((5, 2, 4), "float32")        # (time, batch, features)
        >>> out, state = Synapse(dense).run([spikes], (), Clock(ops.arange(5), False))
        >>> tuple(out.shape), state
        ((5, 2, 3), ())
    """

    role = Role.SYNAPSE

    def __init__(self, layer):
        self.layer = layer

    def initial_state(self, batch_shape):
        return ()

    def run(self, inputs, state, clock):
        length = inputs[0].shape[0]
        merged = [ops.reshape(x, (-1,) + tuple(x.shape[2:])) for x in inputs]
        outputs = self.layer(merged if len(merged) > 1 else merged[0])
        return ops.reshape(outputs, (length, -1) + tuple(outputs.shape[1:])), state


@keras.saving.register_keras_serializable(package="bsnn_tf")
class SynchronousLayer(neurons.BistableIF):
    """Synchronous neurons (paper 3.5): BIF units with identity input, no bias.

    A BIF layer passes information on one period late. On a residual block's
    shortcut, which crosses one spiking layer fewer than the conv path, a
    synchronous layer delays the shortcut by exactly one period: its input is
    a K-bit value y and Q(y) = y. In the ANN it is a ReLU on a non-negative
    signal, the identity. `bsnn_tf.conversion.synchronize` decides where they go.
    """

    def __init__(self, phases=8, start_period=0, initial_membrane=0.0, **kwargs):
        kwargs.pop("bias_shape", None)
        super().__init__(phases=phases, start_period=start_period, bias_shape=(),
                         initial_membrane=initial_membrane, **kwargs)


@keras.saving.register_keras_serializable(package="bsnn_tf")
class SpikingMaxPool(keras.layers.Layer):
    """Max pooling for spikes: each window passes on its most active unit.

    The winner of a window is the unit with the largest cumulative output so
    far, the current period (BSNN) or step (baselines) included; ties go to
    the larger current output. In BSNN step mode the gate collects a period's
    spikes and emits the winner's period value at the period's last phase, so
    the integrating neurons downstream receive what period mode gives them.

    Args:
        pool_size, strides, padding: as `keras.layers.MaxPooling2D`.
        per_period: BSNN gate (decides once per period) or per-step gate.
        phases: K, used by the per-period gate in step mode.
    """

    role = Role.GATE

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", per_period=True,
                 phases=8, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size)
        self.strides = _pair(strides) if strides is not None else self.pool_size
        self.padding = padding.lower()
        self.per_period = bool(per_period)
        self.phases = int(phases)

    def initial_state(self, batch_shape):
        """The cumulative input per unit, for a batch of inputs of `batch_shape`."""
        return (ops.zeros(batch_shape, self.compute_dtype),)

    def run(self, inputs, state, clock):
        """Gates a time-major chunk; in step mode the chunk must hold whole periods."""
        (inputs,) = inputs
        (cumulative,) = state
        if self.per_period and not clock.period_mode:
            per_period_input = ops.sum(_split_periods(inputs, self.phases), axis=1)
            gated, cumulative = self._gate(per_period_input, cumulative)
            return _at_last_phase(gated, self.phases), (cumulative,)
        gated, cumulative = self._gate(inputs, cumulative)
        return gated, (cumulative,)

    def call(self, inputs):
        """Max pooling of an ANN activation (the gate's function in the ANN)."""
        return ops.max_pool(inputs, self.pool_size, self.strides, self.padding)

    def _gate(self, values, cumulative):
        totals = cumulative[None] + ops.cumsum(values, axis=0)
        length = ops.shape(values)[0]
        flat = lambda x: ops.reshape(x, (-1,) + tuple(x.shape[2:]))
        windows_total = list(self._windows(flat(totals)))
        windows_value = list(self._windows(flat(values)))
        best = windows_total[0]
        for total in windows_total[1:]:
            best = ops.maximum(best, total)
        gated = ops.zeros_like(best)
        for total, value in zip(windows_total, windows_value):
            gated = ops.maximum(gated, ops.where(total >= best, value, ops.zeros_like(value)))
        gated = ops.reshape(gated, (length, -1) + tuple(gated.shape[1:]))
        return gated, totals[-1]

    def _windows(self, x):
        """Yields, per offset in the pooling window, the strided slice it selects."""
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        height, width = x.shape[1], x.shape[2]
        out_h, pad_h = _pool_geometry(height, ph, sh, self.padding)
        out_w, pad_w = _pool_geometry(width, pw, sw, self.padding)
        if pad_h != (0, 0) or pad_w != (0, 0):
            x = ops.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
        for i in range(ph):
            for j in range(pw):
                yield x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        out_h, _ = _pool_geometry(height, self.pool_size[0], self.strides[0], self.padding)
        out_w, _ = _pool_geometry(width, self.pool_size[1], self.strides[1], self.padding)
        return (batch, out_h, out_w, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            pool_size=self.pool_size, strides=self.strides, padding=self.padding,
            per_period=self.per_period, phases=self.phases,
        )
        return config


@keras.saving.register_keras_serializable(package="bsnn_tf")
class ChannelAffine(keras.layers.Layer):
    """Per-channel affine synapse `x * scale (+ shift)`.

    Holds a BatchNormalization that could not be folded into a Conv/Dense, and
    the rescaling that normalisation puts on identity shortcuts
    (lambda_in / lambda_out, paper 3.5).
    """

    def __init__(self, scale_shape=(), use_shift=False, **kwargs):
        super().__init__(**kwargs)
        self.scale_shape = tuple(scale_shape)
        self.use_shift = bool(use_shift)

    def build(self, input_shape=None):
        self.scale = self.add_weight(
            shape=self.scale_shape, initializer="ones", trainable=False, name="scale"
        )
        if self.use_shift:
            self.shift = self.add_weight(
                shape=self.scale_shape, initializer="zeros", trainable=False, name="shift"
            )

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs):
        outputs = inputs * ops.cast(self.scale, inputs.dtype)
        if self.use_shift:
            outputs = outputs + ops.cast(self.shift, inputs.dtype)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(scale_shape=self.scale_shape, use_shift=self.use_shift)
        return config


@keras.saving.register_keras_serializable(package="bsnn_tf")
class Readout(keras.layers.Layer):
    """The output layer: a non-spiking accumulator of synaptic current.

    It counts current from its start period on (the network's spiking depth D
    for BSNN, 0 for the baselines) and reads out in ANN units:
    logits(T) = accumulated / ((T - D K) / K) + bias.

    Args:
        phases: K of the code (1 for rate coding).
        start_period: D, the first period that is counted.
        bias_shape: shape of the output bias, (classes,).
    """

    role = Role.READOUT

    def __init__(self, phases=8, start_period=0, bias_shape=(), **kwargs):
        super().__init__(**kwargs)
        self.phases = int(phases)
        self.start_period = int(start_period)
        self.bias_shape = tuple(bias_shape)

    @property
    def start_step(self):
        return self.start_period * self.phases

    def build(self, input_shape=None):
        self.bias = self.add_weight(
            shape=self.bias_shape, initializer="zeros", trainable=False, name="bias"
        )

    def initial_state(self, batch_shape):
        return (ops.zeros(batch_shape, self.compute_dtype),)

    def run(self, inputs, state, clock):
        """Accumulates a time-major chunk of current; returns the running totals.

        Current at or after `clock.end` is not counted.
        """
        (current,) = inputs
        (accumulated,) = state
        start = self.start_period if clock.period_mode else self.start_step
        counted = ops.cast(clock.time >= start, current.dtype) * clock.counted(current.dtype)
        mask = ops.reshape(counted, (-1,) + (1,) * (len(current.shape) - 1))
        totals = accumulated[None] + ops.cumsum(current * mask, axis=0)
        return totals, (totals[-1],)

    def logits(self, accumulated, timesteps):
        """Readout in ANN units after `timesteps` steps (the bias before any count)."""
        periods = (timesteps - self.start_step) / self.phases
        bias = ops.cast(self.bias, accumulated.dtype)
        if periods <= 0:
            return ops.zeros_like(accumulated) + bias
        return accumulated / periods + bias

    def get_config(self):
        config = super().get_config()
        config.update(
            phases=self.phases, start_period=self.start_period, bias_shape=self.bias_shape
        )
        return config


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _pool_geometry(size, pool, stride, padding):
    """Output size and (before, after) zero padding of a pooling axis, as in TensorFlow."""
    if padding == "valid":
        return (size - pool) // stride + 1, (0, 0)
    out = -(-size // stride)
    total = max((out - 1) * stride + pool - size, 0)
    return out, (total // 2, total - total // 2)


def _split_periods(x, phases):
    return ops.reshape(x, (-1, phases) + tuple(x.shape[1:]))


def _at_last_phase(per_period, phases):
    """(P, ...) period values -> (P * K, ...) steps, each value at its period's last phase."""
    silent = ops.zeros((ops.shape(per_period)[0], phases - 1) + tuple(ops.shape(per_period)[1:]),
                       per_period.dtype)
    steps = ops.concatenate([silent, per_period[:, None]], axis=1)
    return ops.reshape(steps, (-1,) + tuple(per_period.shape[1:]))
