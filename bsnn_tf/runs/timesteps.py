"""Which T a run measures: the largest (`default_timesteps`), the checkpoints between
(`default_checkpoints`, `measured_timesteps`), and T*, where accuracy reaches the ANN's
(`converged_at`).

Example:
    >>> from bsnn_tf import runs
    >>> runs.default_checkpoints(64, 4, first_readout=44)
    [44, 48, 52, 56, 60, 64]
"""

from bsnn_tf import methods

# The largest T when --timesteps is not given: for BSNN, the first readout ((D + 1) K,
# where its output is the K-bit quantised ANN) plus EXTRA_PERIODS periods, in which the
# nets measured in docs/RESULTS.md reach their ANN (T*); for the rate and phase baselines,
# which have no first readout, BASELINE_TIMESTEPS per dataset.
EXTRA_PERIODS = 8
BASELINE_TIMESTEPS = {"mnist": 64, "cifar10": 1024, "cifar100": 1024, "imagenet": 1024}
# Past the first readout the accuracy is measured at every period for this many periods,
# then at powers of two.
EVERY_PERIOD_FOR = 16
# Accuracy within this of the ANN's counts as converged (0.1 percentage points).
TOLERANCE = 0.001


def default_timesteps(snns, dataset):
    """The largest T of a run: for each SNN with a first readout (BSNN) that readout
    plus `EXTRA_PERIODS` periods, or the T that phases="auto" chose where later; for the
    baselines `BASELINE_TIMESTEPS[dataset]`; the largest of these, so that every method
    is measured at every T."""
    return max(max(snn.first_readout + EXTRA_PERIODS * snn.phases, _searched_t(snn))
               if has_first_readout(snn)
               else BASELINE_TIMESTEPS.get(dataset, BASELINE_TIMESTEPS["imagenet"])
               for snn in snns)


def _searched_t(snn):
    """The T that phases="auto" chose (`SpikingNetwork.latency_search`), else 0."""
    return (snn.latency_search or {}).get("chosen", {}).get("timesteps", 0)


def has_first_readout(snn):
    return methods.get(snn.method).readout_waits_for_output


def first_measured(snn, timesteps):
    """The first T at which `snn`'s accuracy is measured: its first readout (BSNN; at
    most T), else 1."""
    return min(snn.first_readout, timesteps) if has_first_readout(snn) else 1


def default_checkpoints(timesteps, multiple=1, first_readout=None):
    """The T at which accuracy is measured when --checkpoints is not given.

    Without a `first_readout`: powers of two from one period (`multiple`
    steps) up to `timesteps`, each rounded to a multiple of `multiple`, plus
    `timesteps`. With one (BSNN): every period from the first readout on, for
    `EVERY_PERIOD_FOR` periods, then powers of two, plus `timesteps`; nothing
    before it, where the output says nothing about the input.

    Example:
        >>> default_checkpoints(64, 8)
        [8, 16, 32, 64]
        >>> default_checkpoints(60, 5)
        [10, 15, 30, 60]
        >>> default_checkpoints(64, 4, first_readout=44)
        [44, 48, 52, 56, 60, 64]
    """
    points, power = {timesteps}, 1
    while power < timesteps:
        if power >= multiple and (first_readout is None or power > first_readout):
            points.add(round(power / multiple) * multiple)
        power *= 2
    if first_readout is not None:
        last = min(timesteps, first_readout + EVERY_PERIOD_FOR * multiple)
        points.update(range(first_readout, last + 1, multiple))
    return sorted(t for t in points if t <= timesteps)


def measured_timesteps(config, snns, timesteps):
    """The T at which accuracy is measured: --checkpoints, or the union of each SNN's
    `default_checkpoints`; and T."""
    if config.checkpoints:
        return sorted({*config.checkpoints, timesteps})
    points = set()
    for snn in snns:
        first = snn.first_readout if has_first_readout(snn) else None
        points.update(default_checkpoints(timesteps, config.period_steps, first))
    return sorted(points)


def converged_at(accuracy, ann_accuracy, tolerance=TOLERANCE):
    """The smallest T from which accuracy stays at most `tolerance` below the ANN's, or None.

    Example:
        >>> converged_at({8: 0.11, 16: 0.985, 32: 0.992, 64: 0.9925}, ann_accuracy=0.9923)
        32
    """
    first = None
    for t in sorted(accuracy, reverse=True):
        # Accuracies are ratios of counts: keep a difference of exactly `tolerance`.
        if accuracy[t] is None or accuracy[t] < ann_accuracy - tolerance - 1e-9:
            break
        first = t
    return first
