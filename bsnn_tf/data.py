"""The paper's datasets: finding, decoding, preprocessing and augmenting them.

`load` returns whole preprocessed splits as numpy arrays; `dataset` and
`train_dataset` stream (optionally augmented) batches that `model.fit` accepts
on every Keras backend; `calibration_batch` draws images for the converter's
weight normalisation. TensorFlow and tensorflow-datasets are optional: without
them everything below works from local files with numpy and PIL.

Where data is looked for, in order:

1. One directory: the `data_dir` argument, else the `BSNN_DATA_DIR`
   environment variable, else the demo folder shipped in the package
   (`bsnn_tf/demo`, MNIST only). In it:
   - `<dataset>_<split>.npz` for mnist, cifar10 and cifar100 (split `train` or
     `test`; cifar10 also has `test_lossless`). With `s` = `train` for the
     training split and `test` otherwise, each file holds `y_<s>` (integer
     labels in [0, classes)) and either plain pixels `x_<s>` (N x H x W x C,
     uint8 in 0..255 or float in [0, 1]; MNIST may omit the channel axis, as
     `keras.datasets.mnist` does; one label per image) or JPEG
     bytes: a uint8 blob `<s>_jpeg` with int64 `<s>_offsets` (N + 1), image i
     being `blob[offsets[i]:offsets[i + 1]]`. These are the layouts of
     `shared/data/README.md`; CIFAR-100 uses the same two files, e.g. from
     `keras.datasets.cifar100.load_data()`:
     `np.savez_compressed("cifar100_train.npz", x_train=x, y_train=y.ravel())`.
   - ImageNet (splits `train`, `val`; `test` means `val`): the folder
     `imagenet/<split>/<wnid>/*.JPEG`, labels in the sorted order of the wnids
     of both split folders (the standard 0-999 labels when all classes are
     there); or, for `val`, the 1-image-per-class sample
     `imagenet_sample_*.npz`; or the ILSVRC2012 tar files, prepared by
     tensorflow-datasets as its manual dir.
2. tensorflow-datasets (`mnist`, `cifar10`, `cifar100`, `imagenet2012`): an
   already prepared copy first, then a download (not when the `BSNN_OFFLINE`
   environment variable is set, e.g. to 1). Its splits are read into
   memory, so train on ImageNet from the folder layout, which streams.

If nothing is found, `DatasetNotFoundError` lists what was searched.

Example:
    >>> from bsnn_tf import data
    >>> x, y = data.load("mnist", "test", limit=100)   # the shipped demo data
    >>> x.shape, x.dtype, y[:3]
    ((100, 28, 28, 1), dtype('float32'), array([7, 2, 1]))
"""

import dataclasses
import glob
import importlib
import io
import math
import os
import zipfile
import zlib

import keras
import numpy as np
from PIL import Image

DATA_DIR_ENV = "BSNN_DATA_DIR"
# Set (to anything but "", "0", "false" or "no"), nothing is downloaded: no dataset, no weights.
OFFLINE_ENV = "BSNN_OFFLINE"
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
# Streamed splits up to this size are decoded once and kept in memory.
MAX_DECODED_BYTES = 2**31


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation of paper section 4.2.

    Attributes:
        pad: zero padding before the random crop back to the input size.
        cutout: side of the square Cutout erases (0: no Cutout).
        rand_augment: apply `keras.layers.RandAugment` (TensorFlow only).
    """

    pad: int = 4
    cutout: int = 16
    rand_augment: bool = True


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset.

    Attributes:
        input_shape: (H, W, C) of preprocessed images.
        num_classes: number of labels.
        splits: split names `load` accepts.
        mean, std: per-channel statistics of pixels scaled to [0, 1];
            `None` keeps x / 255.
        stored_size: images of varying size are resized (shorter side) and
            centre-cropped to this square when read; preprocessing then
            centre-crops `input_shape` out of it, augmentation crops randomly.
        augmentation: training augmentation, `None` for none.
        tfds_name: name in tensorflow-datasets.
        tfds_downloads: whether tensorflow-datasets can download it; ImageNet it
            cannot (it needs the ILSVRC2012 files), so only a prepared copy is read.
    """

    input_shape: tuple
    num_classes: int
    splits: tuple
    mean: tuple = None
    std: tuple = None
    stored_size: int = None
    augmentation: Augmentation = None
    tfds_name: str = None
    tfds_downloads: bool = True


DATASETS = {
    # Paper 4.1: "we do not perform any preprocessing on the MNIST dataset".
    "mnist": DatasetSpec(
        input_shape=(28, 28, 1), num_classes=10, splits=("train", "test"),
        tfds_name="mnist",
    ),
    "cifar10": DatasetSpec(
        input_shape=(32, 32, 3), num_classes=10,
        splits=("train", "test", "test_lossless"),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        augmentation=Augmentation(cutout=16), tfds_name="cifar10",
    ),
    "cifar100": DatasetSpec(
        input_shape=(32, 32, 3), num_classes=100, splits=("train", "test"),
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        augmentation=Augmentation(cutout=8), tfds_name="cifar100",
    ),
    "imagenet": DatasetSpec(
        input_shape=(224, 224, 3), num_classes=1000,
        splits=("train", "val", "test"),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), stored_size=256,
        augmentation=Augmentation(pad=0, cutout=0, rand_augment=False),
        tfds_name="imagenet2012", tfds_downloads=False,
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the requested dataset split was found anywhere searched."""


class CorruptDataError(ValueError):
    """A data file exists but cannot be read as the expected format."""


def spec(name):
    """The `DatasetSpec` of dataset `name`; ValueError names the known ones."""
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}."
        )
    return DATASETS[name]


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


def preprocess(name, pixels):
    """uint8 (or 0..255 float) pixels -> the float32 input of the models."""
    dataset = spec(name)
    x = _center_crop(pixels, dataset.input_shape[:2]).astype("float32") / 255.0
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
    if _optional_import("tensorflow") is None:
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


def find(name, split, data_dir=None):
    """Locates a split without decoding it; returns a `LabeledImages`.

    Raises:
        ValueError: unknown dataset or split.
        DatasetNotFoundError: no copy anywhere (the message lists the search).
        CorruptDataError: a file is there but unreadable.
    """
    dataset_spec = spec(name)
    if split not in dataset_spec.splits:
        raise ValueError(
            f"Unknown split {split!r} of {name}. Known: {', '.join(dataset_spec.splits)}."
        )
    directory = data_dir or os.environ.get(DATA_DIR_ENV) or DEMO_DIR
    images = _find_in_directory(name, split, directory)
    if images is not None:
        return images
    searched = [f"{directory}: expected {_expected_files(name, split)}"]
    images, tfds_report = _find_in_tfds(name, split)
    if images is not None:
        return images
    searched.append(tfds_report)
    raise DatasetNotFoundError(
        f"No {name!r} {split!r} data found. Searched:\n  - "
        + "\n  - ".join(searched)
        + f"\nPoint at a directory holding these files with --data_dir DIR or "
        f"the {DATA_DIR_ENV} environment variable (formats: bsnn_tf/data.py)."
    )


class LabeledImages:
    """Labels plus on-demand decoding of the images of one split.

    Attributes:
        labels: int64 array, one per image.
        source: where the images come from (file or folder), for messages.
        array: all images as one uint8 NHWC array, if held in memory.
    """

    def __init__(self, labels, read, source, size=None, array=None):
        """`read(i)` returns image `i` as uint8 HWC, resized to `size` if given."""
        self.labels = np.asarray(labels, dtype="int64")
        self.source = source
        self.array = array
        self._read = read
        self._size = size

    def __len__(self):
        return len(self.labels)

    def head(self, n):
        """The first `n` images."""
        if self.array is not None:
            return LabeledImages.from_arrays(self.array[:n], self.labels[:n], self.source)
        return LabeledImages(self.labels[:n], self._read, self.source, self._size)

    def decoded(self, max_bytes):
        """All images decoded into memory, unless that takes over `max_bytes`."""
        if self.array is not None or len(self) * self.pixel(0).nbytes > max_bytes:
            return self
        return LabeledImages.from_arrays(self.pixels(range(len(self))), self.labels, self.source)

    def pixels(self, indices):
        """uint8 NHWC batch of the images at `indices`."""
        return np.stack([self.pixel(i) for i in indices])

    def pixel(self, index):
        """uint8 HWC image `index`."""
        try:
            image = self._read(int(index))
        except (OSError, ValueError) as error:
            message = f"{self.source}: cannot decode image {index}: {error}"
            raise CorruptDataError(message) from error
        return image if self._size is None else _resize_and_crop(image, self._size)

    @classmethod
    def from_arrays(cls, x, y, source):
        return cls(y, lambda i: x[i], source, array=x)


def _find_in_directory(name, split, directory):
    if name == "imagenet":
        return _find_imagenet(split, directory)
    path = os.path.join(directory, f"{name}_{split}.npz")
    if os.path.isfile(path):
        return _read_npz(path, "train" if split == "train" else "test", name)
    return None


def _expected_files(name, split):
    if name != "imagenet":
        return f"{name}_{split}.npz"
    folder = "val" if split == "test" else split
    sample = ", imagenet_sample_*.npz" if folder == "val" else ""
    return (f"imagenet/{folder}/<wnid>/*.JPEG{sample}, "
            f"or ILSVRC2012_img_{folder}.tar (tensorflow-datasets manual dir)")


def _read_npz(path, split, name):
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
    return _jpeg_images(blob, offsets, y, path)


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


def _jpeg_images(blob, offsets, labels, source, size=None):
    if len(offsets) != len(labels) + 1:
        raise CorruptDataError(
            f"{source}: {len(offsets)} offsets for {len(labels)} labels (expected one more)."
        )

    def read(i):
        return _decode(blob[offsets[i]:offsets[i + 1]].tobytes())

    return LabeledImages(labels, read, source, size)


def _decode(encoded):
    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))


def _find_imagenet(split, directory):
    folder = "val" if split == "test" else split
    class_dirs = _imagenet_class_dirs(directory, folder)
    if class_dirs:
        return _imagenet_folder(directory, folder, class_dirs)
    samples = sorted(glob.glob(os.path.join(directory, "imagenet_sample_*.npz")))
    if folder == "val" and samples:
        return _imagenet_samples(samples)
    if os.path.isfile(os.path.join(directory, f"ILSVRC2012_img_{folder}.tar")):
        return _tfds_images("imagenet", folder, manual_dir=directory)
    return None


def _imagenet_class_dirs(directory, folder):
    root = os.path.join(directory, "imagenet", folder)
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def _imagenet_folder(directory, folder, class_dirs):
    # Labels follow the sorted wnids of train and val together, so that both
    # splits agree even when one of them lacks a class.
    wnids = sorted(set(_imagenet_class_dirs(directory, "train"))
                   | set(_imagenet_class_dirs(directory, "val")))
    root = os.path.join(directory, "imagenet", folder)
    paths, labels = [], []
    for wnid in class_dirs:
        files = sorted(f for f in os.listdir(os.path.join(root, wnid))
                       if f.lower().endswith(IMAGE_SUFFIXES))
        paths += [os.path.join(root, wnid, f) for f in files]
        labels += [wnids.index(wnid)] * len(files)

    def read(i):
        with Image.open(paths[i]) as image:
            return np.asarray(image.convert("RGB"))

    return LabeledImages(labels, read, root, size=DATASETS["imagenet"].stored_size)


def _imagenet_samples(paths):
    shards = [_read_npz(path, "test", "imagenet") for path in paths]
    labels = np.concatenate([shard.labels for shard in shards])
    starts = np.cumsum([0] + [len(shard) for shard in shards])

    def read(i):
        shard = np.searchsorted(starts, i, side="right") - 1
        return shards[shard].pixel(i - starts[shard])

    return LabeledImages(labels, read, ", ".join(paths), size=DATASETS["imagenet"].stored_size)


def _find_in_tfds(name, split):
    """(images, None) from tensorflow-datasets, or (None, why not)."""
    if _optional_import("tensorflow_datasets") is None:
        return None, "tensorflow-datasets: not installed"
    try:
        return _tfds_images(name, split), None
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


def _tfds_images(name, split, manual_dir=None):
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
    x, y = zip(*tfds.as_numpy(supervised))
    source = f"tensorflow-datasets {dataset_spec.tfds_name}[{tfds_split}]"
    return LabeledImages(y, lambda i: x[i], source, size=dataset_spec.stored_size)


def _optional_import(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _resize_and_crop(image, size):
    """Resizes the shorter side to `size`, then centre-crops a square."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    resized_shape = (max(size, round(width * scale)), max(size, round(height * scale)))
    resized = Image.fromarray(image).resize(resized_shape, Image.BILINEAR)
    return _center_crop(np.asarray(resized)[None], (size, size))[0]


def _center_crop(x, shape):
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

