"""convert.py's record: `RunConfig`, everything a run depends on, and `check_run_config`,
its checks before anything is read or written.

Example:
    >>> from bsnn_tf import runs
    >>> config = runs.RunConfig(model="resnet20", dataset="cifar10", phases=3)
    >>> config.output_dir, config.period_steps
    ('outputs/cifar10_resnet20', 3)
    >>> runs.check_run_config(runs.RunConfig(phases=0))
    Traceback (most recent call last):
    ...
    bsnn_tf.runs.checks.ConfigError: phases must be in 1..24, got 0.
"""

import dataclasses
import math
import os

from bsnn_tf import coding
from bsnn_tf.conversion import ConversionConfig, LatencySearch
from bsnn_tf.conversion.calibration import MODES as CALIBRATION_MODES
from bsnn_tf.conversion.finetune import MIN_IMAGES as FINETUNE_MIN_IMAGES, FineTuning
from bsnn_tf.conversion.held_out import MIN_HELD_OUT
from bsnn_tf.methods import METHODS
from bsnn_tf.runs import rundir
from bsnn_tf.runs.checkpoints import BUNDLED_CHECKPOINTS, check_weights
from bsnn_tf.runs.checks import ConfigError, check_shared, check_writable
from bsnn_tf.runs.images import CALIBRATION_SPLITS
from bsnn_tf.validation import check_timesteps, check_whole_periods

# Accuracy comes from a logits-only simulation of every evaluated image; the spike
# statistics (firing rates, SIN, synaptic operations, TensorBoard) from a second pass
# that counts spikes on the schedule, over the first STATISTICS_IMAGES of them by default.
STATISTICS_IMAGES = 256
# The ANN's own batch when --batch_size is not given (the simulation and the calibration
# choose theirs to fit their memory budgets).
ANN_BATCH = 128
# Calibration images by default: for the scales; for fine-tuning, which trains on them.
CALIBRATION_IMAGES = 500
FINETUNE_IMAGES = 20_000
# --phases auto holds out this many calibration images to measure each K's latency, drawn
# on top of the calibration's own (at most half of a --calibration_size). 1,000 rather than
# 500: on akamaster's ResNets the chosen T's loss on other images is then 0.15-0.2 pp
# smaller in the worst quarter of draws (docs/RESULTS.md, "How many images to hold out,
# how many periods to read"), and 0.1 pp is one image.
AUTO_HELD_OUT = 1000


@dataclasses.dataclass
class RunConfig:
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
        phases: K; None: each method's default; "auto" (BSNN): the K and T with
            the lowest lossless latency on `AUTO_HELD_OUT` held-out calibration
            images (`bsnn_tf.conversion.latency`), which the conversion records
            and `phases_of` then returns.
        auto_tolerance: the percentage points of held-out accuracy that --phases
            auto lets the BSNN lose against the ANN (`LatencySearch.tolerance`).
        timesteps: the largest T; `None` takes `default_timesteps` (for BSNN the
            first readout plus `EXTRA_PERIODS` periods, or the T --phases auto chose
            where later).
        checkpoints: the T at which accuracy is measured; `None` takes
            `default_checkpoints`. `timesteps` is always one.
        statistics_images: spike statistics come from the first this many evaluated
            images (0: all of them); accuracy comes from all of them.
        calibration_size: images for the calibration; `None`: `CALIBRATION_IMAGES`, or
            `FINETUNE_IMAGES` for calibration "finetune" (`calibration_images`).
        finetune_epochs: epochs of calibration "finetune" (`None`: its image budget).
        finetune_labels: "finetune" also learns from the calibration images' labels
            (default: from the ANN alone).
        finetune_start: where "finetune"'s lambdas start (`FineTuning.start`).
        calibration_split: where they come from: "train"; "test", a random
            slice of the test images held out of the evaluation (see
            `load_images`); "auto", train when the dataset has it, else test.
        limit: simulate the first `limit` evaluated test images only (those
            left after any held-out calibration slice).
        batch_size: images per batch in the ANN, calibration and simulation; `None`:
            `ANN_BATCH` for the ANN, and for the calibration and the simulation as
            many as fit their memory budgets (`bsnn_tf.simulator.default_batch_size`),
            so that memory is bounded by the model, not by the data or T.
        output_dir: `None` takes `outputs/<dataset>_<model>`.
        distribute: split the batches of the ANN's evaluation and of the
            simulation over all local devices (data parallel; the accuracies
            are those of one device). Calibration and verification use one.
        overwrite: replace the outputs of an earlier run in `output_dir` (and start an
            unfinished one over).
        resume: continue the unfinished run of `output_dir` from its last finished batch
            (`partial`); without it, an unfinished run there is refused.
        skip_unreadable: skip test images that cannot be decoded (counted and listed
            in results.json); else the first one stops the run, naming its file.
        trained_phases: the K that the checkpoint's QuantizedReLU layers were trained
            for (train.py --snn_phases), set when it is loaded: the BSNN's K unless
            `phases` is given (`phases_of`).
    """

    model: str = "mnist_cnn"
    dataset: str = "mnist"
    weights: str | None = None
    random_weights: bool = False
    methods: tuple = ("bsnn",)
    phases: int | str | None = None
    auto_tolerance: float = LatencySearch.tolerance
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
    resume: bool = False
    skip_unreadable: bool = False
    finetune_epochs: int | None = None
    finetune_labels: bool = False
    finetune_start: str = FineTuning.start
    # Not a field (no flag sets it): the checkpoint's, set when it is loaded.
    trained_phases = None

    def __post_init__(self):
        self.methods = tuple(dict.fromkeys(self.methods))
        if self.output_dir is None:
            self.output_dir = os.path.join("outputs", f"{self.dataset}_{self.model}")
        if self.weights is None and not self.random_weights:
            self.weights = BUNDLED_CHECKPOINTS.get((self.model, self.dataset))
        self._searched_phases = {}  # {method: K} that --phases auto chose (`searched`)

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
        if self.calibration == "finetune":
            return FINETUNE_IMAGES
        return CALIBRATION_IMAGES + (AUTO_HELD_OUT if self.auto_phases else 0)

    @property
    def auto_phases(self):
        """Whether K is searched (--phases auto)."""
        return self.phases == "auto"

    @property
    def latency(self):
        """The `LatencySearch` of --phases auto: `AUTO_HELD_OUT` images held out, at
        most half of a --calibration_size."""
        share = AUTO_HELD_OUT / self.calibration_images
        return LatencySearch(held_out=share if self.calibration_size is None else min(0.5, share),
                             tolerance=self.auto_tolerance)

    @property
    def period_steps(self):
        """Steps every T must be a multiple of: one period of each method run in period mode."""
        return math.lcm(*(self.phases_of(m) for m in self.methods if METHODS[m].period_mode))

    @property
    def finetuning(self):
        """The `FineTuning` of calibration "finetune" that the flags ask for."""
        return FineTuning(epochs=self.finetune_epochs, start=self.finetune_start)

    def phases_of(self, method):
        """K for `method`: --phases; with --phases auto the K searched (once `searched`
        recorded it), else "auto"; else the checkpoint's trained K for BSNN; else the
        library's default for the method."""
        if self.auto_phases:
            return self._searched_phases.get(method, "auto")
        if self.phases is not None:
            return self.phases
        if method == "bsnn" and self.trained_phases is not None:
            return self.trained_phases
        return METHODS[method].default_phases

    def searched(self, method, phases):
        """Records the K that --phases auto chose for `method`."""
        self._searched_phases[method] = phases


def check_run_config(config):
    """Raises `ConfigError` for a configuration that cannot run; reads no data."""
    check_shared(config, sizes=("calibration_size", "batch_size"))
    if not config.methods:
        raise ConfigError(f"No method given. Known methods: {', '.join(METHODS)}.")
    for method in config.methods:
        if method not in METHODS:
            raise ConfigError(f"Unknown method {method!r}. Known methods: {', '.join(METHODS)}.")
    if config.auto_phases:
        _check_auto_phases(config)
    elif config.phases is not None and (not isinstance(config.phases, int)
                                        or not 1 <= config.phases <= coding.MAX_PHASES):
        raise ConfigError(f"phases must be in 1..{coding.MAX_PHASES}, got {config.phases!r}"
                          + ("" if isinstance(config.phases, int) else " (or give 'auto')")
                          + ".")
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
    else:
        _check_no_finetune_flags(config)
    if not 0 < config.percentile <= 100:
        raise ConfigError(f"percentile must be in (0, 100], got {config.percentile}.")
    check_weights(config)
    check_writable(config.output_dir)
    check_writable(os.path.dirname(os.path.abspath(config.output_dir)))  # lock and staging
    rundir.check_no_earlier_run(config.output_dir, config.overwrite)


def _check_finetune(config):
    others = [m for m in config.methods if not METHODS[m].readout_waits_for_output]
    if others:
        raise ConfigError(f"--calibration=finetune trains a BSNN's first readout, which "
                          f"{', '.join(others)} does not have; run it with --methods=bsnn.")
    if config.calibration_images < FINETUNE_MIN_IMAGES:
        raise ConfigError(f"--calibration=finetune trains on the calibration images: it needs "
                          f"--calibration_size of at least {FINETUNE_MIN_IMAGES} (thousands "
                          f"are better), got {config.calibration_images}.")
    try:
        config.finetuning.check(prefix="--finetune_")
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_auto_phases(config):
    others = [m for m in config.methods if not METHODS[m].readout_waits_for_output]
    if others:
        raise ConfigError(f"--phases auto searches a BSNN's K from its first readout, which "
                          f"{', '.join(others)} does not have; run it with --methods=bsnn.")
    if config.timesteps is not None or config.checkpoints:
        raise ConfigError("--phases auto chooses K, and with it which T are whole periods; "
                          "leave --timesteps and --checkpoints out (the run measures every "
                          "period from the first readout), or give --phases.")
    if config.calibration_images * config.latency.held_out < MIN_HELD_OUT - 0.5:
        raise ConfigError(f"--phases auto holds out half of --calibration_size (at most "
                          f"{AUTO_HELD_OUT}) and needs at least {MIN_HELD_OUT} held out: give "
                          f"--calibration_size of at least {2 * MIN_HELD_OUT}, got "
                          f"{config.calibration_images}.")
    try:
        config.latency.check()
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--auto_{error}") from None
    calibrating = round(config.calibration_images * (1 - config.latency.held_out))
    if config.calibration == "finetune" and calibrating < FINETUNE_MIN_IMAGES:
        raise ConfigError(f"--phases auto with --calibration=finetune trains on the calibration "
                          f"images it does not hold out, {calibrating} of "
                          f"--calibration_size={config.calibration_images}; it needs at "
                          f"least {FINETUNE_MIN_IMAGES} (thousands are better).")


def _check_no_finetune_flags(config):
    """Refuses --finetune_* flags that --calibration (not finetune) would leave unused."""
    given = [f"--{name}" for name in ("finetune_epochs", "finetune_labels", "finetune_start")
             if getattr(config, name) != RunConfig.default(name)]
    if given:
        names = " and ".join(given)
        raise ConfigError(f"{names} {'is a setting' if len(given) == 1 else 'are settings'} "
                          f"of --calibration=finetune, but --calibration={config.calibration}: "
                          f"nothing would be fine-tuned. Pass --calibration=finetune, or leave "
                          f"{names} out.")


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
