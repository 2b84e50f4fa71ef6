"""Model zoo: the paper's architectures as convertible Keras models (all ReLU).

Example:
    >>> from bsnn_tf import models
    >>> ann = models.get("resnet20", num_classes=10, input_shape=(32, 32, 3))

Published pretrained weights of zoo models (torchvision's ImageNet ResNet-18/34)
are listed, downloaded and hash-checked by `bsnn_tf.models.published`; a
trained .keras checkpoint is read by `load_keras`, which names a damaged file.
"""

import os
import zipfile

import keras

from bsnn_tf.models import published
from bsnn_tf.models.cnn import mnist_cnn
from bsnn_tf.models.resnet import resnet18, resnet20, resnet34
from bsnn_tf.models.torchvision import load_torchvision_weights
from bsnn_tf.models.vgg import vgg16

_REGISTRY = {
    "mnist_cnn": mnist_cnn,
    "vgg16": vgg16,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "resnet34": resnet34,
}


def register(name):
    """Decorator adding a builder `fn(num_classes, input_shape, **kw)` to the zoo."""

    def decorate(fn):
        _REGISTRY[name] = fn
        return fn

    return decorate


def names():
    """Names `get` accepts."""
    return sorted(_REGISTRY)


def get(name, num_classes=10, input_shape=(32, 32, 3), **kwargs):
    """Builds zoo model `name` with random weights.

    Raises:
        ValueError: unknown `name` (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown model {name!r}. Known models: {', '.join(names())}."
        )
    return _REGISTRY[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)


def load_keras(path):
    """The keras.Model saved in the .keras file `path` (not compiled).

    Keras reports any unreadable archive as "File not found"; this says
    which file is missing or damaged.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is damaged (truncated, not a .keras zip archive,
            or an archive Keras cannot read); the message names it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"Cannot load checkpoint {path}: the file is damaged (not a complete "
                         ".keras zip archive; truncated while copying or downloading?). Copy, "
                         "download or save it again.")
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"Cannot load checkpoint {path}: the file is damaged or not a Keras "
                         f"model ({type(error).__name__}: {error}). Copy, download or save it "
                         "again.") from error
