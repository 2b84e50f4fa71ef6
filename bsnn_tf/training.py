"""Training the ANNs that get converted, with the recipe of paper section 4.2.

SGD with momentum, cosine-decayed learning rate, weight decay as an L2
penalty on kernels, the augmentation of `bsnn_tf.data`. The result is a
directory holding `model.keras`, `results.json` and (when TensorFlow is
installed) TensorBoard logs.

Example:
    >>> from bsnn_tf import training
    >>> config = training.TrainConfig("mnist_cnn", "mnist", "runs/mnist", epochs=1)
    >>> results = training.train(config)
    >>> results["test_accuracy"]
"""

import dataclasses
import importlib.util
import json
import math
import os
import tempfile
import time

import keras

from bsnn_tf import backend, data, models
from bsnn_tf.validation import ConfigError, check_writable

# The paper's experiments; other zoo models may be trained on any dataset.
SUPPORTED_DATASETS = {
    "mnist_cnn": ("mnist",),
    "vgg16": ("cifar10", "cifar100"),
    "resnet20": ("cifar10", "cifar100"),
    "resnet18": ("cifar10", "cifar100", "imagenet"),
    "resnet34": ("imagenet",),
}
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
    """

    model: str
    dataset: str
    output_dir: str
    epochs: int = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    data_dir: str = None
    limit: int = None
    augment: bool = True
    rand_augment: bool = True
    seed: int = 0
    distribute: bool = False

    def __post_init__(self):
        if self.epochs is None and self.dataset in DEFAULT_EPOCHS:
            self.epochs = DEFAULT_EPOCHS[self.dataset]


def validate(config):
    """Raises `ConfigError` for a configuration that cannot run."""
    if config.model not in models.names():
        raise ConfigError(
            f"Unknown model {config.model!r}. Known models: {', '.join(models.names())}."
        )
    if config.dataset not in data.DATASETS:
        raise ConfigError(
            f"Unknown dataset {config.dataset!r}. "
            f"Known datasets: {', '.join(sorted(data.DATASETS))}."
        )
    supported = SUPPORTED_DATASETS.get(config.model, tuple(data.DATASETS))
    if config.dataset not in supported:
        raise ConfigError(
            f"Model {config.model!r} does not fit dataset {config.dataset!r}; "
            f"it is meant for: {', '.join(supported)}."
        )
    for field in ("epochs", "batch_size"):
        if getattr(config, field) < 1:
            raise ConfigError(f"{field} must be a positive integer, got {getattr(config, field)}.")
    if config.limit is not None and config.limit < 1:
        raise ConfigError(f"limit must be a positive integer, got {config.limit}.")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise ConfigError(f"lr must be a positive finite number, got {config.lr}.")
    for field in ("momentum", "weight_decay"):
        if not (math.isfinite(getattr(config, field)) and getattr(config, field) >= 0):
            raise ConfigError(
                f"{field} must be a finite number >= 0, got {getattr(config, field)}.")
    if config.distribute and keras.backend.backend() not in backend.DISTRIBUTED_BACKENDS:
        raise ConfigError(
            f"--distribute is not supported on the {keras.backend.backend()} backend "
            f"(only on {' and '.join(backend.DISTRIBUTED_BACKENDS)})."
        )
    check_writable(config.output_dir)


def train(config, command=None):
    """Trains `config.model` on `config.dataset` and writes the run directory.

    Args:
        config: a `TrainConfig`.
        command: the command line, recorded in results.json.

    Returns:
        The dict written to `<output_dir>/results.json`.

    Raises:
        ConfigError, data.DatasetNotFoundError: before anything is written.
        DivergedError: the loss became NaN or infinite; model.keras and
            results.json are not written (an earlier run's are kept).
    """
    validate(config)
    keras.utils.set_random_seed(config.seed)
    spec = data.DATASETS[config.dataset]
    train_batches = data.train_dataset(
        config.dataset, config.batch_size, config.data_dir, limit=config.limit,
        augment=config.augment, seed=config.seed, rand_augment=config.rand_augment,
    )
    test_batches = data.dataset(config.dataset, "test", config.batch_size, config.data_dir)
    if config.distribute and keras.backend.backend() == "jax":
        _check_even_batches(config)
    with backend.distribution_scope(config.distribute):
        model = models.get(config.model, num_classes=spec.num_classes, input_shape=spec.input_shape)
        add_weight_decay(model, config.weight_decay)
        model.compile(
            optimizer=_optimizer(config, steps_per_epoch=len(train_batches)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        os.makedirs(config.output_dir, exist_ok=True)
        start = time.time()
        # The batches are shuffled by bsnn_tf.data already.
        history = model.fit(train_batches, epochs=config.epochs, validation_data=test_batches,
                            shuffle=False, callbacks=_callbacks(config.output_dir))
        losses = history.history["loss"]
        if not all(math.isfinite(loss) for loss in losses):
            raise DivergedError(
                f"Training diverged: loss {losses[-1]} after {len(losses)} epoch(s); nothing "
                f"was saved. Lower --lr (now {config.lr}).")
        write_atomically(os.path.join(config.output_dir, "model.keras"), model.save)
    results = {
        # The last epoch's validation pass is the final test evaluation.
        "test_accuracy": float(history.history["val_accuracy"][-1]),
        "test_loss": float(history.history["val_loss"][-1]),
        "epochs": config.epochs,
        "train_seconds": round(time.time() - start, 1),
        "backend": keras.backend.backend(),
        "flags": dataclasses.asdict(config),
        "command": command,
    }

    def write_json(path):
        with open(path, "w") as f:
            json.dump(results, f, indent=2)

    write_atomically(os.path.join(config.output_dir, "results.json"), write_json)
    return results


def write_atomically(path, write):
    """Calls `write(temporary path)` beside `path`, then renames it to `path`.

    A failure or a kill while writing leaves any earlier `path` as it was.

    Example:
        >>> write_atomically("run/model.keras", model.save)
    """
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}-",
                                         suffix=os.path.splitext(name)[1])
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


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


def add_weight_decay(model, weight_decay):
    """Adds PyTorch-style weight decay, `weight_decay * w` in the gradient, to every kernel.

    The L2 penalties sit on the variables rather than in the layer configs,
    so the saved model is the zoo model as built, free of training-only
    settings.

    Example:
        >>> add_weight_decay(model, 5e-4)
        >>> len(model.losses)   # one penalty per kernel
    """
    for variable in model.trainable_variables:
        if variable.name.endswith("kernel"):
            # L2(c) adds the gradient 2 c w.
            variable.regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def _optimizer(config, steps_per_epoch):
    schedule = keras.optimizers.schedules.CosineDecay(
        config.lr, decay_steps=config.epochs * steps_per_epoch
    )
    return keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)


def _callbacks(output_dir):
    # A NaN loss stops training at once (`train` then raises DivergedError).
    # keras.callbacks.TensorBoard writes through tf.summary: it needs both.
    stop = [keras.callbacks.TerminateOnNaN()]
    if not all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):
        return stop
    return stop + [keras.callbacks.TensorBoard(log_dir=os.path.join(output_dir, "logs"))]
