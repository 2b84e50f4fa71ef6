"""Finding a split and decoding its images: the data directory's .npz files (pixels or
JPEG bytes), an ImageNet folder or sample, or tensorflow-datasets (see `bsnn_tf.data`
for the order). `find` returns a `LabeledImages`, which decodes on demand.

Example:
    >>> from bsnn_tf import data
    >>> images = data.find("mnist", "test")   # the shipped demo data
    >>> len(images) > 0, images.pixels([0, 1]).shape
    (True, (2, 28, 28, 1))
"""

import glob
import importlib
import io
import os
import zipfile
import zlib

import numpy as np
from PIL import Image

from bsnn_tf.data.datasets import DATASETS, CorruptDataError, DatasetNotFoundError, spec
from bsnn_tf.data.transforms import center_crop

DATA_DIR_ENV = "BSNN_DATA_DIR"
# Set (to anything but "", "0", "false" or "no"), nothing is downloaded: no dataset, no weights.
OFFLINE_ENV = "BSNN_OFFLINE"
DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


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
        f"the {DATA_DIR_ENV} environment variable (formats: help(bsnn_tf.data))."
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
    if optional_import("tensorflow_datasets") is None:
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


def optional_import(module):
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
    return center_crop(np.asarray(resized)[None], (size, size))[0]
