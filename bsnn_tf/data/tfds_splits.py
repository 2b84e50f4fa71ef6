"""Splits from tensorflow-datasets: a prepared copy first, then a download (unless
`offline()`), or a preparation of the ILSVRC2012 tar files; read lazily, in order, with
only the labels held whole.
"""

import importlib
import os

import numpy as np

from bsnn_tf.data.datasets import DatasetNotFoundError, spec
from bsnn_tf.data.labeled import LabeledImages, optional_import, resize_and_crop

# Set (to anything but "", "0", "false" or "no"), nothing is downloaded: no dataset, no weights.
OFFLINE_ENV = "BSNN_OFFLINE"


def find_in_tfds(name, split):
    """(images, None) from tensorflow-datasets, or (None, why not)."""
    if optional_import("tensorflow_datasets") is None:
        return None, "tensorflow-datasets: not installed"
    try:
        return tfds_images(name, split), None
    except Exception as error:  # tfds raises many types; the report keeps the reason.
        missing = isinstance(error, ImportError) and error.name
        return None, (
            f"tensorflow-datasets {spec(name).tfds_name!r} (a prepared copy under $TFDS_DATA_DIR "
            f"or ~/tensorflow_datasets, then a download): {type(error).__name__}: {error}"
            + (f" (pip install {error.name})" if missing else "")
        )


def offline():
    """Whether `OFFLINE_ENV` forbids downloads."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def tfds_images(name, split, manual_dir=None):
    """Reads a tensorflow-datasets split into memory (prepared copy first, then a download
    unless `offline()`; from `manual_dir`, a preparation of local files)."""
    tfds = importlib.import_module("tensorflow_datasets")
    dataset_spec = spec(name)
    tfds_split = "validation" if name == "imagenet" and split != "train" else split
    kwargs = dict(split=tfds_split, as_supervised=True)
    if manual_dir:
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        kwargs["download_and_prepare_kwargs"] = {"download_config": config}
    try:
        supervised = tfds.load(dataset_spec.tfds_name, download=False, **kwargs)
    except AssertionError as error:  # tfds's "could not find data" signal
        if not (manual_dir or dataset_spec.tfds_downloads):
            raise DatasetNotFoundError(
                "no prepared copy (tensorflow-datasets cannot download it: it needs the "
                "ILSVRC2012 files)") from error
        if offline() and not manual_dir:
            raise DatasetNotFoundError(
                f"no prepared copy, and no download: ${OFFLINE_ENV} is set") from error
        supervised = tfds.load(dataset_spec.tfds_name, download=True, **kwargs)
    source = f"tensorflow-datasets {dataset_spec.tfds_name}[{tfds_split}]"
    return _TfdsImages(supervised, source, dataset_spec.stored_size)


class _TfdsImages(LabeledImages):
    """A tensorflow-datasets split (a `tf.data.Dataset` of (image, label)), read lazily,
    in order: batches of chosen indices stream from one pass over it, and only the
    labels are ever held whole (read on first use)."""

    def __init__(self, supervised, source, size):
        self._dataset = supervised
        super().__init__([], self._read_one, source, size)
        self._labels = None  # read on first use
        self.read_batches = _tfds_read_batches

    @property
    def labels(self):
        if self._labels is None:
            labels = self._dataset.map(lambda image, label: label)
            self._labels = np.fromiter(labels.as_numpy_iterator(), "int64")
        return self._labels

    @labels.setter
    def labels(self, value):
        self._labels = value

    def __len__(self):
        cardinality = int(self._dataset.cardinality())
        return cardinality if cardinality >= 0 else len(self.labels)

    def head(self, n):
        return _TfdsImages(self._dataset.take(n), self.source, self._size)

    def pixels(self, indices):
        """One pass over the split, keeping the images at `indices` (in their order)."""
        order = np.argsort(indices, kind="stable")
        wanted = np.asarray(indices, "int64")[order]
        batches = [x for _, x, _, _, _ in _tfds_read_batches(self, wanted, 256, finish=None)]
        return np.concatenate(batches)[np.argsort(order, kind="stable")]

    def _read_one(self, index):
        image, _ = next(self._dataset.skip(index).take(1).as_numpy_iterator())
        return image


def _tfds_read_batches(images, indices, batch_size, finish):
    """`streams.image_batches`' reader for `_TfdsImages`: one lazy pass over the split
    up to the last index, keeping `indices` (ascending; repeats read once), resized,
    cropped and `finish`ed (unless None) in tf.data's parallel maps."""
    tf = importlib.import_module("tensorflow")
    wanted = np.zeros(int(indices.max()) + 1 if len(indices) else 0, bool)
    wanted[indices] = True
    mask = tf.convert_to_tensor(wanted)
    size, shape = images._size, images.pixel_shape() if images._size else None

    def resize(pixels):
        return pixels if size is None else resize_and_crop(pixels, size)

    def read_image(index, example):
        pixels = tf.numpy_function(resize, [example[0]], tf.uint8, stateful=False)
        if shape:
            pixels.set_shape(shape)
        return index, pixels, True, tf.cast(example[1], tf.int64)

    def finish_batch(index, pixels, ok, label):
        return index, tf.numpy_function(finish, [pixels], tf.float32, stateful=False), ok, label

    pipeline = (images._dataset.take(len(wanted)).enumerate()
                .filter(lambda index, example: tf.gather(mask, index))
                .map(read_image, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size))
    if finish is not None:
        pipeline = pipeline.map(finish_batch, num_parallel_calls=tf.data.AUTOTUNE)
    pipeline = pipeline.prefetch(2)
    for index, x, ok, y in pipeline.as_numpy_iterator():
        yield index, x, ok, y, {}

