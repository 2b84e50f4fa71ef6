"""Reading a split from a `<dataset>_<split>.npz` file: plain pixels or JPEG bytes, each
checked (keys, label shape and range, pixel shape and range) with an error that names
the file and says what to store instead.
"""

import zipfile
import zlib

import numpy as np

from bsnn_tf.data.datasets import CorruptDataError, spec
from bsnn_tf.data.labeled import LabeledImages, jpeg_images


def read_npz(path, split, name):
    """A `LabeledImages` of dataset `name` from an npz holding plain pixels or JPEG bytes.

    `split` is the key prefix/suffix: "train" or "test".
    """
    pixel_keys = (f"x_{split}", f"y_{split}")
    jpeg_keys = (f"{split}_jpeg", f"{split}_offsets", f"y_{split}")
    try:
        with np.load(path) as archive:
            keys = set(archive.files)
            found = next((k for k in (pixel_keys, jpeg_keys) if keys >= set(k)), None)
            arrays = found and [archive[key] for key in found]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise CorruptDataError(f"{path}: not a readable .npz archive: {error}") from error
    if found is None:
        raise CorruptDataError(
            f"{path}: expected keys {' and '.join(pixel_keys)} (pixels) or "
            f"{', '.join(jpeg_keys)} (JPEG bytes); found {sorted(keys)}."
        )
    num_classes = spec(name).num_classes
    if found == pixel_keys:
        x, y = arrays
        _check_not_empty(len(x), found, path)
        _check_labels(y, len(x), num_classes, path)
        return LabeledImages.from_arrays(_check_pixels(x, spec(name), path), y, path)
    blob, offsets, y = arrays
    _check_not_empty(len(offsets) - 1, found, path)
    _check_labels(y, len(offsets) - 1, num_classes, path)
    return jpeg_images(blob, offsets, y, path)


def _check_not_empty(count, keys, source):
    """CorruptDataError if the arrays `keys` of the file hold no image."""
    if count < 1:
        raise CorruptDataError(f"{source}: holds no images ({', '.join(keys)} hold none); "
                               "store at least one image and its label.")


def _check_labels(labels, count, num_classes, source):
    """CorruptDataError unless `labels` are `count` integers in [0, num_classes)."""
    if labels.ndim != 1 or len(labels) != count:
        raise CorruptDataError(
            f"{source}: labels have shape {labels.shape} for {count} images; expected "
            f"({count},). Store one integer label per image{_label_fix(labels, count)}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise CorruptDataError(f"{source}: labels have dtype {labels.dtype}; store integers.")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDataError(
            f"{source}: labels range over [{labels.min()}, {labels.max()}], outside "
            f"[0, {num_classes}) of this dataset.")


def _label_fix(labels, count):
    """How to turn `labels` of the wrong shape into one integer per image, if we can tell."""
    if labels.shape == (count, 1):
        return " (e.g. y.ravel())"
    if labels.ndim == 2 and len(labels) == count:
        return " (one-hot labels: y.argmax(axis=1))"
    return ""


def _check_pixels(x, dataset_spec, source):
    """Images as uint8, or float 0..255 from float pixels in [0, 1]; else CorruptDataError.

    The library keeps pixels in 0..255 up to `preprocess`, which divides by 255.
    Single-channel images stored without the channel axis (N, H, W), as
    `keras.datasets.mnist` gives them, get it added.
    """
    if (dataset_spec.stored_size is None and dataset_spec.input_shape[-1] == 1
            and tuple(x.shape[1:]) == dataset_spec.input_shape[:-1]):
        x = x[..., None]
    if dataset_spec.stored_size is None and tuple(x.shape[1:]) != dataset_spec.input_shape:
        raise CorruptDataError(
            f"{source}: images have shape {x.shape}; expected (N, "
            f"{', '.join(map(str, dataset_spec.input_shape))}).")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating) and x.size and 0 <= x.min() and x.max() <= 1:
        return x.astype("float32") * 255.0
    extent = f" in [{x.min()}, {x.max()}]" if x.size and np.issubdtype(x.dtype, np.number) else ""
    raise CorruptDataError(
        f"{source}: pixels have dtype {x.dtype}{extent}; store uint8 pixels in 0..255 or "
        "float pixels in [0, 1].")

