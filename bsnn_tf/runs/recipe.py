"""The model a training run compiles: the recipe of paper section 4.2 as a keras.Model.

The zoo model (or a checkpoint), optionally with its ReLUs quantised for a
BSNN of K = `snn_phases` (`bsnn_tf.quantized`), PyTorch-style weight decay on
every kernel, SGD with momentum on a cosine-decayed learning rate after a
linear warm-up, and cross-entropy with label smoothing. `bsnn_tf.runs.training`
runs it; the settings are a `training.TrainConfig`.
"""

import keras

from bsnn_tf import conversion, data, models, quantized, verification
from bsnn_tf.learning_rate import warmup_cosine
from bsnn_tf.losses import SmoothedSparseCrossentropy
from bsnn_tf.runs.checkpoints import check_fits
from bsnn_tf.runs.checks import ConfigError

# --snn_phases: the thresholds start at the 99.99th percentile of these many training images.
THRESHOLD_IMAGES = 256


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
        if _is_kernel(variable):
            # L2(c) adds the gradient 2 c w.
            variable.regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def compiled_model(config, steps_per_epoch):
    """The zoo model of `config` (or its checkpoint), with weight decay, compiled for
    training; with `snn_phases`, its ReLUs quantised, their thresholds fitted to
    `THRESHOLD_IMAGES` training images.

    Example:
        >>> from bsnn_tf.runs.training import TrainConfig
        >>> model = compiled_model(TrainConfig("mnist_cnn", "mnist", "runs/m"), 469)
    """
    model = build_model(config, config.precision)
    if config.snn_phases:
        model = _with_quantizers(model, config)
    add_weight_decay(model, config.weight_decay)
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=SmoothedSparseCrossentropy(config.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def build_model(config, precision):
    """The zoo model of `config` (or `config.weights`), its layers computing in
    `precision` (weights stay float32)."""
    spec = data.DATASETS[config.dataset]
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
            if config.model is not None:
                _check_is_zoo_model(model, config)
            return model
        return models.get(config.model, num_classes=spec.num_classes,
                          input_shape=spec.input_shape)
    finally:
        keras.config.set_dtype_policy(policy)


def _check_is_zoo_model(model, config):
    """ConfigError unless the checkpoint's kernels have the shapes of --model's, in order."""
    spec = data.DATASETS[config.dataset]
    zoo = models.get(config.model, num_classes=spec.num_classes, input_shape=spec.input_shape)
    theirs, ours = _kernel_shapes(model), _kernel_shapes(zoo)
    if [shape for _, shape in theirs] == [shape for _, shape in ours]:
        return
    index = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a[1] != b[1]),
                 min(len(theirs), len(ours)))
    where = (f"its kernel {index + 1}, of layer '{theirs[index][0]}', is {theirs[index][1]} "
             f"where {config.model}'s is {ours[index][1]}" if index < min(len(theirs), len(ours))
             else f"it has {len(theirs)} kernels where {config.model} has {len(ours)}")
    raise ConfigError(
        f"--weights {config.weights} is not --model {config.model}: {where}. Leave --model "
        "out to train the checkpoint's own architecture, or name the zoo model it is.")


def _kernel_shapes(model):
    """[(layer name, shape)] of the model's kernels, in layer order."""
    return [(layer.name, tuple(v.shape)) for layer in model.layers for v in layer.weights
            if _is_kernel(v)]


def _is_kernel(variable):
    """A layer's kernel (Conv2D's, Dense's, DepthwiseConv2D's): what weight decay acts on
    and what --weights is matched against --model by."""
    return variable.name.endswith("kernel")


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


def learning_rate_schedule(config, steps_per_epoch):
    """Linear warm-up from 0 to `config.learning_rate` over `warmup_epochs`, then cosine decay to 0.

    Example:
        >>> from bsnn_tf.runs.training import TrainConfig
        >>> schedule = learning_rate_schedule(TrainConfig("mnist_cnn", "mnist", "r"), 469)
        >>> round(float(schedule(0)), 6)
        0.1
    """
    return warmup_cosine(config.learning_rate, config.epochs * steps_per_epoch,
                         int(config.warmup_epochs * steps_per_epoch))


def _optimizer(config, steps_per_epoch):
    schedule = learning_rate_schedule(config, steps_per_epoch)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
