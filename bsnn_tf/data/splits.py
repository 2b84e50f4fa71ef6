"""Whole splits as preprocessed numpy arrays: `load`, and `calibration_batch`, a random
draw of training images for the converter's normalisation."""

import numpy as np

from bsnn_tf.data.files import find
from bsnn_tf.data.transforms import preprocess


def load(name, split, data_dir=None, limit=None):
    """Reads a whole split, preprocessed.

    Args:
        name: a key of `DATASETS`.
        split: one of the dataset's `splits`.
        data_dir: directory with the files (see the module docstring).
        limit: read only the first `limit` images (a positive int, or None
            for all), in file order (the CIFAR-10 JPEG files are grouped by
            class: a small `limit` there covers the first classes only).

    Returns:
        (x, y): float32 NHWC images, normalised as `DATASETS[name]` says,
        and int64 labels.

    Example:
        >>> x, y = load("mnist", "test", limit=8)   # or ("cifar10", "test_lossless", "/data")
        >>> x.shape
        (8, 28, 28, 1)
    """
    limit = check_limit(limit)
    images = find(name, split, data_dir)
    indices = np.arange(min(len(images), limit or len(images)))
    return preprocess(name, images.pixels(indices)), images.labels[indices]


def check_limit(limit):
    """`limit` as an int, or None; a ValueError unless it is None or a positive int."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be >= 1 (an int), or None for every image; got {limit!r}.")
    return int(limit)


def calibration_batch(name, n, data_dir=None, seed=0):
    """`n` preprocessed training images drawn at random (for normalisation).

    Example:
        >>> x = calibration_batch("mnist", 256)
        >>> x.shape
        (256, 28, 28, 1)
    """
    images = find(name, "train", data_dir)
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    return preprocess(name, images.pixels(indices))
