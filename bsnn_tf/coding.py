"""Phase coding: the phase weight S(t), the K-bit quantiser Q and the input layer.

A period has K phases. A spike at phase k carries the weight S = 2**-(1 + k),
so the spikes of one period spell a K-bit binary fraction, most significant
bit first. This module is the only place that knows this code.

Example:
    >>> import numpy as np
    >>> from bsnn_tf import coding
    >>> float(coding.quantize(np.float32(0.8), phases=3))   # 0.110b
    0.75
"""

import keras
import numpy as np
from keras import ops

from bsnn_tf import backend
from bsnn_tf.roles import Role

MAX_PHASES = 24


def check_phases(phases):
    """Raises a ValueError unless `phases` is an int in 1..24."""
    if isinstance(phases, bool) or not isinstance(phases, (int, np.integer)):
        raise TypeError(f"phases must be an int in 1..{MAX_PHASES}, got {phases!r}.")
    if not 1 <= phases <= MAX_PHASES:
        raise ValueError(
            f"phases={phases} is out of range: use 1..{MAX_PHASES} "
            "(a period of K phases carries K bits; float32 holds 24)."
        )
    return int(phases)


def phase_weights(phases, dtype="float32"):
    """The K spike weights of a period, [1/2, 1/4, ..., 2**-K], as a tensor."""
    return ops.convert_to_tensor(2.0 ** -np.arange(1, phases + 1), dtype=dtype)


def phase_weight(t, phases, dtype="float32"):
    """S(t) = 2**-(1 + t mod K) for integer time steps `t` (exact, by table lookup)."""
    return ops.take(phase_weights(phases, dtype), ops.mod(t, phases))


def quantize(v, phases):
    """Q(v): what a neuron holding membrane `v` emits in one spike stage.

    Greedy firing at thresholds 1/2, 1/4, ..., 2**-K emits the K-bit truncation
    of v, saturating at 1 - 2**-K and silent for v < 2**-K.
    """
    levels = 2.0**phases
    return uniform_levels(v, levels, 1.0 - 1.0 / levels)


def uniform_levels(v, levels, top, offset=0.0):
    """clip(floor(v * levels + offset) / levels, 0, top): `v` on a grid of 1 / `levels`.

    `offset` (in grid steps) is a neuron's membrane at rest: 0 truncates,
    0.5 rounds to the nearest level.
    """
    return ops.clip(ops.floor(v * levels + offset) / levels, 0.0, top)


def bit_at(q, phase):
    """Bit `phase` (0 = most significant) of the K-bit fractions `q`, as 0/1 floats."""
    return ops.mod(ops.floor(q * 2.0 ** (phase + 1)), 2.0)


def count_bits(q, phases):
    """Number of spikes that carry the K-bit fractions `q` (a population count)."""
    n = ops.cast(ops.round(q * 2.0**phases), "int32")
    return ops.cast(backend.population_count(n), q.dtype)


@keras.saving.register_keras_serializable(package="bsnn_tf")
class PhaseEncoder(keras.layers.Layer):
    """Input layer: turns an image into input current or input spikes.

    `encoding="real"`: the normalised image `x / scale` is a constant current
    that each first-layer neuron takes through its drive (BSNN: once per
    period; see `neurons`). `encoding="spike"`: inputs in [0, 1] are sent as
    the phase code of Q(x / scale), every period.

    Args:
        phases: K, phases per period.
        encoding: "real" or "spike".
        scale: lambda_0, the input normalisation (1 for real input).

    Example:
        >>> import numpy as np
        >>> from bsnn_tf.clock import Clock, Constant
        >>> enc = PhaseEncoder(phases=4, encoding="spike")
        >>> x = Constant(np.full((1, 1), 0.75, "float32"))     # Q(0.75) = 0.1100b
        >>> spikes, _ = enc.run([x], (), Clock(ops.arange(4), period_mode=False))
        >>> np.asarray(spikes)[:, 0, 0].tolist()
        [0.5, 0.25, 0.0, 0.0]
    """

    role = Role.INPUT

    def __init__(self, phases=8, encoding="real", scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if encoding not in ("real", "spike"):
            raise ValueError(f"encoding must be 'real' or 'spike', got {encoding!r}.")
        self.phases = check_phases(phases)
        self.encoding = encoding
        self.scale = float(scale)

    @property
    def is_constant(self):
        """True when the input enters as a constant current (real encoding)."""
        return self.encoding == "real"

    def call(self, x):
        return self.current(x)

    def current(self, x):
        """The constant input current x / scale (real encoding)."""
        return ops.cast(x, self.compute_dtype) / self.scale

    def initial_state(self, batch_shape):
        return ()

    def run(self, inputs, state, clock):
        """Input spikes over `clock`, time-major: (len(clock), N, ...).

        `inputs` is [Constant(x)], the image batch. Step mode emits S(t)
        where bit t mod K of Q(x / scale) is set; period mode emits the whole
        period value Q(x / scale).
        """
        (x,) = inputs
        q = quantize(self.current(x.value), self.phases)
        if clock.period_mode:
            return ops.broadcast_to(q[None], (len(clock),) + tuple(ops.shape(q))), state
        phase = ops.mod(clock.time, self.phases)
        planes = ops.stack([bit_at(q, k) for k in range(self.phases)])
        weights = phase_weights(self.phases, self.compute_dtype)
        per_step = ops.take(planes, phase, axis=0)
        weight = ops.take(weights, phase)
        return per_step * ops.reshape(weight, (-1,) + (1,) * len(ops.shape(q))), state

    def get_config(self):
        config = super().get_config()
        config.update(phases=self.phases, encoding=self.encoding, scale=self.scale)
        return config
