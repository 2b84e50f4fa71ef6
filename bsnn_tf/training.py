"""Training the ANNs that get converted, with the recipe of paper section 4.2.

SGD with momentum, cosine-decayed learning rate, weight decay as an L2
penalty on kernels, the augmentation of `bsnn_tf.data`. The result is a
directory holding `model.keras`, `results.json` and (when TensorFlow is
installed) TensorBoard logs.

Example:
    >>> from bsnn_tf import training
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
import tempfile
import time

import keras

from bsnn_tf import backend, coding, conversion, data, models, quantized, rundir, verification
from bsnn_tf.pipeline.checkpoints import check_fits
from bsnn_tf.run_checks import ConfigError, check_shared, check_writable

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
# --snn_phases: the thresholds start at the 99.99th percentile of these many training images.
THRESHOLD_IMAGES = 256


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
            random weights (fine-tuning).
        snn_phases: train with the quantiser in the loop: every ReLU becomes a
            `bsnn_tf.quantized.QuantizedReLU` of this many bits (its thresholds
            fitted to a batch of training images first), so the BSNN converted
            from the saved model with K = snn_phases is the model at its first readout.
        overwrite: replace an earlier run in `output_dir` (its model.keras,
            results.json and logs/; other files are kept); else it is refused.
    """

    model: str
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
        trained, model = model, _build(config, data.DATASETS[config.dataset], "float32")
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


def write_atomically(path, write):
    """Calls `write(temporary path)` beside `path`, then renames it to `path`.

    A failure or an interruption while writing leaves any earlier `path` as
    it was and removes the temporary file (a SIGTERM too where it is turned
    into KeyboardInterrupt, as train.py does; a SIGKILL cannot be cleaned up).

    Example:
        >>> write_atomically("model.keras", model.save)
    """
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}-",
                                         suffix=os.path.splitext(name)[1])
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
        ...                           keras.layers.Dense(2)])
        >>> add_weight_decay(model, 5e-4)
        >>> len(model.losses)   # one penalty per kernel
        2
    """
    for variable in model.trainable_variables:
        if variable.name.endswith("kernel"):
            # L2(c) adds the gradient 2 c w.
            variable.regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def compiled_model(config, steps_per_epoch):
    """The zoo model of `config` (or its checkpoint), with weight decay, compiled for
    training; with `snn_phases`, its ReLUs quantised, their thresholds fitted to
    `THRESHOLD_IMAGES` training images.

    Example:
        >>> model = compiled_model(TrainConfig("mnist_cnn", "mnist", "runs/m"), 469)
    """
    model = _build(config, data.DATASETS[config.dataset], config.precision)
    if config.snn_phases:
        model = _with_quantizers(model, config)
    add_weight_decay(model, config.weight_decay)
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=SmoothedSparseCrossentropy(config.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def _build(config, spec, precision):
    """The zoo model (or `config.weights`), its layers computing in `precision` (weights
    stay float32)."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        if config.weights:
            try:
                model = models.load_keras(config.weights)
            except (OSError, ValueError) as error:
                raise ConfigError(str(error)) from error
            try:
                check_fits(model, config.dataset)
            except ConfigError as error:
                raise ConfigError(f"--weights {config.weights}: {error}") from error
            if verification.ends_in_softmax(model):
                raise ConfigError(
                    f"--weights {config.weights}: its output layer '{model.layers[-1].name}' "
                    "is a softmax, but train.py's loss takes logits (it would train on "
                    "probabilities). Save the model without its final softmax (convert.py "
                    "takes either).")
            return model
        return models.get(config.model, num_classes=spec.num_classes,
                          input_shape=spec.input_shape)
    finally:
        keras.config.set_dtype_policy(policy)


def _with_quantizers(model, config):
    """`model` with its ReLUs as QuantizedReLU (K = snn_phases); thresholds fitted to
    `THRESHOLD_IMAGES` training images where they are new (a checkpoint may bring
    trained ones)."""
    trained = {layer.phases for layer in quantized.layers_of(model)
               if isinstance(layer, quantized.QuantizedReLU)}
    if trained - {config.snn_phases}:
        raise ConfigError(f"--weights {config.weights} was trained with --snn_phases="
                          f"{sorted(trained)[0]}; continue with that, or start from a "
                          "checkpoint trained without it.")
    _check_quantizable(model, config)
    quantized_model = quantized.quantize_relus(model, config.snn_phases)
    if not quantized.trained_settings(quantized_model):
        raise ConfigError(f"--snn_phases quantises the ReLUs of {_source(config)}, but it has "
                          "none: the saved model would hold no quantiser. Use a ReLU network, "
                          "or train without --snn_phases.")
    if not trained:
        images = data.calibration_batch(config.dataset, THRESHOLD_IMAGES, config.data_dir,
                                        seed=config.seed)
        quantized.set_thresholds(quantized_model, images)
    return quantized_model


def _check_quantizable(model, config):
    """Raises `ConfigError` unless `model` converts to a BSNN (ReLU activations only), the
    model that --snn_phases trains for."""
    try:
        conversion.trace(model)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--snn_phases trains a model for conversion to a BSNN, but "
                          f"{_source(config)} does not convert:\n{error}\nTrain it without "
                          "--snn_phases, or start from a ReLU network.") from error


def _source(config):
    """The flag that gave the model: --weights FILE, or --model NAME."""
    return f"--weights {config.weights}" if config.weights else f"--model {config.model}"


# Registered: a model saved by `train` holds its loss, and `keras.models.load_model`
# (compile=True) rebuilds it by this name once bsnn_tf.training is imported.
@keras.saving.register_keras_serializable(package="bsnn_tf")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels smoothed by `smoothing`.

    The target puts `1 - smoothing` on the label and spreads `smoothing`
    evenly over all classes (as `keras.losses.CategoricalCrossentropy`'s
    `label_smoothing`, which the sparse loss lacks).

    Example:
        >>> loss = SmoothedSparseCrossentropy(0.1)
        >>> float(loss(np.array([0]), np.array([[0.0, 0.0]])))   # log 2
        0.693...
    """

    def __init__(self, smoothing=0.0, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        log_probabilities = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        picked = keras.ops.take_along_axis(log_probabilities, labels[:, None], axis=-1)[:, 0]
        spread = keras.ops.mean(log_probabilities, axis=-1)
        return -((1.0 - self.smoothing) * picked + self.smoothing * spread)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def learning_rate_schedule(config, steps_per_epoch):
    """Linear warm-up from 0 to `config.learning_rate` over `warmup_epochs`, then cosine decay to 0.

    Example:
        >>> schedule = learning_rate_schedule(TrainConfig("mnist_cnn", "mnist", "r"), 469)
        >>> round(float(schedule(0)), 6)
        0.1
    """
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else config.learning_rate, alpha=0.0,
        decay_steps=config.epochs * steps_per_epoch - warmup_steps,
        warmup_target=config.learning_rate if warmup_steps else None, warmup_steps=warmup_steps,
    )


def _optimizer(config, steps_per_epoch):
    schedule = learning_rate_schedule(config, steps_per_epoch)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)


def _callbacks(output_dir):
    # A NaN loss stops training at once (`train` then raises DivergedError).
    # keras.callbacks.TensorBoard writes through tf.summary: it needs both.
    stop = [keras.callbacks.TerminateOnNaN()]
    if not all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):
        return stop
    return stop + [keras.callbacks.TensorBoard(log_dir=os.path.join(output_dir, "logs"))]
