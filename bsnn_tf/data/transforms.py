"""Pixels to model inputs: `preprocess` (centre crop, scale, normalise), and the training
augmentations (`augment`, the paper's crop, flip and Cutout; `shift_and_flip`, fine-tuning's).

Example:
    >>> from bsnn_tf import data
    >>> x = data.preprocess("cifar10", np.zeros((2, 32, 32, 3), "uint8"))
    >>> x.shape, x.dtype
    ((2, 32, 32, 3), dtype('float32'))
"""

import numpy as np

from bsnn_tf.data.datasets import spec


def preprocess(name, pixels):
    """uint8 (or 0..255 float) pixels -> the float32 input of the models."""
    dataset = spec(name)
    x = center_crop(pixels, dataset.input_shape[:2]).astype("float32") / 255.0
    if dataset.mean is not None:
        x = (x - np.asarray(dataset.mean, "float32")) / np.asarray(dataset.std, "float32")
    return x


def augment(name, pixels, rng, cutout=True):
    """Random crop (after padding), horizontal flip and Cutout, then `preprocess`.

    Args:
        pixels: a batch of uint8 (or 0..255 float) images, NHWC.
        rng: a `numpy.random.Generator`.
        cutout: apply the dataset's Cutout (short schedules train better without).

    Example:
        >>> pixels = np.zeros((2, 32, 32, 3), "uint8")
        >>> augment("cifar10", pixels, np.random.default_rng(0)).shape
        (2, 32, 32, 3)
    """
    augmentation = spec(name).augmentation
    if augmentation is None:
        return preprocess(name, pixels)
    height, width = spec(name).input_shape[:2]
    pad = augmentation.pad
    padded = np.pad(pixels, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    x = _random_crop(padded, (height, width), rng)
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    x = preprocess(name, x)
    if cutout and augmentation.cutout:
        x = _cutout(x, augmentation.cutout, rng)
    return x


def center_crop(x, shape):
    top = (x.shape[1] - shape[0]) // 2
    left = (x.shape[2] - shape[1]) // 2
    return x[:, top:top + shape[0], left:left + shape[1]]


def _random_crop(x, shape, rng):
    n, height, width = x.shape[:3]
    tops = rng.integers(0, height - shape[0] + 1, size=n)
    lefts = rng.integers(0, width - shape[1] + 1, size=n)
    rows = tops[:, None] + np.arange(shape[0])
    cols = lefts[:, None] + np.arange(shape[1])
    return x[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def shift_and_flip(x, rng, flip=None):
    """Preprocessed images shifted at random by up to 1/8 of their size (the border filled
    with 0, the mean after normalisation) and, for colour images, flipped left-right at
    random: the augmentation of fine-tuning (`conversion.finetune`).

    Args:
        x: a batch of preprocessed images, NHWC.
        rng: a `numpy.random.Generator`.
        flip: flip half of them (default: when they have 3 channels).

    Example:
        >>> shift_and_flip(np.ones((2, 32, 32, 3), "float32"), np.random.default_rng(0)).shape
        (2, 32, 32, 3)
    """
    if x.ndim != 4:
        return x
    height, width = x.shape[1:3]
    pad_h, pad_w = max(height // 8, 1), max(width // 8, 1)
    padded = np.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    shifted = _random_crop(padded, (height, width), rng)
    if flip if flip is not None else x.shape[-1] == 3:
        flipped = rng.random(len(x)) < 0.5
        shifted[flipped] = shifted[flipped, :, ::-1]
    return shifted


def _cutout(x, size, rng):
    """Zeroes (the dataset mean, after normalisation) a random square per image."""
    n, height, width = x.shape[:3]
    centres_y = rng.integers(0, height, size=n)
    centres_x = rng.integers(0, width, size=n)
    rows, cols = np.arange(height), np.arange(width)
    inside_y = np.abs(rows[None] - centres_y[:, None]) * 2 < size
    inside_x = np.abs(cols[None] - centres_x[:, None]) * 2 < size
    mask = inside_y[:, :, None] & inside_x[:, None, :]
    return np.where(mask[..., None], 0.0, x).astype("float32")
