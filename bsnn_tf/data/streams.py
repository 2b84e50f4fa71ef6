"""Batches for `fit`, `evaluate` and `predict`: a split streamed, shuffled and augmented, as a
`tf.data.Dataset` where TensorFlow is installed, else a `keras.utils.PyDataset`."""

import collections
import concurrent.futures
import functools
import importlib
import math
import os

import keras
import numpy as np

from bsnn_tf.data.datasets import CorruptDataError, spec
from bsnn_tf.data.files import find
from bsnn_tf.data.labeled import optional_import
from bsnn_tf.data.splits import check_limit
from bsnn_tf.data.transforms import augment, preprocess

# Streamed splits up to this size are decoded once and kept in memory.
MAX_DECODED_BYTES = 2**31
# Decoded batches that `image_batches` holds ready ahead of the one being used.
PREFETCH_BATCHES = 2


class Batch(collections.namedtuple("Batch", "x y indices unreadable")):
    """A batch of `image_batches`: preprocessed images `x`, their labels `y` and
    `indices`, and `unreadable`, [(index, message)] of the images skipped in it."""

    @property
    def count(self):
        """How many of the requested indices this batch covers, skipped ones included."""
        return len(self.indices) + len(self.unreadable)


def image_batches(name, images, indices, batch_size, skip_unreadable=False):
    """Preprocessed batches of the images at `indices` (ascending), decoded, resized and
    preprocessed in parallel with whatever uses them, `PREFETCH_BATCHES` ahead: a
    `tf.data` pipeline (parallel map, prefetch) with TensorFlow, else a thread pool.
    Only those batches are ever in memory. The pixels are `images.pixel(i)`'s, through
    `preprocess(name, ...)`.

    Args:
        name: the dataset (its preprocessing).
        images: a `LabeledImages` (`find`).
        indices: which images, ascending.
        batch_size: images per batch (the last may have fewer).
        skip_unreadable: leave out images that cannot be decoded (listed in each
            `Batch.unreadable`); else the first one raises CorruptDataError naming its file.

    Yields:
        `Batch`es, in order.

    Example:
        >>> images = find("mnist", "test")
        >>> batches = image_batches("mnist", images, range(10), batch_size=4)
        >>> [(b.x.shape, b.y.tolist()) for b in batches][-1]
        ((2, 28, 28, 1), [5, 9])
    """
    indices = np.asarray(indices, "int64")
    finish = functools.partial(preprocess, name)
    read = images.read_batches or (_tf_read_batches if optional_import("tensorflow")
                                   else _threaded_read_batches)
    for batch_indices, x, ok, y, errors in read(images, indices, batch_size, finish):
        unreadable = [(int(i), errors[int(i)]) for i in batch_indices[~ok]]
        if unreadable and not skip_unreadable:
            raise CorruptDataError(unreadable[0][1])
        yield Batch(x[ok], y[ok], batch_indices[ok], unreadable)


def _checked_reader(images):
    """(read(i) -> (uint8 pixels, readable), errors {index: message}): a reader that
    records the images it cannot decode instead of raising."""
    errors, shape = {}, images.pixel_shape()

    def read(index):
        try:
            return images.pixel(index), True
        except CorruptDataError as error:
            errors[int(index)] = str(error)
            return np.zeros(shape, "uint8"), False

    return read, errors


def _tf_read_batches(images, indices, batch_size, finish):
    """`image_batches`' reader with TensorFlow: tf.data's parallel map and prefetch."""
    tf = importlib.import_module("tensorflow")
    read, errors = _checked_reader(images)
    labels = tf.convert_to_tensor(images.labels)

    def read_image(index):
        pixels, ok = tf.numpy_function(read, [index], (tf.uint8, tf.bool), stateful=False)
        return index, pixels, ok, tf.gather(labels, index)

    def finish_batch(index, pixels, ok, label):
        return index, tf.numpy_function(finish, [pixels], tf.float32, stateful=False), ok, label

    pipeline = (tf.data.Dataset.from_tensor_slices(indices)
                .map(read_image, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size)
                .map(finish_batch, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(PREFETCH_BATCHES))
    for index, x, ok, y in pipeline.as_numpy_iterator():
        yield index, x, ok, y, errors


def _threaded_read_batches(images, indices, batch_size, finish):
    """`image_batches`' reader without TensorFlow: a thread pool decodes the next
    `PREFETCH_BATCHES` batches while the caller uses this one (PIL decodes and resizes
    without the GIL)."""
    read, errors = _checked_reader(images)

    def read_batch(batch_indices):
        pixels, ok = zip(*map(read, batch_indices))
        return (batch_indices, finish(np.stack(pixels)), np.array(ok),
                images.labels[batch_indices], errors)

    def read_parallel(pool, batch_indices):
        parts = np.array_split(batch_indices, min(len(batch_indices), os.cpu_count() or 1))
        return [pool.submit(read_batch, part) for part in parts]

    starts = range(0, len(indices), batch_size)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pending = collections.deque()
        for start in starts:
            pending.append(read_parallel(pool, indices[start:start + batch_size]))
            if len(pending) > PREFETCH_BATCHES:
                yield _joined([part.result() for part in pending.popleft()])
        while pending:
            yield _joined([part.result() for part in pending.popleft()])


def _joined(parts):
    """One batch from the parts of it that threads read."""
    return (*(np.concatenate(arrays) for arrays in list(zip(*parts))[:4]), parts[0][4])


def dataset(name, split, batch_size, data_dir=None, limit=None, augment=False,
            shuffle=False, seed=None, rand_augment=True, cutout=True):
    """Streams a split as (x, y) batches for `fit`, `evaluate` or `predict`.

    Splits up to `MAX_DECODED_BYTES` are decoded once and kept in memory;
    larger ones (ImageNet folders) are decoded batch by batch. With
    TensorFlow installed this is a `tf.data.Dataset` (which `fit` accepts on
    every backend), else a `keras.utils.PyDataset`. Augmentation is `augment`
    (crop, flip, and Cutout unless `cutout` is False), preceded by `keras.layers.RandAugment` where the
    dataset's `Augmentation` asks for it, `rand_augment` allows it and the
    Keras backend is TensorFlow.

    Example:
        >>> test = dataset("mnist", "test", batch_size=256)
        >>> images, labels = next(iter(test))
        >>> tuple(images.shape), tuple(labels.shape)
        ((256, 28, 28, 1), (256,))
    """
    limit = check_limit(limit)
    images = find(name, split, data_dir)
    if limit:
        images = images.head(limit)
    images = images.decoded(MAX_DECODED_BYTES)
    augment = augment and spec(name).augmentation is not None
    if optional_import("tensorflow") is None:
        return _Batches(name, images, batch_size, augment, shuffle, seed, cutout)
    return _tf_dataset(name, images, batch_size, augment, shuffle, seed, rand_augment, cutout)


def train_dataset(name, batch_size, data_dir=None, limit=None, augment=True, seed=None,
                  rand_augment=True, cutout=True):
    """The shuffled, augmented training split; see `dataset`.

    Example:
        >>> batches = train_dataset("mnist", 128)    # or ("cifar10", 128, "/data")
        >>> images, labels = next(iter(batches))
        >>> tuple(images.shape)
        (128, 28, 28, 1)
    """
    return dataset(name, "train", batch_size, data_dir=data_dir, limit=limit,
                   augment=augment, shuffle=True, seed=seed, rand_augment=rand_augment,
                   cutout=cutout)


class _Batches(keras.utils.PyDataset):
    """numpy-only batches of a `LabeledImages` for backends without TensorFlow."""

    def __init__(self, name, images, batch_size, augmented, shuffle, seed, cutout):
        super().__init__()
        self._cutout = cutout
        self._name, self._images, self._batch_size = name, images, batch_size
        self._augmented, self._shuffle = augmented, shuffle
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(images))
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self._images) / self._batch_size)

    def __getitem__(self, index):
        indices = self._order[index * self._batch_size:(index + 1) * self._batch_size]
        pixels = self._images.pixels(indices)
        if self._augmented:
            return augment(self._name, pixels, self._rng, self._cutout), self._images.labels[indices]
        return preprocess(self._name, pixels), self._images.labels[indices]

    def on_epoch_end(self):
        if self._shuffle:
            self._rng.shuffle(self._order)


def _tf_dataset(name, images, batch_size, augmented, shuffle, seed, rand_augment=True,
                cutout=True):
    tf = importlib.import_module("tensorflow")
    dataset_spec = spec(name)
    rng = np.random.default_rng(seed)
    stored_shape = images.pixel(0).shape
    height, width, channels = dataset_spec.input_shape
    # Captured tensors, not graph constants: a graph holds at most 2 GB.
    labels = tf.convert_to_tensor(images.labels)
    array = None if images.array is None else tf.convert_to_tensor(images.array)

    def read(index):
        image = tf.numpy_function(images.pixel, [index], tf.uint8, stateful=False)
        image.set_shape(stored_shape)
        return image, tf.gather(labels, index)

    def lookup(index):
        return tf.gather(array, index), tf.gather(labels, index)

    def finish(pixels):
        return augment(name, pixels, rng, cutout) if augmented else preprocess(name, pixels)

    def finish_batch(pixels, labels):
        x = tf.numpy_function(finish, [pixels], tf.float32, stateful=augmented)
        x.set_shape((None, height, width, channels))
        return x, labels

    indices = tf.data.Dataset.range(len(images))
    if shuffle:
        indices = indices.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    pipeline = indices.map(read if array is None else lookup, num_parallel_calls=tf.data.AUTOTUNE)
    # keras.layers.RandAugment inside tf.data costs about 4 ms an image on the
    # TensorFlow backend and 50x that on JAX, where it would starve training.
    tensorflow_backend = keras.backend.backend() == "tensorflow"
    if augmented and rand_augment and dataset_spec.augmentation.rand_augment and tensorflow_backend:
        rand_augment = keras.layers.RandAugment(value_range=(0, 255), seed=seed)

        def rand_augment_image(image, label):
            return rand_augment(tf.cast(image, "float32")), label

        pipeline = pipeline.map(rand_augment_image, num_parallel_calls=tf.data.AUTOTUNE)
    pipeline = pipeline.batch(batch_size).map(finish_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return pipeline.prefetch(tf.data.AUTOTUNE)
