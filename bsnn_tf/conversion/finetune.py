"""The finetune stage (calibration="finetune"): the first readout trained against the ANN.

A BSNN's output at its first readout is the ANN with every spiking layer's
output rounded to K bits of [0, lambda] (docs/DESIGN.md, "Calibration").
Post-training calibration cannot undo what that rounding loses on deep nets;
training with the quantiser in the loop can (QCFS, Bu et al. 2022; LSQ,
Esser et al. 2020). This stage builds that quantised network from the folded
graph, every ReLU a `QuantizedReLU` starting at its calibrated lambda, and
trains its weights, biases and lambdas end to end by distillation from the
ANN's logits (and the labels, when given): KL divergence to the ANN's
softmax at temperature `temperature`, plus `label_weight` times the
cross-entropy with the labels. Training images are augmented (random shifts,
and horizontal flips for colour images), the learning rate follows a cosine
schedule with a short warm-up, and a held-out slice of the images picks the
best epoch (epoch 0, the calibrated start, included). What is trained is what
is simulated: BN is folded first, the trained lambdas become the
normalisation (the normalize stage) and the weights the synapses, so the converted
network's first readout is the trained network (`SpikingNetwork.first_readout_model`).

Example:
    >>> snn = bsnn_tf.convert(ann, x_train[:600], calibration="finetune",
    ...                       finetuning=FineTuning(epochs=1), verbose=0)
    >>> snn.first_readout
    12
"""

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from bsnn_tf import console, data
from bsnn_tf.conversion import ops as graph_ops
from bsnn_tf.conversion.keras_graph import to_keras
from bsnn_tf.learning_rate import warmup_cosine
from bsnn_tf.quantized import QuantizedReLU

# Fewer images than this cannot both train and hold out a slice that picks the epoch.
MIN_IMAGES = 256
# The calibration modes whose scales fine-tuning can start from (`FineTuning.start`).
STARTS = ("percentile", "mse")


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """The settings of calibration="finetune".

    Attributes:
        epochs: passes over the training images; None: as many as make about
            `image_budget` training images in all (at least 2, at most 30).
        image_budget: images seen when `epochs` is None: about a quarter of an
            hour for a CIFAR-10 ResNet-20 on a 2-core CPU (docs/RESULTS.md).
        batch_size: images per training step.
        learning_rate: Adam's peak step size (after a warm-up of `warmup` of the
            steps, then cosine decay to 0).
        threshold_rate: lambda's steps, in log lambda, relative to the weights'
            (`QuantizedReLU`). At rate 1 and a learning rate of 1e-4, lambda
            can move by about 13% at most in a fine-tune; at 30 the lambdas of
            the CIFAR-10 ResNets moved by factors up to 1.7-2.0 (docs/RESULTS.md).
        held_out: the fraction of the images held out to pick the best epoch
            (at least one batch of them).
        temperature: of the softened softmax in the distillation loss.
        label_weight: weight of the cross-entropy with the labels (used when
            labels are given).
        augment: random shifts of up to 1/8 of the image size, and horizontal
            flips for images with 3 channels.
        channelwise: start from per-channel statistics and learn one lambda per
            channel (else per layer, unless `convert(channelwise=True)`).
        seed: for the held-out slice, the order and the augmentation.
        start: where the lambdas start: "mse" (the K-bit scale with the smallest
            quantisation error, as calibration="mse" searches it: the better
            start on 4 of the 5 nets and K compared in docs/RESULTS.md, for
            about half a minute on a ResNet-20) or "percentile" (the p-th
            percentile of each layer's ANN activations).
    """

    epochs: int | None = None
    image_budget: int = 150_000
    batch_size: int = 64
    learning_rate: float = 1e-4
    threshold_rate: float = 30.0
    warmup: float = 0.05
    held_out: float = 0.1
    temperature: float = 1.0
    label_weight: float = 0.5
    augment: bool = True
    channelwise: bool = True
    seed: int = 0
    start: str = "mse"

    def check(self, prefix="finetuning."):
        """Raises a ValueError naming the first setting out of range (as `prefix` + its name:
        convert.py's flags are "--finetune_" + the name)."""
        checks = [
            ("epochs", self.epochs is None or (isinstance(self.epochs, int) and self.epochs >= 1),
             "a positive int or None"),
            ("image_budget", isinstance(self.image_budget, int) and self.image_budget >= 1,
             "a positive int"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1,
             "a positive int"),
            ("learning_rate", _is_positive_number(self.learning_rate), "a positive number"),
            ("threshold_rate", _is_positive_number(self.threshold_rate), "a positive number"),
            ("warmup", _fraction(self.warmup, closed=True), "in [0, 1)"),
            ("held_out", _fraction(self.held_out), "in (0, 1)"),
            ("temperature", _is_positive_number(self.temperature), "a positive number"),
            ("label_weight", _fraction(self.label_weight, closed=True) or self.label_weight == 1,
             "in [0, 1]"),
            ("start", self.start in STARTS, " or ".join(map(repr, STARTS))),
        ]
        for name, valid, what in checks:
            if not valid:
                raise ValueError(f"{prefix}{name} must be {what}, got "
                                 f"{getattr(self, name)!r}.")
        return self

    def epochs_for(self, images):
        """Epochs over `images` training images: `epochs`, else about `image_budget`
        images in all (2 to 30 epochs)."""
        if self.epochs is not None:
            return self.epochs
        return int(np.clip(math.ceil(self.image_budget / images), 2, 30))


def _is_positive_number(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _fraction(value, closed=False):
    return isinstance(value, (int, float)) and (0 <= value if closed else 0 < value) and value < 1


def check_images(data_count, settings):
    """Raises a ValueError when `data_count` images cannot both train and pick the epoch."""
    if data_count < MIN_IMAGES:
        raise ValueError(
            f"calibration='finetune' needs at least {MIN_IMAGES} calibration images (it trains "
            f"on them and holds {settings.held_out:.0%} out to pick the epoch); got "
            f"{data_count}. Pass more training images (thousands: 5,000 to 20,000 for a "
            "CIFAR-10 net), or use calibration='percentile'.")


def finetune(graph, lambdas, x, labels, config, input_code=None, verbose="auto"):
    """Trains the quantised network of folded `graph` at `lambdas` against its ANN.

    Args:
        graph: the folded graph (after the fold stage); a copy with the trained weights is returned.
        lambdas: {spiking node: lambda} from calibration: the starting thresholds.
        x: the calibration images.
        labels: integer labels of `x`, or None (distillation from the ANN alone).
        config: the conversion's `ConversionConfig`: its `finetuning` (a `FineTuning`)
            says how to train; its K, membrane at rest and `per_channel`, the
            neurons' first output.
        input_code: None (real-valued input), or x -> the phase-coded input.

    Returns:
        (graph with the trained weights and biases, {spiking node: trained lambda}, record)
        where record says what happened (epochs, the best one, held-out losses).

    Raises:
        ValueError: too few images, labels that do not fit, images the ANN cannot
            tell apart (wrong preprocessing), or a loss that became NaN.
    """
    settings = config.finetuning
    check_images(len(x), settings)
    graph = graph.copy()
    for node in graph:  # every weighted layer learns a bias, as bias correction would
        if node.spec.calibrated:
            node.weights.setdefault("bias", np.zeros(node.spec.output_channels(node.weights),
                                                     "float32"))
    teacher = to_keras(graph)[0]
    student = _student(graph, lambdas, config, input_code)
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(x))
    held = max(settings.batch_size, int(round(settings.held_out * len(x))))
    train, validation = order[held:], order[:held]
    _check_teacher_and_labels(teacher, x, labels, settings.batch_size)
    classes = int(teacher.outputs[0].shape[-1])
    targets = _targets(labels, len(x), classes)
    combined = _distiller(student, teacher)
    epochs = settings.epochs_for(len(train))
    steps = epochs * math.ceil(len(train) / settings.batch_size)
    combined.compile(
        optimizer=keras.optimizers.Adam(
            warmup_cosine(settings.learning_rate, steps, int(settings.warmup * steps))),
        loss=DistillationLoss(classes, settings.temperature,
                              settings.label_weight if labels is not None else 0.0),
        metrics=[Agreement(classes)])
    batches = _Batches(x[train], targets[train], settings, rng)
    held_out = (x[validation], targets[validation])
    best = _BestEpoch(student, combined, held_out, settings.batch_size)
    print(f"Fine-tuning the first readout: {len(train)} images, {len(validation)} held out, "
          f"{epochs} epochs of {len(batches)} steps"
          + (", with labels" if labels is not None else "") + ":") if verbose != 0 else None
    history = combined.fit(batches, epochs=epochs, validation_data=held_out,
                           callbacks=[keras.callbacks.TerminateOnNaN(), best],
                           verbose=_fit_verbosity(verbose))
    losses = history.history.get("loss", [])
    if any(not math.isfinite(loss) for loss in losses):
        raise ValueError(
            f"Fine-tuning diverged: the loss became NaN or infinite in epoch {len(losses)}. "
            f"Lower finetuning.learning_rate (it is {settings.learning_rate:g}), or check "
            "the calibration images for extreme values.")
    best.restore()
    trained = _thresholds(graph, student)
    record = {"epochs": epochs, "best_epoch": best.epoch, "held_out_images": len(validation),
              "training_images": len(train), "held_out_loss": best.losses,
              "labels": labels is not None, "start": settings.start,
              "threshold_change": _threshold_change(lambdas, trained)}
    return _read_back(graph, student), trained, record


def _student(graph, lambdas, config, input_code):
    """The quantised network: `graph` with every spiking node a QuantizedReLU at its lambda."""
    def quantizer(node):
        return QuantizedReLU(config.phases, config.initial_membrane,
                             threshold=lambdas[node.name], channelwise=config.per_channel,
                             max_value=node.config.get("max_value"),
                             threshold_rate=config.finetuning.threshold_rate, name=node.name)

    input_layer = (lambda: keras.layers.Lambda(input_code, name="input_code")) if input_code \
        else None
    model = to_keras(graph, spiking_layer=quantizer, input_layer=input_layer)[0]
    return keras.Model(model.inputs, model.outputs[0], name="student")


def _distiller(student, teacher):
    """x -> [student logits, teacher logits] (the teacher frozen), for `DistillationLoss`."""
    teacher.trainable = False
    image = keras.Input(student.inputs[0].shape[1:])
    both = keras.layers.Concatenate(name="student_and_teacher")(
        [student(image), keras.Model(teacher.inputs, teacher.outputs[0], name="teacher")(image)])
    return keras.Model(image, both, name="distiller")


class DistillationLoss(keras.losses.Loss):
    """KL(softmax(teacher / t) || softmax(student / t)) t^2, plus `label_weight` times
    the cross-entropy with one-hot labels; y_pred is [student, teacher] logits."""

    def __init__(self, classes, temperature=1.0, label_weight=0.0, **kwargs):
        super().__init__(name="distillation", **kwargs)
        self.classes, self.temperature, self.label_weight = classes, temperature, label_weight

    def call(self, y_true, y_pred):
        student, teacher = y_pred[..., :self.classes], y_pred[..., self.classes:]
        t = self.temperature
        wanted = ops.softmax(teacher / t, axis=-1)
        log_student = ops.log_softmax(student / t, axis=-1)
        log_wanted = ops.log_softmax(teacher / t, axis=-1)
        loss = ops.sum(wanted * (log_wanted - log_student), axis=-1) * t * t
        if self.label_weight:
            cross_entropy = -ops.sum(y_true * ops.log_softmax(student, axis=-1), axis=-1)
            loss = (1 - self.label_weight) * loss + self.label_weight * cross_entropy
        return loss


class Agreement(keras.metrics.MeanMetricWrapper):
    """How often the student's top-1 class is the teacher's."""

    def __init__(self, classes, **kwargs):
        def agree(y_true, y_pred):
            student, teacher = y_pred[..., :classes], y_pred[..., classes:]
            return ops.cast(ops.equal(ops.argmax(student, -1), ops.argmax(teacher, -1)),
                            "float32")

        super().__init__(agree, name="agreement", **kwargs)


def _targets(labels, count, classes):
    """One-hot labels, or zeros (unused: label_weight 0) without labels."""
    if labels is None:
        return np.zeros((count, classes), "float32")
    return np.eye(classes, dtype="float32")[np.asarray(labels, "int64")]


def _check_teacher_and_labels(teacher, x, labels, batch_size):
    """A ValueError when the ANN cannot tell the images apart (wrong preprocessing or
    range) or does not agree with the labels (labels of other images)."""
    sample = x[:min(len(x), 1024)]
    predicted = np.argmax(teacher.predict(sample, batch_size=batch_size, verbose=0), -1)
    classes = int(teacher.outputs[0].shape[-1])
    common = np.bincount(predicted, minlength=classes).max() / len(predicted)
    if classes >= 3 and common > 0.95:
        raise ValueError(
            f"The ANN gives one class to {common:.0%} of the calibration images: they do not "
            "look like its inputs. Preprocess them as for the ANN (range, mean and std, "
            "channel order) before fine-tuning.")
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"calibration_labels have shape {labels.shape}; give one integer "
                         f"class per calibration image, shape ({len(x)},).")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"calibration_labels span {labels.min()}..{labels.max()}, but the ANN "
                         f"has {classes} classes.")
    agreement = np.mean(predicted == labels[:len(sample)])
    if classes >= 3 and agreement < 2.0 / classes:
        raise ValueError(
            f"The ANN agrees with only {agreement:.1%} of calibration_labels (chance: "
            f"{1 / classes:.1%}): the labels do not match the images. Pass the labels of "
            "these images, in their order, or none.")


class _Batches(keras.utils.PyDataset):
    """Shuffled, augmented training batches of (images, one-hot labels or zeros)."""

    def __init__(self, x, targets, settings, rng):
        super().__init__()
        self.x, self.targets, self.settings, self.rng = x, targets, settings, rng
        self.order = rng.permutation(len(x))

    def __len__(self):
        return math.ceil(len(self.x) / self.settings.batch_size)

    def __getitem__(self, index):
        size = self.settings.batch_size
        rows = self.order[index * size:(index + 1) * size]
        images = self.x[rows]
        if self.settings.augment:
            images = data.shift_and_flip(images, self.rng)
        return images, self.targets[rows]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


class _BestEpoch(keras.callbacks.Callback):
    """Keeps the student's weights of the epoch with the lowest held-out loss (epoch 0, the
    calibrated start, included) and restores them at the end."""

    def __init__(self, student, combined, held_out, batch_size):
        super().__init__()
        self.student, self.combined = student, combined
        self.held_out, self.batch_size = held_out, batch_size
        self.epoch, self.losses, self.best = 0, [], None

    def on_train_begin(self, logs=None):
        loss = self.combined.evaluate(*self.held_out, batch_size=self.batch_size, verbose=0,
                                      return_dict=True)["loss"]
        self._consider(0, loss)

    def on_epoch_end(self, epoch, logs=None):
        self._consider(epoch + 1, (logs or {}).get("val_loss", math.inf))

    def _consider(self, epoch, loss):
        self.losses.append(float(loss))
        if math.isfinite(loss) and (self.best is None or loss < min(self.losses[:-1])):
            self.epoch, self.best = epoch, [w.copy() for w in self.student.get_weights()]

    def restore(self):
        if self.best is not None:
            self.student.set_weights(self.best)


def _fit_verbosity(verbose):
    if verbose == 0:
        return 0
    return 1 if console.is_terminal() else 2  # one plain line per epoch in a log


def _read_back(graph, student):
    """`graph` with the student's trained weights and biases."""
    for node in graph:
        if node.spec.role != graph_ops.SYNAPSE or not node.weights:
            continue
        values = student.get_layer(node.name).get_weights()
        names = [n for n in node.spec.weight_names if n in node.weights]
        node.weights.update({n: np.asarray(v, "float32") for n, v in zip(names, values)})
    return graph


def _threshold_change(before, after):
    """The median and largest factor by which a lambda moved (per channel where it is)."""
    factors = np.concatenate([
        np.exp(np.abs(np.log(np.ravel(after[name]) / np.ravel(before[name]))))
        for name in after])
    return {"median": float(np.median(factors)), "max": float(np.max(factors))}


def _thresholds(graph, student):
    """{spiking node: its trained lambda}."""
    found = {}
    for node in graph.spiking_nodes():
        value = ops.convert_to_numpy(student.get_layer(node.name).threshold)
        found[node.name] = value if np.ndim(value) else float(value)
    return found
