"""What every simulation layer is given besides its state: a Clock and its inputs.

Every layer of a SpikingNetwork (encoder, synapse, neuron, gate, readout)
has the same two methods:

    initial_state(batch_shape) -> state             (a tuple; () if stateless)
    run(inputs, state, clock) -> (outputs, state)

`inputs` holds one entry per input layer: a time-major sequence
(len(clock), N, ...) or, for an input that is the same at every time unit
(the real-valued image and synapses on it), a `Constant`. `outputs` is
time-major too.

Example:
    >>> import numpy as np
    >>> from keras import ops
    >>> clock = Clock(ops.arange(8, dtype="int32"), period_mode=False, end=6)
    >>> len(clock), np.asarray(clock.counted("float32")).tolist()
    (8, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    >>> len(clock.window(5)), len(clock.window(2, 4))
    (3, 2)
"""

import collections

from keras import ops


class Clock:
    """The time units a chunk of simulation covers.

    Args:
        time: int32 vector of the units' absolute indices: steps, or periods
            in period mode.
        period_mode: True when a unit is a whole period of K steps (BSNN's
            exact period-level dynamics), False when it is one step.
        end: units at or after `end` are not counted (by the readout and the
            observers); None counts all.
    """

    def __init__(self, time, period_mode, end=None):
        self.time = time
        self.period_mode = bool(period_mode)
        self.end = end

    def __len__(self):
        return int(self.time.shape[0])

    def window(self, begin, stop=None):
        """The same clock over its units `begin` to `stop` (exclusive; None: to its end)."""
        return Clock(self.time[begin:stop], self.period_mode, self.end)

    def counted(self, dtype):
        """1 for each unit before `end`, else 0, as `dtype`."""
        if self.end is None:
            return ops.ones(ops.shape(self.time), dtype)
        return ops.cast(self.time < self.end, dtype)

    def steps_per_unit(self, phases):
        """K in period mode, 1 in step mode."""
        return phases if self.period_mode else 1


Constant = collections.namedtuple("Constant", ["value"])
Constant.__doc__ = """An input that is the same at every time unit: (N, ...), not time-major."""


def split_constant(inputs):
    """(sum of the time-major inputs or None, sum of the `Constant` inputs or None)."""
    sequences = [x for x in inputs if not isinstance(x, Constant)]
    constants = [x.value for x in inputs if isinstance(x, Constant)]
    total = lambda xs: None if not xs else xs[0] if len(xs) == 1 else sum(xs[1:], xs[0])
    return total(sequences), total(constants)
