"""`convert(..., phases="auto")`: the lowest lossless latency, chosen from the data.

A BSNN's latency is set by K (phases per period) and the readout T; its
output is first valid at the first readout T = (D + 1) K, where it is the
K-bit quantised ANN. A larger K quantises more finely but makes every period
longer, so the K with the smallest lossless T depends on the net (deep
residual nets need more bits than shallow ones). The search measures it:

1. Hold out `LatencySearch.held_out` of the calibration images (a fixed
   random slice); calibrate on the rest.
2. For each K in `LatencySearch.phases`, ascending: convert, then measure
   the held-out accuracy on the period grid from the first readout to
   `periods` periods beyond it (the first readout from the first-readout
   twin, one ANN pass; the rest from one logits-only simulation). K's T* is
   the smallest grid T from which the held-out accuracy stays within the
   tolerance of the ANN's on the same images, up to its sampling noise
   (below), to the end of the grid.
3. Choose the (K, T*) with the smallest T*, ties to the smaller K. A K's T*
   is at least its first readout (D + 1) K, which grows with K, so the search
   stops at the first K whose first readout is not below the best T* found.
   With `LatencySearch.extend`, each smaller K that had no T* within its
   `periods` is then measured again, in descending order, on its grid up to
   the last T below the best T* (a small K may need more periods, yet beat a
   larger K's first readout; the largest is nearest to winning, and a T* it
   finds shortens the grids of the K below it); a T* found there becomes the
   best. Its record entry says `"extended"`. A smaller K's grid may end at the
   best T* itself: ties go to the smaller K. It is off by default: a K that
   needs more than `periods` periods approaches the ANN slowly, so its first
   passing T is the luckiest of many looks at a nearly flat curve (the K it
   chose on akamaster's ResNet-32 and -56 never reached the ANN on test images).
4. With calibration="finetune", steps 2-3 run with the fine-tuning's start
   calibration (`FineTuning.start`); then only the best K and the K below it
   are fine-tuned (at most two fine-tunes, each within `FineTuning`'s image
   budget), and only where they can pay: where that K's first readout is
   below the best T*. The choice is made again over all the curves.

The criterion. With `calibration_labels`, the SNN's accuracy on the held-out
images is compared with the ANN's on the same images. Without labels it is
agreement with the ANN's top-1 class (the ANN's is then 1). That is sound: the
ANN is the target, and since the two differ only on images where they disagree,
|accuracy(SNN) - accuracy(ANN)| <= 1 - agreement for any labels; it is stricter
than accuracy (an image both get wrong, differently, counts against the SNN).

Sampling noise. The tolerance is applied in images, as tolerance * n / 100 of the
n held-out images (0.1 pp of 1,000 images is one image; of 500, half a one: none).
Both nets are scored on the same images, so what is noisy is their paired
difference: at each T the SNN loses b images (the ANN right, the SNN wrong) and
gains c (the reverse). A T is lossless when b - c <= the tolerance in images +
sqrt(b + c), one standard error of the paired difference (McNemar's): the size of
the dips sampling alone makes from period to period. T* is the first grid T at
which b - c is within the tolerance itself and from which every later grid T is
lossless: a K is not rejected for a later dip of the size of the noise, while the
T chosen loses no more than the tolerance on the held-out images (the margin
alone would accept a loss of a standard error there). Without labels c is 0. The
search refuses fewer than `held_out.MIN_HELD_OUT` held-out images (one image over 1 pp).

The record (`SpikingNetwork.latency_search`, kept by a .keras save) holds each
K's curve, T* and seconds, what was chosen and why the search stopped. At the
chosen T: the images lost and gained, `loss_pp` and `standard_error_pp` (of the
paired difference; the first T that passes is the luckiest of many looks, so on
other images expect a loss nearer their sum), and `resampled`, how firm the
choice is (`stability.stability`: the share of bootstrap resamples of the
held-out images that choose the same K, and the spread of its T* on them).

Example:
    >>> snn = bsnn_tf.convert(ann, x_train[:200], phases="auto", tolerance=1.0,
    ...                       latency=LatencySearch(phases=(2, 3, 4)), verbose=0)
    >>> snn.latency_search["criterion"], snn.latency_search["held_out_images"]
    ('agreement with the ANN', 100)
    >>> chosen = snn.latency_search["chosen"]
    >>> (snn.phases, snn.timesteps) == (chosen["phases"], chosen["timesteps"])
    True
"""

import dataclasses
import math
import numbers
import time
import warnings

import numpy as np

from bsnn_tf import console
from bsnn_tf.conversion.held_out import split_held_out
from bsnn_tf.conversion.stability import stability
# Fine-tunes at most, with calibration="finetune": the best K and the K below it.
MAX_FINETUNES = 2


@dataclasses.dataclass(frozen=True)
class LatencySearch:
    """The settings of `convert(..., phases="auto")` (module docstring).

    Attributes:
        phases: the K searched, ascending.
        tolerance: percentage points of held-out accuracy (or agreement with the
            ANN) that the SNN may lose; applied as tolerance * n / 100 of the n
            held-out images, plus one standard error of the paired difference
            at T after T* (module docstring).
        held_out: the fraction of the calibration images held out to measure
            accuracy (the rest calibrate).
        periods: periods beyond each K's first readout that are measured; T* must
            hold up to the last of them.
        extend: measure a K with no T* within `periods` further, where a larger
            K's T* leaves room (module docstring, step 3).
        seed: of the held-out slice.
    """

    phases: tuple = (2, 3, 4, 5, 6, 7, 8)
    tolerance: float = 0.1
    held_out: float = 0.5
    periods: int = 12  # 8 passed over deep nets' best K (docs/RESULTS.md, "How many images")
    extend: bool = False
    seed: int = 0

    def check(self):
        """Raises a ValueError or TypeError naming the setting out of range."""
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, numbers.Real):
            raise TypeError(f"tolerance must be a number of percentage points in (0, 100), "
                            f"got {self.tolerance!r}.")
        if not 0 < self.tolerance < 100:
            raise ValueError(f"tolerance={self.tolerance} is out of range: give percentage "
                             "points in (0, 100), e.g. tolerance=0.1 (one image in 1,000).")
        phases = tuple(self.phases)
        if not phases or list(phases) != sorted(set(phases)):
            raise ValueError(f"LatencySearch.phases must be distinct K in ascending order, got "
                             f"{self.phases!r}.")
        if not 0 < self.held_out < 1:
            raise ValueError(f"LatencySearch.held_out must be a fraction in (0, 1), got "
                             f"{self.held_out!r}.")
        if isinstance(self.periods, bool) or not isinstance(self.periods, int) or self.periods < 0:
            raise ValueError(f"LatencySearch.periods must be an int >= 0, got {self.periods!r}.")
        if not isinstance(self.extend, bool):
            raise TypeError(f"LatencySearch.extend must be True or False, got {self.extend!r}.")
        return self


def search(model, data, labels, config, convert, settings, verbose="auto"):
    """The SNN at the (K, T) with the smallest lossless T (module docstring).

    Args:
        model: the ANN.
        data, labels: the calibration images and their labels (or None).
        config: the checked `ConversionConfig`; its `phases` is replaced by each K.
        convert: (model, images, config, labels, verbose) -> SpikingNetwork at one K.
        settings: a checked `LatencySearch`.

    Returns:
        The chosen SNN, its `timesteps` set to the chosen T and its
        `latency_search` to the record.
    """
    finetuning = config.calibration == "finetune"
    split = split_held_out(data, labels, settings, finetuning)
    reference = _reference(model, split, config.batch_size)
    allowed = settings.tolerance * len(split.x_held) / 100
    record = {"criterion": "accuracy" if labels is not None else "agreement with the ANN",
              "tolerance": settings.tolerance, "tolerance_images": allowed,
              "lossless_if": "losses - gains <= tolerance_images at T*, and <= "
                             "tolerance_images + sqrt(losses + gains) at every later T",
              "held_out_images": len(split.x_held), "calibration_images": len(split.x_fit),
              "reference_accuracy": reference.accuracy, "phases": list(settings.phases),
              "periods": settings.periods, "extend": settings.extend, "searched": []}
    start = time.time()
    measure = _Measure(model, split, reference, config, convert, settings, allowed, verbose)
    first_pass = dataclasses.replace(config, calibration=config.scale_mode)
    best, stop = measure.over(settings.phases, first_pass, record["searched"], None)
    if settings.extend:
        best = measure.extend(best, first_pass, record["searched"])
    record["stopped_before"] = stop
    if finetuning:
        candidates = _finetune_candidates(best, record["searched"], settings.phases)
        best, _ = measure.over(candidates, config, record["searched"], best)
        if settings.extend:
            best = measure.extend(best, config, record["searched"])
        record["finetuned"] = candidates
    chosen = best or _fallback(measure, settings.phases)
    record["chosen"] = {"phases": chosen.phases, "timesteps": chosen.timesteps,
                        "calibration": chosen.calibration, "converged": best is not None,
                        **_noise(record["searched"], chosen, len(split.x_held)),
                        "resampled": stability(
                            {key: (grid, right) for key, (_, grid, right)
                             in measure.measured.items()}, reference.ann_right,
                            lambda grid, counts: _first_lossless(grid, counts, allowed),
                            (chosen.phases, chosen.calibration), seed=settings.seed)}
    record["seconds"] = round(time.time() - start, 1)
    snn = chosen.snn
    snn.timesteps = chosen.timesteps
    snn.latency_search = record
    return snn


@dataclasses.dataclass
class _Reference:
    targets: np.ndarray  # the classes the SNN is scored against: labels, or the ANN's top-1
    ann_right: np.ndarray  # per held-out image, whether the ANN gets its target
    accuracy: float  # the ANN's score on them


def _reference(model, split, batch_size):
    ann_classes = np.argmax(model.predict(split.x_held, batch_size=batch_size or 128,
                                          verbose=0), -1)
    targets = ann_classes if split.y_held is None else split.y_held
    ann_right = ann_classes == targets
    return _Reference(targets, ann_right, float(np.mean(ann_right)))


def lossless(losses, gains, allowed):
    """Whether losing `losses` and gaining `gains` images against the ANN is within
    `allowed` images, up to one standard error of the paired difference (a later T's
    test: dips of the size of the noise pass).

    Example:
        >>> lossless(losses=4, gains=1, allowed=1), lossless(losses=4, gains=0, allowed=1)
        (True, False)
    """
    return losses - gains <= allowed + math.sqrt(losses + gains)


@dataclasses.dataclass
class _Candidate:
    phases: int
    timesteps: int
    calibration: str
    snn: object


class _Measure:
    """Converts at each K and measures its held-out curve and T*."""

    def __init__(self, model, split, reference, config, convert, settings, allowed, verbose):
        self.model, self.split, self.reference = model, split, reference
        self.config, self.convert, self.settings = config, convert, settings
        self.allowed, self.verbose = allowed, verbose
        self.first_period = None  # D + 1 + readout delay: first readout / K
        self.measured = {}  # (K, calibration) -> (SNN, grid, each held-out image right at each T)

    def over(self, phases, config, entries, best):
        """Measures each K of `phases` with `config`'s calibration; (the best candidate,
        the first K skipped because its first readout cannot beat it, or None)."""
        progress = console.Progress(len(phases), f"Searching K ({config.calibration})",
                                    unit="K", verbose=self.verbose, plain=True, every=0)
        for done, phases_k in enumerate(phases):
            if best is not None and self._earliest(phases_k) >= best.timesteps:
                if not progress.silent:
                    progress.say(f"Stopped before K={phases_k}: its first readout "
                                 f"{self._earliest(phases_k)} is not below the best T* "
                                 f"{best.timesteps} (K={best.phases}).")
                return best, phases_k
            entry, candidate = self.one(phases_k, config)
            entries.append(entry)
            if candidate is not None and (best is None or _beats(candidate, best)):
                best = candidate
            progress.update(done + 1)
            if not progress.silent:
                progress.say(_line(entry, self.reference.accuracy))
        return best, None

    def _earliest(self, phases_k):
        return self.first_period * phases_k

    def extend(self, best, config, entries):
        """The best candidate after measuring again, up to the last grid T that can beat
        the best T*, each K of `config`'s calibration whose grid ended short of it
        unconverged (its T* may lie past `periods`: module docstring), in descending
        order."""
        for index in sorted(range(len(entries)), key=lambda i: -entries[i]["phases"]):
            entry = entries[index]
            if (best is None or entry["calibration"] != config.calibration
                    or entry["t_star"] is not None):
                continue
            phases_k, first = entry["phases"], entry["first_readout"]
            end = first + (_last_winning(best, phases_k) - first) // phases_k * phases_k
            if end <= entry["curve"][-1][0]:
                continue
            snn = self.measured[(phases_k, config.calibration)][0]
            entries[index], candidate = self.one(phases_k, config, snn=snn, end=end)
            entries[index]["extended"] = True
            if candidate is not None and _beats(candidate, best):
                best = candidate
        return best

    def one(self, phases_k, config, snn=None, end=None):
        """(record entry, `_Candidate` or None) of K = `phases_k`, its grid from the first
        readout to `end` (default: `periods` periods past it)."""
        start = time.time()
        if snn is None:
            snn = self.convert(self.model, self.split.x_fit, config.with_phases(phases_k),
                               self.split.y_fit, 0)
        self.first_period = snn.first_readout // phases_k
        end = end or snn.first_readout + self.settings.periods * phases_k
        grid = list(range(snn.first_readout, end + 1, phases_k))
        right = self._right(snn, grid)
        counts = {t: _losses_and_gains(right[t], self.reference.ann_right) for t in grid}
        converged = _first_lossless(grid, counts, self.allowed)
        entry = {"phases": phases_k, "calibration": config.calibration,
                 "first_readout": snn.first_readout,
                 "curve": [[t, float(np.mean(right[t]))] for t in grid],
                 "losses_gains": [[t, *counts[t]] for t in grid], "t_star": converged,
                 "seconds": round(time.time() - start, 1)}
        rows = np.stack([right[t] for t in grid])
        self.measured[phases_k, config.calibration] = (snn, grid, rows)
        if converged is None:
            return entry, None
        return entry, _Candidate(phases_k, converged, config.calibration, snn)

    def _right(self, snn, grid):
        """{T: per held-out image, whether the SNN gets its target} on `grid`: the first
        readout from the twin where it is exact, every other T from one logits-only
        simulation."""
        from bsnn_tf.simulator import Simulator  # imported here: no import cycle

        x, targets = self.split.x_held, self.reference.targets
        right, simulated = {}, grid
        if snn.readout_start == snn.depth:  # no readout delay: the twin is exact there
            logits = snn.first_readout_model().predict(
                x, batch_size=self.config.batch_size or 128, verbose=0)
            right[grid[0]] = np.argmax(logits, -1) == targets
            simulated = grid[1:]
        if simulated:
            simulator = Simulator(snn, timesteps=simulated[-1], checkpoints=simulated,
                                  count_spikes=False, keep_outputs=False, images=len(x))
            logits = simulator.update(x)
            right.update({t: np.argmax(logits[t], -1) == targets for t in simulated})
        return right


def _beats(candidate, best):
    """Whether `candidate` has the smaller T, ties to the smaller K."""
    return (candidate.timesteps, candidate.phases) < (best.timesteps, best.phases)


def _last_winning(best, phases_k):
    """The last T at which K = `phases_k` can beat `best`: its T* itself for a smaller K
    (ties go to it), the T just below it for a larger."""
    return best.timesteps if phases_k < best.phases else best.timesteps - 1


def _losses_and_gains(snn_right, ann_right):
    """(images the ANN gets right and the SNN not, images the SNN gets right and the ANN not)."""
    return int(np.sum(ann_right & ~snn_right)), int(np.sum(snn_right & ~ann_right))


def _first_lossless(grid, counts, allowed):
    """The first T of `grid` within `allowed` images itself, from which every later T is
    `lossless` (within `allowed` up to the noise), or None."""
    first = None
    for t in reversed(grid):
        if not lossless(*counts[t], allowed):
            break
        losses, gains = counts[t]
        if losses - gains <= allowed:
            first = t
    return first


def _noise(entries, chosen, held_out):
    """At the chosen (K, T): the held-out images lost and gained against the ANN, the loss
    and one standard error of it (sqrt(losses + gains) images), in percentage points."""
    entry = next(e for e in entries
                 if (e["phases"], e["calibration"]) == (chosen.phases, chosen.calibration))
    losses, gains = next((b, c) for t, b, c in entry["losses_gains"] if t == chosen.timesteps)
    return {"losses": losses, "gains": gains,
            "loss_pp": round(100 * (losses - gains) / held_out, 3),
            "standard_error_pp": round(100 * math.sqrt(losses + gains) / held_out, 3)}


def _finetune_candidates(best, entries, phases):
    """The K worth fine-tuning: the best K and the one below it (the largest K and the one
    below it when none converged), where their first readout is below the best T*."""
    if best is None:
        around = phases[-MAX_FINETUNES:]
    else:
        index = list(phases).index(best.phases)
        around = phases[max(index - MAX_FINETUNES + 1, 0):index + 1]
    first = {entry["phases"]: entry["first_readout"] for entry in entries}
    return [k for k in around if k in first and (best is None or first[k] < best.timesteps)]


def _fallback(measure, phases):
    """No K reached the tolerance: the (K, calibration) with the highest score at the end of
    its grid (ties to the shorter T), with a warning."""
    at_end = {key: (float(np.mean(right[-1])), grid[-1], snn)
              for key, (snn, grid, right) in measure.measured.items()}
    (phases_k, calibration), (score, end, snn) = max(
        at_end.items(), key=lambda item: (item[1][0], -item[1][1]))
    warnings.warn(
        f"phases='auto': no K in {list(phases)} kept the held-out accuracy within "
        f"{measure.settings.tolerance} pp of the ANN's within {measure.settings.periods} "
        f"periods of its first readout; chose K={phases_k} at T={end} ({score:.2%} against "
        f"{measure.reference.accuracy:.2%}). Widen tolerance, search more periods "
        "(LatencySearch.periods) or larger K, or calibrate better.", stacklevel=4)
    return _Candidate(phases_k, end, calibration, snn)


def _line(entry, reference):
    """One progress line per K searched."""
    first, last = entry["curve"][0], entry["curve"][-1]
    return (f"K={entry['phases']} ({entry['calibration']}): first readout T={first[0]} "
            f"{first[1]:.2%}, T={last[0]} {last[1]:.2%} (ANN {reference:.2%}), T* "
            f"{entry['t_star']}, {entry['seconds']:.0f} s")
