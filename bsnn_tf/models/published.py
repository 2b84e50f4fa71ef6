"""Published pretrained weights of zoo models: where they are, their hash, and fetching them.

`WEIGHTS` is the one table of them: zoo model and dataset -> URL and the
published hash. torchvision publishes the first 8 hex digits of each file's
SHA-256 in its name ("resnet18-f37072fd.pth"), and checks only those; so does
`download`, after `keras.utils.get_file` has fetched the file into Keras's
cache (`$KERAS_HOME`, else ~/.keras) under `CACHE_SUBDIR`. A file whose hash
does not match is deleted. With `$BSNN_OFFLINE` set (`data.OFFLINE_ENV`), only
the cache is read.

Example:
    >>> from bsnn_tf.models import published
    >>> weights = published.find("resnet18", "imagenet")
    >>> weights.url
    'https://download.pytorch.org/models/resnet18-f37072fd.pth'

Then `models.load_torchvision_weights(ann, published.download(weights))`
fetches the file (once) and loads it into the zoo's ResNet-18.
"""

import dataclasses
import hashlib
import os
import urllib.parse

import keras

from bsnn_tf import data

CACHE_SUBDIR = "bsnn_tf"
_CHUNK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    """One published weights file.

    Attributes:
        url: where it is downloaded from (its last path part names the cached file).
        sha256_prefix: the leading hex digits of its SHA-256, as published.
    """

    url: str
    sha256_prefix: str


# (zoo model, dataset) -> its published weights. The torchvision ImageNet
# ResNets are torchvision's IMAGENET1K_V1 weights.
WEIGHTS = {
    ("resnet18", "imagenet"): PublishedWeights(
        "https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd"),
    ("resnet34", "imagenet"): PublishedWeights(
        "https://download.pytorch.org/models/resnet34-b627a593.pth", "b627a593"),
}


class DownloadError(OSError):
    """Published weights that could not be downloaded, or did not match their hash."""


def find(model, dataset):
    """The `PublishedWeights` of zoo `model` trained on `dataset`, or None."""
    return WEIGHTS.get((model, dataset))


def available():
    """"model on dataset" for every entry of `WEIGHTS`, sorted (for messages)."""
    return sorted(f"{model} on {dataset}" for model, dataset in WEIGHTS)


def download(weights):
    """The local path of `weights`: downloaded once, then read from Keras's cache.

    The cache is `<CACHE_SUBDIR>` in `$KERAS_HOME`, read at each call, else in
    ~/.keras (/tmp/.keras where those cannot be written).

    Raises:
        DownloadError: the URL cannot be fetched (the message names it), or the
            file is not cached and `data.offline()`, or its SHA-256 does not
            start with `weights.sha256_prefix` (the file is deleted).
    """
    home = _cache_dir()
    if data.offline() and not os.path.isfile(_cached_path(weights, home)):
        raise DownloadError(
            f"Cannot download {weights.url}: ${data.OFFLINE_ENV} is set, and the file is not "
            f"in the cache ({_cached_path(weights, home)}).")
    try:
        path = keras.utils.get_file(origin=weights.url, cache_subdir=CACHE_SUBDIR,
                                    cache_dir=home)
    except Exception as error:  # get_file raises a bare Exception for URL errors
        raise DownloadError(f"Cannot download {weights.url}: {error}") from error
    digest = sha256(path)
    if not digest.startswith(weights.sha256_prefix.lower()):
        os.remove(path)
        raise DownloadError(
            f"The file downloaded from {weights.url} has SHA-256 {digest}, but the published "
            f"one starts with {weights.sha256_prefix}: it is incomplete or not the published "
            f"file, and was deleted ({path}). Run again to download it again."
        )
    return path


def _cache_dir():
    """$KERAS_HOME, else ~/.keras; created if missing, for get_file takes a missing one
    for read-only and falls back to /tmp/.keras."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        os.makedirs(home, exist_ok=True)
    except OSError:
        pass  # get_file falls back to /tmp/.keras
    return home


def _cached_path(weights, home):
    """Where get_file keeps `weights` (under /tmp/.keras when `home` is read-only)."""
    base = home if os.access(home, os.W_OK) else os.path.join("/tmp", ".keras")
    name = os.path.basename(urllib.parse.urlsplit(weights.url).path)
    return os.path.join(base, CACHE_SUBDIR, name)


def sha256(path):
    """The hex SHA-256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
