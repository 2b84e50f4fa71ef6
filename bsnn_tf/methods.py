"""The conversion methods, one record each: the one place where a method's choices live.

Stages ask the record (`get(name)`) instead of testing the method's name:
`convert` takes its neuron, default K and membrane; `synchronize` whether it
synchronizes; `build` its max gate and readout; `SpikingNetwork` its modes.

Example:
    >>> from bsnn_tf import methods
    >>> methods.get("bsnn").default_phases
    4
    >>> methods.get("rate").default_mode
    'step'
"""

import dataclasses

from bsnn_tf import neurons


@dataclasses.dataclass(frozen=True)
class Method:
    """What sets a conversion method apart.

    Attributes:
        name: as passed to `bsnn_tf.convert(method=...)`.
        neuron: the neuron layer class (`bsnn_tf.neurons`).
        default_phases: K when `convert` is given no `phases`.
        initial_membrane: the neurons' membrane at rest, in units of the
            smallest spike weight, when `convert` is given none.
        readout_per_period: the readout adds up each K-step period as one
            output (phase-coded spikes); else each step (rate code).
        readout_waits_for_output: the readout starts at the first period
            with valid output ((D + 1) K steps); else at step 0.
        synchronous: synchronous layers delay the short branches of merges.
        max_pool_per_period: the max gate picks its winner once a period.
    """

    name: str
    neuron: type
    default_phases: int
    initial_membrane: float
    readout_per_period: bool
    readout_waits_for_output: bool
    synchronous: bool
    max_pool_per_period: bool

    @property
    def period_mode(self):
        """Whether a whole period can be computed at once, exactly."""
        return self.neuron.supports_period

    @property
    def default_mode(self):
        """The simulation mode a converted network uses unless told otherwise."""
        return "period" if self.period_mode else "step"


METHODS = {
    method.name: method for method in (
        # K = 4: the time-step and calibration studies in docs/RESULTS.md.
        Method("bsnn", neurons.BistableIF, default_phases=4, initial_membrane=0.5,
               readout_per_period=True, readout_waits_for_output=True, synchronous=True,
               max_pool_per_period=True),
        # Kim et al. 2018: K = 8, membrane at rest 0.
        Method("phase", neurons.PhaseIF, default_phases=8, initial_membrane=0.0,
               readout_per_period=True, readout_waits_for_output=False, synchronous=False,
               max_pool_per_period=False),
        # Rueckauer et al. 2017: IF with soft reset; K only sets the calibration grid.
        Method("rate", neurons.IF, default_phases=8, initial_membrane=0.0,
               readout_per_period=False, readout_waits_for_output=False, synchronous=False,
               max_pool_per_period=False),
    )
}
DEFAULT_PHASES = {name: method.default_phases for name, method in METHODS.items()}


def get(name):
    """The `Method` called `name`; a ValueError listing the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}.")
    return METHODS[name]
