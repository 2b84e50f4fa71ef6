"""The held-out slice of `phases="auto"`: the calibration images split into those
that calibrate and those on which the search measures accuracy.

Example:
    >>> import numpy as np
    >>> from bsnn_tf.conversion import LatencySearch
    >>> split = split_held_out(np.zeros((300, 4)), None, LatencySearch(), finetuning=False)
    >>> len(split.x_fit), len(split.x_held)
    (150, 150)
"""

import dataclasses
import math

import numpy as np

from bsnn_tf.conversion.finetune import MIN_IMAGES as FINETUNE_MIN_IMAGES
from bsnn_tf.validation import check_labels

# Fewer held-out images than this: one image would be more than 1 percentage point.
MIN_HELD_OUT = 100


@dataclasses.dataclass
class Split:
    """The calibration images that calibrate (`x_fit`, `y_fit`) and those held out."""

    x_fit: np.ndarray
    y_fit: np.ndarray | None
    x_held: np.ndarray
    y_held: np.ndarray | None


def split_held_out(data, labels, settings, finetuning):
    """`data` (and `labels`, or None) split by `settings` (a `LatencySearch`): its
    `held_out` fraction, a fixed random slice (`seed`), held out; the rest calibrate.

    Raises:
        ValueError: fewer than `MIN_HELD_OUT` held out, or too few left to calibrate
            (fine-tuning needs `finetune.MIN_IMAGES`); the message says how many to pass.
    """
    if labels is not None:
        labels = check_labels(labels, len(data))
    held = int(round(settings.held_out * len(data)))
    fit_minimum = FINETUNE_MIN_IMAGES if finetuning else 1
    if held < MIN_HELD_OUT or len(data) - held < fit_minimum:
        raise ValueError(
            f"phases='auto' holds out {settings.held_out:.0%} of the {len(data)} calibration "
            f"images to measure the latency: it needs at least {MIN_HELD_OUT} held out (on "
            f"fewer, one image is over 1 pp) and {fit_minimum} left to calibrate on"
            + (" (calibration='finetune')" if finetuning else "") + f". Pass at least "
            f"{_needed(settings.held_out, fit_minimum)} images, or give phases.")
    order = np.random.default_rng(settings.seed).permutation(len(data))
    fit, held_out = np.sort(order[held:]), np.sort(order[:held])
    pick = lambda rows: None if labels is None else labels[rows]
    return Split(data[fit], pick(fit), data[held_out], pick(held_out))


def _needed(fraction, fit_minimum):
    held = math.ceil((MIN_HELD_OUT - 0.5) / fraction)
    fit = math.ceil((fit_minimum + 0.5) / (1 - fraction))
    return max(held, fit)
