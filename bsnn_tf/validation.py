"""Validation: the library's checks of what a user passes in, made before any work starts.

The library's arguments (time steps, simulation modes, image batches,
labels, weights) get a ValueError or TypeError that names the bad value and
says what to do. This module knows no dataset or model zoo: the command-line
runs' checks (flags, files, output directories) are in `bsnn_tf.runs.checks`.
Checks of one module's own vocabulary stay with it (`coding.check_phases`,
`calibration.check_calibration_mode`, `data.check_limit`, `FineTuning.check`).

Example:
    >>> from bsnn_tf.validation import check_timesteps, check_whole_periods
    >>> check_timesteps(64)
    64
    >>> check_whole_periods([64, 62], phases=4)
    Traceback (most recent call last):
    ...
    ValueError: Time steps [62] are not multiples of phases=4: period mode simulates whole periods. Use multiples of the phases or mode='step'.
"""

import warnings

import keras
import numpy as np

from bsnn_tf import methods

# The simulation indexes time with int32.
MAX_TIMESTEPS = 2**31 - 1


def check_mode(snn, mode):
    """True for period mode; raises a ValueError for an unknown mode or a non-BSNN period mode."""
    if mode not in ("period", "step"):
        raise ValueError(f"mode must be 'period' or 'step', got {mode!r}.")
    if mode == "period" and not methods.get(snn.method).period_mode:
        raise ValueError(
            f"mode='period' is exact for BSNN only; this SNN uses method={snn.method!r}. "
            "Use mode='step'."
        )
    return mode == "period"


def check_whole_periods(steps, phases, error=ValueError,
                        advice="Use multiples of the phases or mode='step'."):
    """Raises `error` naming every T in `steps` that is not a whole number of periods."""
    off_period = [t for t in steps if t % phases]
    if off_period:
        raise error(f"Time steps {off_period} are not multiples of phases={phases}: period "
                    f"mode simulates whole periods. {advice}")


def check_timesteps(timesteps):
    """`timesteps` as an int, or a TypeError/ValueError naming the bad value."""
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)):
        raise TypeError(f"timesteps must be a positive int, got {timesteps!r}.")
    if timesteps <= 0:
        raise ValueError(f"timesteps must be positive, got {timesteps}.")
    if timesteps > MAX_TIMESTEPS:
        raise ValueError(f"timesteps={timesteps} is too large: the simulation counts time "
                         f"in int32; use at most {MAX_TIMESTEPS}.")
    return int(timesteps)


def check_labels(labels, count, classes=None):
    """`labels` as an int array of shape (count,), or a ValueError saying the shapes; given
    the model's number of `classes`, also one naming labels outside 0..classes - 1."""
    labels = np.asarray(labels)
    if labels.shape != (count,):
        one_hot = (labels.ndim == 2 and len(labels) == count and labels.shape[1] > 1)
        raise ValueError(f"labels have shape {labels.shape}, but there are {count} images: "
                         f"give one integer label per image, shape ({count},)"
                         + (" (one-hot labels: y.argmax(axis=1))." if one_hot else "."))
    integral = np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0))
    if not integral:
        raise ValueError(f"labels must be integer classes, got dtype {labels.dtype}.")
    labels = labels.astype("int64")
    if classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"labels span {labels.min()}..{labels.max()}, but the model has {classes} classes "
            f"(0..{classes - 1}): give 0-based class indices"
            + (" (1-based labels: y - 1)." if labels.min() >= 1 and labels.max() == classes
               else "."))
    return labels


def check_finite_weights(model):
    """Raises a ValueError naming every layer of `model` with a NaN or infinite weight.

    The weights themselves are checked, not the activations: a compiled
    forward pass may map a NaN to 0 (a ReLU on oneDNN does), so a check that
    waits for the NaN to reach an activation depends on the backend.
    """
    bad = {}
    for variable in model.weights:
        values = keras.ops.convert_to_numpy(variable.value)
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            *_, layer, weight = variable.path.split("/")
            bad.setdefault(layer, []).append(f"{weight}: {int(np.sum(~np.isfinite(values)))} "
                                             f"of {values.size}")
    if bad:
        lines = "\n".join(f"  - Layer '{layer}' has NaN or infinite weights ({'; '.join(w)})"
                          for layer, w in bad.items())
        raise ValueError(f"Model '{model.name}' cannot be converted:\n{lines}\nRetrain or "
                         "reload the model; every weight must be finite.")


def check_inputs(x, input_shape, what="calibration data"):
    """Returns `x` as float32, or raises a ValueError saying what is wrong with it.

    A None in `input_shape` (a model built for any image size) matches any size.
    """
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"The {what} must be a numeric array, got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"The {what} must be real, got dtype {x.dtype}; pass the real "
                        "images (e.g. np.real(x) or np.abs(x), whichever the ANN was "
                        "trained on).")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"The {what} is empty; pass at least one image.")
    if not shape_fits(x.shape[1:], input_shape):
        raise ValueError(
            f"The {what} has shape {x.shape}, but the model expects (N, "
            f"{', '.join(map(str, input_shape))})."
        )
    x = x.astype("float32", copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"The {what} contains {bad} NaN or infinite values; clean it first.")
    return x


def shape_fits(shape, expected):
    """Whether an image of `shape` fits `expected`, where None matches any size."""
    return len(shape) == len(expected) and all(
        want is None or have == want for have, want in zip(shape, expected))


def check_calibration_data(x, input_shape):
    """`check_inputs` for calibration images, and a ValueError if they hold a single value.

    Images that are all zeros (or all one value) carry no activation
    statistics: every layer would be scaled to its response to a blank
    input, and the SNN silently loses accuracy (the MNIST demo CNN calibrated
    on zeros scores 46% at T = 64 instead of 99%).
    """
    x = check_inputs(x, input_shape)
    if x.min() == x.max():
        raise ValueError(
            f"The calibration data holds a single value ({x.flat[0]:g}) in all {len(x)} "
            "images: the layers' scales would be fitted to a blank input. Calibrate on "
            "real training images, preprocessed like the ANN's input.")
    return x


def check_spiking_network(snn, function):
    """Raises a TypeError unless `snn` is a SpikingNetwork; `function` names the caller.

    A SpikingNetwork is known by what it does, a keras.Model that runs chunks of time
    (`run_chunk`), so that this module needs no network class.
    """
    if not (isinstance(snn, keras.Model) and callable(getattr(snn, "run_chunk", None))):
        kind = (f"a plain Keras model ({type(snn).__name__} '{snn.name}')"
                if isinstance(snn, keras.Model) else f"a {type(snn).__name__}")
        raise TypeError(f"{function} needs a SpikingNetwork, got {kind}. Convert it first: "
                        "snn = bsnn_tf.convert(model, calibration_images).")


class InputRangeWarning(UserWarning):
    """Images to simulate far outside the range of the images the SNN was calibrated on."""


def check_input_range(x, calibration_range):
    """Warns (`InputRangeWarning`) when the images `x` reach beyond the calibration images'
    range [lo, hi] by more than its width: preprocessed otherwise (0-255 against 0-1, say),
    the layers' scales no longer fit them and the SNN drifts from the ANN."""
    if calibration_range is None or not len(x):
        return
    low, high = calibration_range
    width = max(high - low, 1e-12)
    x_low, x_high = float(np.min(x)), float(np.max(x))
    if x_high > high + width or x_low < low - width:
        warnings.warn(
            f"The images to simulate span [{x_low:.4g}, {x_high:.4g}], far outside the "
            f"[{low:.4g}, {high:.4g}] of the images the SNN was calibrated on: preprocess "
            "them alike (the same scaling and normalisation), or convert with images like "
            "these.", InputRangeWarning, stacklevel=4)


class EarlyReadoutWarning(UserWarning):
    """Outputs asked for where they say nothing about the input: before a BSNN's first
    readout, or before any method's readout starts counting (they are the readout bias)."""


def warn_before_first_readout(snn, steps):
    """Warns (`EarlyReadoutWarning`) naming every T in `steps` where `snn`'s output says
    nothing about the input.

    For BSNN (whose readout waits for the first valid output) that is every T before
    `snn.first_readout`: the readout bias, or a part of the first output period. The
    baselines' readout counts every step from its start on, so their output estimates
    the ANN's from the first counted step: only a T at or before the start (a
    `readout_delay`) is the readout bias alone.
    """
    if methods.get(snn.method).readout_waits_for_output:
        first = snn.first_readout
        why = (f"this SNN's first readout at T={first} ((readout start {snn.readout_start} "
               f"+ 1) x {snn.phases} phases): its outputs there are the readout bias alone, "
               "or a part of a period")
    else:
        first = snn.readout_start * snn.phases + 1
        why = (f"this SNN's readout starts counting, after step {first - 1} (readout start "
               f"{snn.readout_start} x {snn.phases} phases): its outputs there are the "
               "readout bias alone")
    early = sorted(t for t in steps if t < first)
    if early:
        warnings.warn(f"Time steps {early} come before {why}; they say nothing about the "
                      f"input. Simulate at least T={first}.", EarlyReadoutWarning, stacklevel=3)
