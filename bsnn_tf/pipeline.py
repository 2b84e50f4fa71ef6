"""What `convert.py` does: ANN to SNN(s), accuracy against time steps, and a run directory.

The pipeline loads the ANN (a .keras checkpoint, torchvision weights, the
model's published weights, downloaded once into Keras's cache, or random
weights), checks that it fits the dataset, measures its test accuracy, then
per method calibrates and converts it, simulates the test set with
checkpoints, and verifies it layer by layer on a few images. Everything that
can fail on bad input (flags, weights, data) is checked or loaded before
anything is written; the run directory is written at the end, in full in a
staging directory beside it that then takes its place (`rundir.replace_directory`:
an interruption leaves the earlier run or the new one, whole). It holds
`results.json`, `accuracy_vs_timesteps.png`, `snn_<method>.keras` and
TensorBoard logs under `tensorboard/<method>`. An earlier run's directory is
replaced only with `overwrite` (its other files are kept), and a lock file
beside the directory keeps a second run out.

Example:
    >>> from bsnn_tf import pipeline
    >>> config = pipeline.ConvertConfig(methods=("bsnn",), phases=4, timesteps=32,
    ...                            limit=100, output_dir="runs/demo")
    >>> results = pipeline.run(config)
    ANN accuracy 99.00%
    ...
    >>> results["timesteps"], sorted(results["methods"])   # from the first readout, (2 + 1) 4
    ([12, 16, 20, 24, 28, 32], ['bsnn'])
"""

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
import typing

import keras
import numpy as np

import bsnn_tf
from bsnn_tf import backend, coding, console, data, methods, metrics, models, plots, rundir
from bsnn_tf.conversion import ConversionConfig, FineTuning
from bsnn_tf.conversion.finetune import MIN_IMAGES as FINETUNE_MIN_IMAGES
from bsnn_tf.conversion.calibration import MODES as CALIBRATION_MODES
from bsnn_tf.methods import METHODS
from bsnn_tf.run_checks import ConfigError, check_shared, check_writable
from bsnn_tf.validation import check_timesteps, check_whole_periods, shape_fits

DEMO_CHECKPOINT = os.path.join(data.DEMO_DIR, "mnist_cnn.keras")
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parents[1] / "pretrained"
# Checkpoints trained with our train.py and committed: --weights defaults to them.
BUNDLED_CHECKPOINTS = {
    ("mnist_cnn", "mnist"): DEMO_CHECKPOINT,
    ("resnet20", "cifar10"): str(PRETRAINED_DIR / "cifar10_resnet20.keras"),
}
# The largest T when --timesteps is not given: for BSNN, the first readout ((D + 1) K,
# where its output is the K-bit quantised ANN) plus EXTRA_PERIODS periods, in which the
# nets measured in docs/RESULTS.md reach their ANN (T*); for the rate and phase baselines,
# which have no first readout, BASELINE_TIMESTEPS per dataset.
EXTRA_PERIODS = 8
BASELINE_TIMESTEPS = {"mnist": 64, "cifar10": 1024, "cifar100": 1024, "imagenet": 1024}
# Past the first readout the accuracy is measured at every period for this many periods,
# then at powers of two.
EVERY_PERIOD_FOR = 16
KERAS_SUFFIX = ".keras"
TORCHVISION_SUFFIXES = (".pth", ".pt", ".safetensors")
# Accuracy within this of the ANN's counts as converged (0.1 percentage points).
TOLERANCE = 0.001
VERIFY_IMAGES = 32
# Accuracy comes from a logits-only simulation of every evaluated image; the spike
# statistics (firing rates, SIN, synaptic operations, TensorBoard) from a second pass
# that counts every spike, over the first STATISTICS_IMAGES of them by default.
STATISTICS_IMAGES = 256
# The ANN's own batch when --batch_size is not given (the simulation and the calibration
# choose theirs to fit their memory budgets).
ANN_BATCH = 128
# Calibration images by default: for the scales; for fine-tuning, which trains on them.
CALIBRATION_IMAGES = 500
FINETUNE_IMAGES = 10_000
# Where the calibration images come from; "auto": train if found, else held-out test images.
CALIBRATION_SPLITS = ("auto", "train", "test")
CALIBRATION_SEED = 0


@dataclasses.dataclass
class ConvertConfig:
    """Everything a conversion run depends on (stored in results.json).

    Attributes:
        weights: a .keras checkpoint, or .pth/.pt/.safetensors torchvision
            weights for the zoo model; `None` takes the committed checkpoint
            (`BUNDLED_CHECKPOINTS`: the demo CNN on mnist, ResNet-20 trained here
            on cifar10), else the published weights where the model has
            them for the dataset (`models.published.WEIGHTS`: torchvision's
            ResNet-18/34 on ImageNet), downloaded by `load_ann`.
        random_weights: convert the zoo model with random weights (smoke tests).
        methods: conversion methods, simulated on the same test images.
        timesteps: the largest T; `None` takes `default_timesteps` (for BSNN the
            first readout plus `EXTRA_PERIODS` periods).
        checkpoints: the T at which accuracy is measured; `None` takes
            `default_checkpoints`. `timesteps` is always one.
        statistics_images: spike statistics come from the first this many evaluated
            images (0: all of them); accuracy comes from all of them.
        calibration_size: images for the calibration; `None`: `CALIBRATION_IMAGES`, or
            `FINETUNE_IMAGES` for calibration "finetune" (`calibration_images`).
        finetune_epochs: epochs of calibration "finetune" (`None`: its image budget).
        finetune_labels: "finetune" also learns from the calibration images' labels
            (default: from the ANN alone).
        calibration_split: where they come from: "train"; "test", a random
            slice of the test images held out of the evaluation (see
            `load_images`); "auto", train when the dataset has it, else test.
        limit: simulate the first `limit` evaluated test images only (those
            left after any held-out calibration slice).
        batch_size: images per batch in the ANN, calibration and simulation; `None`:
            `ANN_BATCH` for the ANN, and for the calibration and the simulation as
            many as fit their memory budgets (`bsnn_tf.simulation.default_batch_size`),
            so that memory is bounded by the model, not by the data or T.
        output_dir: `None` takes `outputs/<dataset>_<model>`.
        distribute: split the batches of the ANN's evaluation and of the
            simulation over all local devices (data parallel; the accuracies
            are those of one device). Calibration and verification use one.
        overwrite: replace the outputs of an earlier run in `output_dir`.
    """

    model: str = "mnist_cnn"
    dataset: str = "mnist"
    weights: str | None = None
    random_weights: bool = False
    methods: tuple = ("bsnn",)
    phases: int | None = None
    timesteps: int | None = None
    checkpoints: tuple | None = None
    # The library's settings, with the library's defaults (ConversionConfig defines them).
    calibration: str = ConversionConfig.default("calibration")
    percentile: float = ConversionConfig.default("percentile")
    channelwise: bool = ConversionConfig.default("channelwise")
    synchronous: bool = ConversionConfig.default("synchronous")
    calibration_size: int | None = None
    calibration_split: str = "auto"
    limit: int | None = None
    statistics_images: int = STATISTICS_IMAGES
    batch_size: int | None = None
    output_dir: str | None = None
    data_dir: str | None = None
    distribute: bool = False
    overwrite: bool = False
    finetune_epochs: int | None = None
    finetune_labels: bool = False

    def __post_init__(self):
        self.methods = tuple(dict.fromkeys(self.methods))
        if self.output_dir is None:
            self.output_dir = os.path.join("outputs", f"{self.dataset}_{self.model}")
        if self.weights is None and not self.random_weights:
            self.weights = BUNDLED_CHECKPOINTS.get((self.model, self.dataset))

    @classmethod
    def default(cls, name):
        """The default of field `name` (convert.py's flags take theirs from here)."""
        (field,) = [f for f in dataclasses.fields(cls) if f.name == name]
        return field.default

    @property
    def calibration_images(self):
        """How many calibration images the run draws."""
        if self.calibration_size is not None:
            return self.calibration_size
        return FINETUNE_IMAGES if self.calibration == "finetune" else CALIBRATION_IMAGES

    @property
    def period_steps(self):
        """Steps every T must be a multiple of: one period of each method run in period mode."""
        return math.lcm(*(self.phases_of(m) for m in self.methods if METHODS[m].period_mode))

    def phases_of(self, method):
        """K for `method`: --phases, or the library's default for the method."""
        return METHODS[method].default_phases if self.phases is None else self.phases


@dataclasses.dataclass
class MethodRun:
    """One method's SNN and what simulating and verifying it gave."""

    snn: bsnn_tf.SpikingNetwork
    result: bsnn_tf.SimulationResult  # the spike statistics, on `result.outputs`' images
    verification: bsnn_tf.Verification
    accuracy: dict  # {T: accuracy on every evaluated image}
    converged_at: int


def validate(config):
    """Raises `ConfigError` for a configuration that cannot run; reads no data."""
    check_shared(config, sizes=("calibration_size", "batch_size"))
    if not config.methods:
        raise ConfigError(f"No method given. Known methods: {', '.join(METHODS)}.")
    for method in config.methods:
        if method not in METHODS:
            raise ConfigError(f"Unknown method {method!r}. Known methods: {', '.join(METHODS)}.")
    if config.phases is not None and not 1 <= config.phases <= coding.MAX_PHASES:
        raise ConfigError(f"phases must be in 1..{coding.MAX_PHASES}, got {config.phases}.")
    _check_timesteps(config)
    if config.statistics_images < 0:
        raise ConfigError(f"--statistics_images must be 0 (all images) or positive, got "
                          f"{config.statistics_images}.")
    if config.calibration_split not in CALIBRATION_SPLITS:
        raise ConfigError(f"--calibration_split must be one of {', '.join(CALIBRATION_SPLITS)}; "
                          f"got {config.calibration_split!r}.")
    if config.calibration not in CALIBRATION_MODES:
        raise ConfigError(f"--calibration must be one of {', '.join(CALIBRATION_MODES)}; "
                          f"got {config.calibration!r}.")
    if config.calibration == "finetune":
        _check_finetune(config)
    if not 0 < config.percentile <= 100:
        raise ConfigError(f"percentile must be in (0, 100], got {config.percentile}.")
    _check_weights(config)
    check_writable(config.output_dir)
    check_writable(os.path.dirname(os.path.abspath(config.output_dir)))  # lock and staging
    earlier = rundir.run_outputs(config.output_dir)
    if earlier and not config.overwrite:
        raise ConfigError(
            f"Output directory {config.output_dir!r} holds an earlier run "
            f"({', '.join(os.path.basename(p) for p in earlier)}); pass --overwrite to replace "
            "it, or choose another --output_dir."
        )


def _check_finetune(config):
    others = [m for m in config.methods if not METHODS[m].readout_waits_for_output]
    if others:
        raise ConfigError(f"--calibration=finetune trains a BSNN's first readout, which "
                          f"{', '.join(others)} does not have; run it with --methods=bsnn.")
    if config.calibration_images < FINETUNE_MIN_IMAGES:
        raise ConfigError(f"--calibration=finetune trains on the calibration images: it needs "
                          f"--calibration_size of at least {FINETUNE_MIN_IMAGES} (thousands "
                          f"are better), got {config.calibration_images}.")
    if config.finetune_epochs is not None and config.finetune_epochs < 1:
        raise ConfigError(f"--finetune_epochs must be positive, got {config.finetune_epochs}.")


def _check_timesteps(config):
    if config.timesteps is None:
        if config.checkpoints:
            raise ConfigError("--checkpoints needs --timesteps (the default T is known only "
                              "after conversion); give both, or neither.")
        return
    try:
        check_timesteps(config.timesteps)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--{error}") from error
    for t in (config.checkpoints or ()):
        if not 1 <= t <= config.timesteps:
            raise ConfigError(f"Checkpoint {t} is outside 1..timesteps={config.timesteps}.")
    check_whole_periods((config.timesteps, *(config.checkpoints or ())), config.period_steps,
                        ConfigError, advice="Use multiples of --phases.")


def _check_weights(config):
    if config.random_weights:
        if config.weights is not None:
            raise ConfigError("Give either --weights or --random_weights, not both.")
        return
    if config.weights is None:
        if models.published.find(config.model, config.dataset):
            return  # downloaded by load_ann
        raise ConfigError(
            f"--weights is required for {config.model} on {config.dataset} (a .keras "
            "checkpoint, or torchvision .pth/.safetensors weights); --random_weights "
            "converts random weights for a smoke test. Published weights, downloaded "
            f"when --weights is not given, exist for {', '.join(models.published.available())}."
        )
    suffix = pathlib.Path(config.weights).suffix
    if suffix not in (KERAS_SUFFIX, *TORCHVISION_SUFFIXES):
        raise ConfigError(
            f"Cannot tell the format of checkpoint {config.weights}: expected a name ending "
            f"in {', '.join((KERAS_SUFFIX, *TORCHVISION_SUFFIXES))}."
        )
    if not os.path.isfile(config.weights):
        bundled = config.weights == BUNDLED_CHECKPOINTS.get((config.model, config.dataset))
        hint = (f" (the default for {config.model} on {config.dataset}, committed in the "
                "repository: run from a clone, or pass --weights FILE)") if bundled else ""
        raise ConfigError(f"Checkpoint file not found: {config.weights}{hint}")


def load_ann(config):
    """The ANN to convert: the checkpoint, torchvision weights, published weights or random ones.

    With no `config.weights`, the model's published weights are downloaded
    (once; then read from Keras's cache) and their hash checked.

    Raises:
        ConfigError: a checkpoint that cannot be read (the message names the
            file), or published weights that cannot be downloaded.
    """
    _check_weights(config)
    spec = data.DATASETS[config.dataset]
    if config.random_weights:
        keras.utils.set_random_seed(0)
        return models.get(config.model, spec.num_classes, spec.input_shape)
    weights = config.weights or download_published_weights(config.model, config.dataset)
    if weights.endswith(KERAS_SUFFIX):
        return _load_keras(weights)
    ann = models.get(config.model, spec.num_classes, spec.input_shape)
    try:
        models.load_torchvision_weights(ann, weights)
    except (OSError, ImportError, ValueError) as error:
        raise ConfigError(f"Cannot load weights {weights}: {error}") from error
    return ann


def download_published_weights(model, dataset):
    """The local path of `model`'s published weights for `dataset`, downloaded if not cached.

    Raises:
        ConfigError: offline, or a file that fails its hash check; the message
            names the URL and says how to go on without the download.
    """
    published = models.published.find(model, dataset)
    try:
        path = models.published.download(published)
    except models.published.DownloadError as error:
        raise ConfigError(
            f"{error}\nWith no --weights, convert.py downloads the published {model} weights "
            f"for {dataset} from {published.url}. Where this machine cannot download it, "
            "download that file elsewhere and pass --weights FILE, or pass --random_weights "
            "to convert random weights (a smoke test)."
        ) from error
    print(f"Published weights {published.url} (cached at {path})")
    return path


def _load_keras(path):
    try:
        return models.load_keras(path)
    except (OSError, ValueError) as error:
        raise ConfigError(str(error)) from error


def check_fits(ann, dataset):
    """Raises `ConfigError` unless `ann` takes the dataset's images and predicts its classes."""
    spec = data.DATASETS[dataset]
    input_shape, classes = tuple(ann.input_shape[1:]), ann.output_shape[-1]
    if not shape_fits(spec.input_shape, input_shape):
        raise ConfigError(
            f"Model {ann.name!r} takes inputs of shape {input_shape}, but {dataset} images "
            f"are {tuple(spec.input_shape)}."
        )
    if classes != spec.num_classes:
        raise ConfigError(
            f"Model {ann.name!r} predicts {classes} classes, but {dataset} has "
            f"{spec.num_classes}."
        )


def check_convertible(ann):
    """Raises `ConfigError` naming every layer of `ann` that cannot be converted, and why.

    `bsnn_tf.conversion.trace` makes the checks that `bsnn_tf.convert` makes
    first; run here, before the data is read and the ANN evaluated.
    """
    try:
        bsnn_tf.conversion.trace(ann)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{error}\nOnly ReLU networks convert (docs/DESIGN.md); retrain "
                          "the model with ReLU activations, or pass another --weights.") from error


def default_timesteps(snns, dataset):
    """The largest T of a run: for each SNN with a first readout (BSNN) that readout
    plus `EXTRA_PERIODS` periods, for the baselines `BASELINE_TIMESTEPS[dataset]`; the
    largest of these, so that every method is measured at every T."""
    return max(snn.first_readout + EXTRA_PERIODS * snn.phases if _has_first_readout(snn)
               else BASELINE_TIMESTEPS.get(dataset, BASELINE_TIMESTEPS["imagenet"])
               for snn in snns)


def _has_first_readout(snn):
    return methods.get(snn.method).readout_waits_for_output


def _first_measured(snn, timesteps):
    """The first T at which `snn`'s accuracy is measured: its first readout (BSNN; at
    most T), else 1."""
    return min(snn.first_readout, timesteps) if _has_first_readout(snn) else 1


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
        first = snn.first_readout if _has_first_readout(snn) else None
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


def run(config, command=None):
    """Converts, simulates and verifies `config.model`, then writes `config.output_dir`.

    Args:
        config: a `ConvertConfig`.
        command: the command line, recorded in results.json.

    Returns:
        The dict written to `<output_dir>/results.json`.

    Raises:
        ConfigError, data.DatasetNotFoundError, data.CorruptDataError: before
            anything is simulated or written (a ConfigError also while another run holds
            `rundir.run_lock(config.output_dir)`).
    """
    start = time.time()
    validate(config)
    with rundir.run_lock(config.output_dir):
        return _run(config, command, start)


def _run(config, command, start):
    ann = load_ann(config)
    check_fits(ann, config.dataset)
    check_convertible(ann)
    x_test, y_test, x_calibration, y_calibration, calibration = load_images(config)

    ann_logits = predict(ann, x_test, config.batch_size or ANN_BATCH, config.distribute,
                         stage=f"ANN {ann.name} on {len(x_test)} {config.dataset} test images")
    ann_accuracy = float(np.mean(np.argmax(ann_logits, -1) == y_test))
    print(f"ANN accuracy {ann_accuracy:.2%}")
    snns = {method: convert_method(config, method, ann, x_calibration, y_calibration)
            for method in config.methods}
    timesteps = config.timesteps or default_timesteps(snns.values(), config.dataset)
    checkpoints = measured_timesteps(config, snns.values(), timesteps)
    runs = {method: simulate_method(config, snn, ann, x_test, y_test, timesteps, checkpoints,
                                    ann_accuracy)
            for method, snn in snns.items()}
    results = {
        "model": config.model,
        "dataset": config.dataset,
        "test_images": len(x_test),
        "calibration_images": len(x_calibration),
        "calibration": calibration,
        "ann_accuracy": ann_accuracy,
        "timesteps": checkpoints,
        "tolerance": TOLERANCE,
        "methods": {method: method_results(r) for method, r in runs.items()},
        "backend": keras.backend.backend(),
        "seconds": round(time.time() - start, 1),
        "flags": dataclasses.asdict(config),
        "command": command,
    }
    print("\n" + accuracy_table(results))
    curves = {method: {t: a for t, a in run.accuracy.items() if a is not None}
              for method, run in runs.items()}
    figure = plots.accuracy_figure(
        curves, ann_accuracy, f"{config.model} on {len(x_test)} {config.dataset} test images")
    write_run(config.output_dir, results, runs, figure, overwrite=config.overwrite)
    print(f"Wrote {config.output_dir}")
    return results


class Images(typing.NamedTuple):
    """A run's images: the evaluated test images and labels, the calibration images and
    labels, and `calibration`, results.json's record of where those came from."""

    x_test: np.ndarray
    y_test: np.ndarray
    x_calibration: np.ndarray
    y_calibration: np.ndarray
    calibration: dict


def load_images(config):
    """The evaluated test images, the calibration images, and where those came from.

    With `calibration_split` "test" (or "auto" and no training split found),
    `calibration_images` test images drawn by
    `np.random.default_rng(CALIBRATION_SEED).permutation` are held out: they
    calibrate and are not evaluated; `limit` takes the first of the rest, in
    file order. Training images are drawn as `data.calibration_batch` does.

    Returns:
        `Images`; its `calibration` record holds the split, the number of images,
        the seed (and the held-out test indices).

    Raises:
        ConfigError: too few test images to hold `calibration_size` out.
        data.DatasetNotFoundError, data.CorruptDataError: as `data.find`.
    """
    test = data.find(config.dataset, "test", config.data_dir)
    size, split, train = config.calibration_images, config.calibration_split, None
    if split != "test":
        try:
            train = data.find(config.dataset, "train", config.data_dir)
        except data.DatasetNotFoundError as error:
            if split == "train":
                raise data.DatasetNotFoundError(
                    f"{error}\nOr calibrate on held-out test images: --calibration_split=test."
                ) from error
    rng = np.random.default_rng(CALIBRATION_SEED)
    evaluated = np.arange(len(test))
    if train is not None:
        indices = np.sort(rng.choice(len(train), size=min(size, len(train)), replace=False))
        source, record = train, {"split": "train", "images": len(indices),
                                 "seed": CALIBRATION_SEED}
    else:
        if len(test) <= size:
            raise ConfigError(
                f"Calibrating on held-out {config.dataset} test images "
                f"({'--calibration_split=test' if split == 'test' else 'no training split found'})"
                f" needs more than --calibration_size={size} of them, but {test.source} has "
                f"{len(test)}; pass a smaller --calibration_size, or provide the training split.")
        order = rng.permutation(len(test))
        indices, evaluated = np.sort(order[:size]), np.sort(order[size:])
        source, record = test, {"split": "test (held out)", "images": size,
                                "seed": CALIBRATION_SEED, "indices": indices.tolist()}
    evaluated = evaluated[:config.limit]
    if train is None:
        reason = ("--calibration_split=test" if split == "test" else
                  f"no {config.dataset} training split in {config.data_dir or 'the default places'}")
        print(f"Calibrating on {size} {config.dataset} test images held out of the evaluation "
              f"({reason}; seed {CALIBRATION_SEED}); evaluating {len(evaluated)} others.")
    return Images(data.preprocess(config.dataset, test.pixels(evaluated)),
                  test.labels[evaluated], data.preprocess(config.dataset, source.pixels(indices)),
                  source.labels[indices], record)


def predict(model, x, batch_size, distribute=False, stage=None):
    """`model.predict(x)` with `console.Progress` over images; with `distribute`, every
    batch split over all local devices.

    The split is the Keras engine's (`backend.distribution_scope`), run by a
    copy of `model` built in that scope; `x` and the batches are padded to
    multiples of the device count (JAX splits batches in equal parts).
    """
    progress = console.Progress(len(x), stage or f"Predicting with {model.name}")
    callbacks = [_ProgressCallback(progress, batch_size, len(x))]
    if not distribute:
        return model.predict(x, batch_size=batch_size, verbose=0, callbacks=callbacks)
    count = backend.devices(True).count
    padding = np.zeros((-len(x) % count,) + x.shape[1:], x.dtype)
    with backend.distribution_scope(True):
        replica = keras.models.clone_model(model)
        replica.set_weights(model.get_weights())
        return replica.predict(np.concatenate([x, padding]),
                               batch_size=-(-batch_size // count) * count, verbose=0,
                               callbacks=callbacks)[:len(x)]


class _ProgressCallback(keras.callbacks.Callback):
    """Reports `predict`'s batches to a `console.Progress` as images."""

    def __init__(self, progress, batch_size, count):
        super().__init__()
        self.progress, self.batch_size, self.count = progress, batch_size, count

    def on_predict_batch_end(self, batch, logs=None):
        self.progress.update(min((batch + 1) * self.batch_size, self.count))


def convert_method(config, method, ann, x_calibration, y_calibration=None):
    """`ann` converted with `method` as `config` says."""
    print(f"\nConverting with method={method} on {len(x_calibration)} calibration images:")
    finetuning = config.calibration == "finetune"
    snn = bsnn_tf.convert(
        ann, x_calibration, method=method, phases=config.phases_of(method),
        calibration=config.calibration, percentile=config.percentile,
        channelwise=config.channelwise, synchronous=config.synchronous,
        timesteps=config.timesteps or BASELINE_TIMESTEPS.get(config.dataset, 256),
        batch_size=config.batch_size,
        calibration_labels=y_calibration if finetuning and config.finetune_labels else None,
        finetuning=FineTuning(epochs=config.finetune_epochs) if finetuning else None,
    )
    print(f"{snn.name}: spiking depth D = {snn.depth}, first readout at T = "
          f"{snn.first_readout}" if _has_first_readout(snn) else f"{snn.name} converted")
    return snn


def simulate_method(config, snn, ann, x_test, y_test, timesteps, checkpoints, ann_accuracy):
    """Accuracy at `checkpoints` on every test image (a logits-only simulation), then the
    spike statistics on the first `config.statistics_images` of them and the layer-by-layer
    verification on `VERIFY_IMAGES`."""
    snn.timesteps = timesteps  # what the saved SNN simulates when called
    simulate = functools.partial(bsnn_tf.simulate, snn, timesteps=timesteps,
                                 batch_size=config.batch_size, distribute=config.distribute)
    # Before a BSNN's first readout its output is the readout bias: not measured (None).
    measured = [t for t in checkpoints if t >= _first_measured(snn, timesteps)]
    print(f"Accuracy of {snn.name} ({snn.mode} mode, logits only) at {len(measured)} T "
          f"up to {timesteps}:")
    outputs = simulate(x_test, checkpoints=measured, count_spikes=False)
    accuracy = {t: outputs.accuracy(y_test, t) if t in measured else None for t in checkpoints}
    sample = x_test[:config.statistics_images or None]
    print(f"Spike statistics of {snn.name} at T={timesteps} on {len(sample)} of the "
          f"{len(x_test)} images (every spike counted):")
    statistics = simulate(sample, checkpoints=[timesteps], ann=ann)
    verification = bsnn_tf.verify(ann, snn, x_test[:VERIFY_IMAGES], timesteps,
                                  batch_size=config.batch_size)
    print(verification)
    metrics.summary(snn, statistics)
    return MethodRun(snn, statistics, verification, accuracy,
                     converged_at(accuracy, ann_accuracy))


def accuracy_table(results):
    """Accuracy per T (rows) and method (columns), then T* per method, as text, from a
    run's results.json (README's demo table is this, from benchmarks/results/demo.json)."""
    methods = results["methods"]
    rows = [f"Top-1 accuracy (ANN {results['ann_accuracy']:.2%})",
            f"{'T':>8}" + "".join(f"{m:>10}" for m in methods)]
    for i, t in enumerate(results["timesteps"]):
        rows.append(f"{t:>8}" + "".join(_percent(run["accuracy"][i]) for run in methods.values()))
    rows.append(f"{'T*':>8}" + "".join(f"{str(run['converged_at']):>10}"
                                        for run in methods.values()))
    rows.append(f"T*: the smallest T from which accuracy stays within "
                f"{100 * results['tolerance']:g} percentage points of the ANN's (None: never); "
                "-: before the first readout.")
    statistics = {run["statistics"]["images"] for run in methods.values()}
    rows.append(f"Accuracy on every evaluated image (logits only); spike statistics on the "
                f"first {', '.join(map(str, sorted(statistics)))} of them.")
    return "\n".join(rows)


def _percent(value):
    return f"{'-':>10}" if value is None else f"{value:>10.2%}"


def method_results(method_run):
    """The results.json entry of one method."""
    snn, result, verification = method_run.snn, method_run.result, method_run.verification
    macs = sum(metrics.ann_macs(snn).values())
    operations = sum(metrics.synaptic_operations(snn, result).values())
    return {
        "accuracy": list(method_run.accuracy.values()),
        "converged_at": method_run.converged_at,
        "depth": snn.depth,
        "first_readout": snn.first_readout if _has_first_readout(snn) else None,
        "finetuning": getattr(snn, "calibration_record", None),
        "mode": snn.mode,
        "statistics": {"images": len(result.outputs), "timesteps": result.timesteps,
                       "note": "firing rates, SIN and synaptic operations are from these "
                               "images; accuracy is from every evaluated image"},
        "firing_rates": result.firing_rates(),
        "sin_rates": result.sin_rates(),
        "synaptic_operations": operations,
        "ann_macs": macs,
        "synops_per_mac": operations / max(macs, 1),
        "verification": {
            "images": VERIFY_IMAGES,
            "timesteps": verification.timesteps,
            "output_error": verification.output_error,
            "agreement": verification.agreement,
            "layer_max_errors": {e.layer: e.max_error for e in verification.layers},
        },
    }


def write_run(output_dir, results, runs, figure, overwrite=False):
    """Writes the run's files into a staging directory beside `output_dir`, then swaps it in.

    See `replace_directory`: an interruption leaves `output_dir` holding the
    earlier run or this one, whole.
    """
    rundir.replace_directory(output_dir, lambda staging: _write_outputs(staging, results, runs, figure),
                      overwrite)


def _write_outputs(directory, results, runs, figure):
    """Every output file of a run (`rundir.RUN_OUTPUTS`), written into `directory`."""
    for method, method_run in runs.items():
        method_run.snn.save(os.path.join(directory, f"snn_{method}.keras"))
        metrics.write_tensorboard(
            os.path.join(directory, "tensorboard", method), method_run.snn, method_run.result,
            method_run.verification,
            accuracy={t: a for t, a in method_run.accuracy.items() if a is not None},
            step=method_run.result.timesteps,
        )
    figure.savefig(os.path.join(directory, "accuracy_vs_timesteps.png"), dpi=120)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
