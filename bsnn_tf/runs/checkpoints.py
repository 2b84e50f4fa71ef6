"""Which ANN a run converts: the checkpoint, torchvision or published weights, or random
ones; and the checks that it fits the dataset and converts, before any data is read.

Example:
    >>> from bsnn_tf import runs
    >>> config = runs.RunConfig()          # the demo CNN on MNIST
    >>> ann = runs.load_ann(config)
    >>> runs.check_fits(ann, "mnist")          # raises ConfigError if it does not
"""

import os
import pathlib

import keras

from bsnn_tf import data, models, quantized
from bsnn_tf.conversion.trace import trace
from bsnn_tf.network import SpikingNetwork
from bsnn_tf.runs.checks import ConfigError
from bsnn_tf.validation import check_whole_periods, shape_fits

DEMO_CHECKPOINT = os.path.join(data.DEMO_DIR, "mnist_cnn.keras")
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parents[2] / "pretrained"
# Checkpoints trained with our train.py and committed: --weights defaults to them.
BUNDLED_CHECKPOINTS = {
    ("mnist_cnn", "mnist"): DEMO_CHECKPOINT,
    ("resnet20", "cifar10"): str(PRETRAINED_DIR / "cifar10_resnet20.keras"),
}
KERAS_SUFFIX = ".keras"
TORCHVISION_SUFFIXES = (".pth", ".pt", ".safetensors")


def check_weights(config):
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
    check_weights(config)
    spec = data.DATASETS[config.dataset]
    if config.random_weights:
        keras.utils.set_random_seed(0)
        return models.get(config.model, spec.num_classes, spec.input_shape)
    weights = config.weights or download_published_weights(config.model, config.dataset)
    if weights.endswith(KERAS_SUFFIX):
        ann = _load_keras(weights)
        check_trained_phases(ann, config)
        return ann
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


def check_trained_phases(ann, config):
    """Sets `config.trained_phases` to the K that the QuantizedReLU layers of `ann`
    (train.py --snn_phases) were trained for, the BSNN's K; raises `ConfigError` where
    --phases differs from it, or --timesteps is not a whole number of its periods."""
    trained = quantized.trained_settings(ann)
    if not trained or "bsnn" not in config.methods:
        return  # (the baselines take the quantisers as ReLUs)
    if len(trained) > 1:
        raise ConfigError(
            f"--weights {config.weights}: its QuantizedReLU layers were trained for different "
            f"(phases, initial_membrane): {sorted(trained)}; a BSNN has one K and one "
            "membrane at rest. Retrain it with one --snn_phases.")
    (phases, _), layer = next(iter(trained.items()))
    if config.phases is not None and config.phases != phases:
        raise ConfigError(
            f"--phases={config.phases} does not fit --weights {config.weights}: it was trained "
            f"with --snn_phases={phases} (its QuantizedReLU layers, e.g. '{layer}', have "
            f"phases={phases}), and a BSNN of another K is not the trained network at its "
            f"first readout. Pass --phases={phases}, or leave --phases out.")
    config.trained_phases = phases
    if config.timesteps is not None:
        check_whole_periods((config.timesteps, *(config.checkpoints or ())), config.period_steps,
                            ConfigError, advice=f"--weights {config.weights} was trained with "
                            f"--snn_phases={phases}: use multiples of {config.period_steps}.")


def check_fits(ann, dataset):
    """Raises `ConfigError` unless `ann` takes the dataset's images and predicts its classes."""
    if isinstance(ann, SpikingNetwork):
        raise ConfigError(
            f"Model {ann.name!r} is a converted SpikingNetwork (method={ann.method!r}; "
            "convert.py saves them as snn_<method>.keras), not an ANN; pass the ANN checkpoint "
            "it was converted from.")
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
        trace(ann)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{error}\nOnly ReLU networks convert (docs/DESIGN.md); retrain "
                          "the model with ReLU activations, or pass another --weights.") from error
