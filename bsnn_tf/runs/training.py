"""Training the ANNs that get converted, with the recipe of paper section 4.2.

SGD with momentum, cosine-decayed learning rate, weight decay as an L2
penalty on kernels (the compiled model: `bsnn_tf.runs.recipe`), the augmentation
of `bsnn_tf.data`. The result is a directory holding `model.keras`,
`results.json` and (when TensorFlow is installed) TensorBoard logs.

Example:
    >>> from bsnn_tf.runs import training
    >>> config = training.TrainConfig("mnist_cnn", "mnist", "runs/mnist", epochs=1, limit=256)
    >>> results = training.train(config)
    >>> 0.0 <= results["test_accuracy"] <= 1.0
    True
"""

import dataclasses
import importlib.util
import json
import math
import os
import time

import keras

from bsnn_tf import backend, coding, data
from bsnn_tf.runs import rundir
from bsnn_tf.runs.checks import ConfigError, check_shared, check_writable
from bsnn_tf.runs.recipe import build_model, compiled_model

# The paper's experiments; other zoo models may be trained on any dataset.
SUPPORTED_DATASETS = {
    "mnist_cnn": ("mnist",),
    "vgg16": ("cifar10", "cifar100"),
    "resnet20": ("cifar10", "cifar100"),
    "resnet18": ("cifar10", "cifar100", "imagenet"),
    "resnet34": ("imagenet",),
}
PRECISIONS = ("float32", "mixed_bfloat16")
DEFAULT_EPOCHS = {"mnist": 20, "cifar10": 300, "cifar100": 300, "imagenet": 100}


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; no model and no results were written."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (stored in results.json).

    Attributes:
        epochs: `None` takes `DEFAULT_EPOCHS[dataset]`.
        weight_decay: coefficient of the gradient term `weight_decay * w`
            added for every kernel (PyTorch's SGD `weight_decay`).
        limit: train on the first `limit` training images only.
        distribute: data parallel over all local devices (`backend.distribution_scope`):
            each batch of `batch_size` is split over them.
        warmup_epochs: the learning rate rises linearly from 0 to `learning_rate` over
            these epochs, then decays along the cosine to 0.
        label_smoothing: of the cross-entropy loss.
        precision: one of `PRECISIONS`: "mixed_bfloat16" computes in
            bfloat16 (fast on CPUs with AVX512_BF16) with float32 weights;
            the saved model is float32 either way.
        weights: start from this .keras checkpoint instead of the zoo model's
            random weights (fine-tuning). `model` may then be None (the checkpoint's
            own architecture); if given, the checkpoint must be that zoo model.
        snn_phases: train with the quantiser in the loop: every ReLU becomes a
            `bsnn_tf.quantized.QuantizedReLU` of this many bits (its thresholds
            fitted to a batch of training images first), so the BSNN converted
            from the saved model with K = snn_phases is the model at its first readout.
        overwrite: replace an earlier run in `output_dir` (its model.keras,
            results.json and logs/; other files are kept); else it is refused.
    """

    model: str | None
    dataset: str
    output_dir: str
    epochs: int | None = None
    batch_size: int = 128
    learning_rate: float = 0.1  # train.py's --lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    data_dir: str | None = None
    limit: int | None = None
    augment: bool = True
    rand_augment: bool = True
    cutout: bool = True
    seed: int = 0
    distribute: bool = False
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    precision: str = "float32"
    weights: str | None = None
    snn_phases: int | None = None
    overwrite: bool = False

    def __post_init__(self):
        if self.epochs is None and self.dataset in DEFAULT_EPOCHS:
            self.epochs = DEFAULT_EPOCHS[self.dataset]


def check_training_config(config):
    """Raises `ConfigError` for a configuration that cannot run."""
    check_shared(config, sizes=("epochs", "batch_size"))
    # Without --model, the checkpoint's own shape is checked against the dataset's on loading.
    supported = SUPPORTED_DATASETS.get(config.model, tuple(data.DATASETS))
    if config.dataset not in supported:
        raise ConfigError(
            f"Model {config.model!r} does not fit dataset {config.dataset!r}; "
            f"it is meant for: {', '.join(supported)}."
        )
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ConfigError(f"learning_rate: --lr must be a positive finite number, got "
                          f"{config.learning_rate}.")
    if config.precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}.")
    if not (math.isfinite(config.warmup_epochs) and 0 <= config.warmup_epochs < config.epochs):
        raise ConfigError(f"warmup_epochs must be in [0, epochs={config.epochs}), "
                          f"got {config.warmup_epochs}.")
    if not (math.isfinite(config.label_smoothing) and 0 <= config.label_smoothing < 1):
        raise ConfigError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}.")
    if config.snn_phases is not None:
        if not 1 <= config.snn_phases <= coding.MAX_PHASES:
            raise ConfigError(f"--snn_phases must be in 1..{coding.MAX_PHASES}, got "
                              f"{config.snn_phases}.")
        if config.precision != "float32":
            raise ConfigError("--snn_phases rounds activations to K bits, which bfloat16 "
                              "cannot hold exactly; train with --precision=float32.")
    if config.weights is not None and not os.path.isfile(config.weights):
        raise ConfigError(f"Checkpoint file not found: --weights={config.weights}")
    for field in ("momentum", "weight_decay"):
        if not (math.isfinite(getattr(config, field)) and getattr(config, field) >= 0):
            raise ConfigError(
                f"{field} must be a finite number >= 0, got {getattr(config, field)}.")
    check_writable(config.output_dir)
    check_writable(os.path.dirname(os.path.abspath(config.output_dir)))  # lock and staging
    rundir.check_no_earlier_run(config.output_dir, config.overwrite, rundir.TRAIN)


def train(config, command=None):
    """Trains the model of `config` (a `TrainConfig`) and writes its run directory.

    Returns what it writes to results.json, where `command` (the command
    line) is recorded too.

    The run is written into a staging directory beside `config.output_dir`
    that then takes its place whole (`rundir.replace_directory`), under
    `rundir.run_lock`: an interruption leaves the earlier run or this one.

    Raises:
        ConfigError, data.DatasetNotFoundError: before anything is written (an
            earlier run in `output_dir` without `overwrite`, or another run
            writing it, among them).
        DivergedError: the loss became NaN or infinite; nothing is written
            (an earlier run is kept).
    """
    check_training_config(config)
    with rundir.run_lock(config.output_dir, rundir.TRAIN):
        keras.utils.set_random_seed(config.seed)
        train_batches, test_batches = _batches(config)
        if config.distribute and keras.backend.backend() == "jax":
            _check_even_batches(config)
        with backend.distribution_scope(config.distribute):
            model = compiled_model(config, steps_per_epoch=len(train_batches))
            return rundir.replace_directory(
                config.output_dir, overwrite=config.overwrite, script=rundir.TRAIN,
                write=lambda staging: _fit_and_save(config, model, train_batches, test_batches,
                                                    staging, command))


def _fit_and_save(config, model, train_batches, test_batches, directory, command):
    """Trains `model`, then writes model.keras, results.json (returned) and logs/ into
    `directory` (the run's staging directory)."""
    clock, start = EpochClock(), time.time()
    # The batches are shuffled by bsnn_tf.data already.
    history = model.fit(train_batches, epochs=config.epochs, validation_data=test_batches,
                        shuffle=False, callbacks=[clock, *_callbacks(directory)])
    _check_finite(history.history["loss"], config)
    if config.precision != "float32":
        trained, model = model, build_model(config, "float32")
        model.set_weights(trained.get_weights())
    model.save(os.path.join(directory, "model.keras"))
    results = _results(config, history.history, clock, time.time() - start, command)
    _write_json(os.path.join(directory, "results.json"), results)
    return results


def _batches(config):
    """(the shuffled, augmented training batches, the test batches) of `config`."""
    train_batches = data.train_dataset(
        config.dataset, config.batch_size, config.data_dir, limit=config.limit,
        augment=config.augment, seed=config.seed, rand_augment=config.rand_augment,
        cutout=config.cutout,
    )
    return train_batches, data.dataset(config.dataset, "test", config.batch_size,
                                       config.data_dir)


def _check_finite(losses, config):
    if not all(math.isfinite(loss) for loss in losses):
        raise DivergedError(
            f"Training diverged: loss {losses[-1]} after {len(losses)} epoch(s); nothing "
            f"was saved. Lower --lr (now {config.learning_rate}).")


def _results(config, history, clock, train_seconds, command):
    """results.json of a run: the final test accuracy and loss, and the curve per epoch."""
    return {
        # The last epoch's validation pass is the final test evaluation.
        "test_accuracy": float(history["val_accuracy"][-1]),
        "test_loss": float(history["val_loss"][-1]),
        "epochs": config.epochs,
        "train_seconds": round(train_seconds, 1),
        # Test accuracy against training time, one entry per epoch.
        "curve": [{"epoch": epoch + 1, "seconds": round(seconds, 1), "test_accuracy": float(a)}
                  for epoch, (seconds, a) in enumerate(zip(clock.seconds,
                                                           history["val_accuracy"]))],
        "backend": keras.backend.backend(),
        "flags": dataclasses.asdict(config),
        "command": command,
    }


def _write_json(path, results):
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


class EpochClock(keras.callbacks.Callback):
    """Records the seconds since training began at the end of each epoch."""

    def on_train_begin(self, logs=None):
        self.start, self.seconds = time.time(), []

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.time() - self.start)


def _check_even_batches(config):
    """Raises `ConfigError` unless every batch splits evenly over the devices.

    JAX shards each batch over the devices in equal parts, so a last batch of
    a split that does not divide would fail at the end of an epoch.
    """
    devices = backend.devices(True).count
    sizes = {split: len(data.find(config.dataset, split, config.data_dir))
             for split in ("train", "test")}
    sizes["train"] = min(sizes["train"], config.limit or sizes["train"])
    for split, size in sizes.items():
        batches = {min(size, config.batch_size), size % config.batch_size}
        uneven = sorted(b for b in batches if b % devices)
        if uneven:
            raise ConfigError(
                f"--distribute on JAX splits every batch evenly over the {devices} devices, but "
                f"the {size} {split} images make batches of {uneven[0]}; choose a --batch_size "
                f"(or --limit) that gives batches of multiples of {devices}."
            )


def _callbacks(output_dir):
    # A NaN loss stops training at once (`train` then raises DivergedError).
    # keras.callbacks.TensorBoard writes through tf.summary: it needs both.
    stop = [keras.callbacks.TerminateOnNaN()]
    if not all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):
        return stop
    return stop + [keras.callbacks.TensorBoard(log_dir=os.path.join(output_dir, "logs"))]
