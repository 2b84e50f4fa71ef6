"""Batches of images from whatever a user holds: the one place the library reads its inputs.

`simulate`, `evaluate`, `verify`, `SpikingNetwork.predict` and `convert` take
what `keras.Model.predict` takes: a numpy array (or anything `np.asarray`
reads), a `tf.data.Dataset`, a `keras.utils.PyDataset`, or a Python iterable
(a generator, say) of batches. Each element of a stream is a batch `x` or a
tuple `(x, y)` / `(x, y, sample_weight)`, as for `keras.Model.fit`; an
unbatched `tf.data.Dataset` (elements of one image each) is batched here.
A stream is read once, batch by batch, so memory does not grow with its length.

Example:
    >>> import numpy as np
    >>> from bsnn_tf import batches
    >>> x, y = np.zeros((5, 2, 2, 1), "float32"), np.arange(5)
    >>> [(len(bx), by.tolist()) for bx, by in batches.iterate(x, 2, labels=y)]
    [(2, [0, 1]), (2, [2, 3]), (1, [4])]
    >>> stream = ((x[i:i + 3], y[i:i + 3]) for i in range(0, 5, 3))
    >>> [(len(bx), by.tolist()) for bx, by in batches.iterate(stream)]
    [(3, [0, 1, 2]), (2, [3, 4])]
"""

import keras
import numpy as np

# The batch an unbatched tf.data.Dataset is cut into when the caller names none.
UNBATCHED_BATCH = 32


def is_stream(data):
    """Whether `data` is a stream of batches rather than one array of images."""
    if isinstance(data, (np.ndarray, list, tuple)) or keras.ops.is_tensor(data):
        return False
    return (isinstance(data, keras.utils.PyDataset) or _is_tf_dataset(data)
            or hasattr(data, "__iter__") or hasattr(data, "__next__"))


def count(data):
    """The number of images in `data` if known without reading it (an array), else None."""
    return None if is_stream(data) else len(data)


def iterate(data, batch_size=None, labels=None, image_rank=None):
    """Yields `(x, y)` numpy batches of `data`; `y` is None where there are no labels.

    Args:
        data: an array of images, a `tf.data.Dataset`, a `keras.utils.PyDataset`
            or an iterable of batches (see the module's docstring).
        batch_size: images per batch of an array (default: all of them), or per
            batch of an unbatched `tf.data.Dataset`; a stream's own batches are
            passed on as they come.
        labels: the labels of an array `data`; a stream carries its own.
        image_rank: dimensions of one image (3 for HWC); tells an unbatched
            `tf.data.Dataset` from a batched one.

    Raises:
        ValueError: labels given beside a stream, or labels that do not match `x`.
    """
    if not is_stream(data):
        yield from _array_batches(data, batch_size, labels)
        return
    if labels is not None:
        raise ValueError(
            f"Labels were given beside a stream ({type(data).__name__}), which carries its "
            "own: give a stream of (images, labels) batches, or an array of images with "
            "its labels.")
    for element in _stream_elements(data, batch_size, image_rank):
        yield _split(element)


def collect(data, labels=None, image_rank=None):
    """`data` read whole into arrays: (x, y), y None without labels (for calibration sets)."""
    parts = list(iterate(data, labels=labels, image_rank=image_rank))
    if not parts:
        raise ValueError(f"The {type(data).__name__} gave no images; pass at least one batch.")
    x = np.concatenate([x for x, _ in parts])
    has_labels = [y is not None for _, y in parts]
    if any(has_labels) and not all(has_labels):
        raise ValueError("Some batches of the stream have labels and some do not; give "
                         "(images, labels) for every batch, or images alone for every batch.")
    return x, (np.concatenate([y for _, y in parts]) if all(has_labels) else None)


def _array_batches(x, batch_size, labels):
    x = x if isinstance(x, np.ndarray) else (keras.ops.convert_to_numpy(x)
                                             if keras.ops.is_tensor(x) else np.asarray(x))
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 0 or len(labels) != len(x):
            raise ValueError(f"labels have shape {labels.shape}, but there are {len(x)} "
                             f"images: give one integer label per image, shape ({len(x)},).")
    size = len(x) if not batch_size else int(batch_size)
    for begin in range(0, len(x), max(size, 1)):
        yield x[begin:begin + size], None if labels is None else labels[begin:begin + size]


def batched(dataset, image_rank, batch_size=None):
    """A `tf.data.Dataset` of single images batched (`batch_size`, default
    UNBATCHED_BATCH); anything else as it is."""
    if _is_tf_dataset(dataset) and _element_rank(dataset) == image_rank:
        return dataset.batch(batch_size or UNBATCHED_BATCH)
    return dataset


def _stream_elements(data, batch_size, image_rank):
    if isinstance(data, keras.utils.PyDataset):
        total = data.num_batches
        indices = range(total) if total is not None else _forever()
        return (data[index] for index in indices)
    if _is_tf_dataset(data):
        return batched(data, image_rank, batch_size).as_numpy_iterator()
    return iter(data)


def _forever():
    index = 0
    while True:
        yield index
        index += 1


def _is_tf_dataset(data):
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "element_spec")


def _element_rank(dataset):
    spec = dataset.element_spec
    spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    return len(spec.shape) if spec.shape.rank is not None else None


def _split(element):
    """(x, y or None) as numpy from a batch `x`, `(x,)`, `(x, y)` or `(x, y, weights)`."""
    if isinstance(element, (tuple, list)) and 1 <= len(element) <= 3:
        x, y = element[0], element[1] if len(element) > 1 else None
    else:
        x, y = element, None
    return _numpy(x), None if y is None else _numpy(y)


def _numpy(value):
    return keras.ops.convert_to_numpy(value) if keras.ops.is_tensor(value) else np.asarray(value)
