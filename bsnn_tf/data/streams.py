"""Batches for `fit`, `evaluate` and `predict`: a split streamed, shuffled and augmented, as a
`tf.data.Dataset` where TensorFlow is installed, else a `keras.utils.PyDataset`."""

import importlib
import math

import keras
import numpy as np

from bsnn_tf.data.datasets import spec
from bsnn_tf.data.files import find, optional_import
from bsnn_tf.data.splits import check_limit
from bsnn_tf.data.transforms import augment, preprocess

# Streamed splits up to this size are decoded once and kept in memory.
MAX_DECODED_BYTES = 2**31


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
