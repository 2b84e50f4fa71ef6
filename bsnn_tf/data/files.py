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
import re
import tarfile
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
# An ImageNet class folder's name; where the data directory has WNID_LIST, one of its wnids.
WNID = re.compile(r"n\d{8}")
WNID_LIST = "imagenet_classes.txt"
# The files of the ILSVRC2012 archives that tensorflow-datasets prepares.
ILSVRC_MEMBERS = {"val": re.compile(r"ILSVRC2012_val_\d{8}\.JPEG"),
                  "train": re.compile(r"n\d{8}\.tar")}
ILSVRC_EXAMPLES = {"val": "ILSVRC2012_val_00000001.JPEG", "train": "n01440764.tar"}


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

    def __init__(self, labels, read, source, size=None, array=None, name=None):
        """`read(i)` returns image `i` as uint8 HWC, resized to `size` if given;
        `name(i)` says where image `i` is (its file), for messages."""
        self.labels = np.asarray(labels, dtype="int64")
        self.source = source
        self.array = array
        self._read = read
        self._size = size
        self._name = name or (lambda i: f"{source}: image {i}")

    # A split's own batch reader for `streams.image_batches` (None: read by index).
    read_batches = None

    def __len__(self):
        return len(self.labels)

    def head(self, n):
        """The first `n` images."""
        if self.array is not None:
            return LabeledImages.from_arrays(self.array[:n], self.labels[:n], self.source)
        return LabeledImages(self.labels[:n], self._read, self.source, self._size,
                             name=self._name)

    def decoded(self, max_bytes):
        """All images decoded into memory, unless that takes over `max_bytes`."""
        if self.array is not None or len(self) * self.pixel(0).nbytes > max_bytes:
            return self
        return LabeledImages.from_arrays(self.pixels(range(len(self))), self.labels, self.source)

    def pixels(self, indices):
        """uint8 NHWC batch of the images at `indices`."""
        return np.stack([self.pixel(i) for i in indices])

    def pixel(self, index):
        """uint8 HWC image `index`; CorruptDataError naming its file if it cannot be read."""
        try:
            image = self._read(int(index))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            message = f"{self.describe(index)}: cannot decode the image: {error}"
            raise CorruptDataError(message) from error
        return image if self._size is None else _resize_and_crop(image, self._size)

    def describe(self, index):
        """Where image `index` is: its file, or the file and its position in it."""
        return self._name(int(index))

    def pixel_shape(self):
        """The shape every image has once read: (size, size, 3) when resized, else the
        first image's."""
        if self._size is not None:
            return (self._size, self._size, 3)
        return self.pixel(0).shape

    @classmethod
    def from_arrays(cls, x, y, source):
        """Images `x` (decoded) with labels `y`; `source` names them in messages."""
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


def _jpeg_images(blob, offsets, labels, source, size=None, name=None):
    if len(offsets) != len(labels) + 1:
        raise CorruptDataError(
            f"{source}: {len(offsets)} offsets for {len(labels)} labels (expected one more)."
        )

    def read(i):
        return _decode(blob[offsets[i]:offsets[i + 1]].tobytes())

    return LabeledImages(labels, read, source, size, name=name)


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
    tar = os.path.join(directory, f"ILSVRC2012_img_{folder}.tar")
    if os.path.isfile(tar):
        _check_ilsvrc_tar(tar, folder)
        return _tfds_images("imagenet", folder, manual_dir=directory)
    return None


def _imagenet_class_dirs(directory, folder):
    """The class folders of `imagenet/<folder>`, sorted; CorruptDataError for a folder
    that is not a wnid (every label after it would be wrong) or one with no image."""
    root = os.path.join(directory, "imagenet", folder)
    if not os.path.isdir(root):
        return []
    class_dirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    known = _known_wnids(directory)
    for wnid in class_dirs:
        if not WNID.fullmatch(wnid) or (known and wnid not in known):
            raise CorruptDataError(
                f"{os.path.join(root, wnid)}: not an ImageNet class folder; each folder in "
                f"{root} must be named by its class's wnid ('n' and 8 digits, e.g. n01440764"
                + (f", one of those in {os.path.join(directory, WNID_LIST)}" if known else "")
                + "), which gives its images' label. Move or rename it.")
        if not any(_is_image(f) for f in os.listdir(os.path.join(root, wnid))):
            raise CorruptDataError(
                f"{os.path.join(root, wnid)}: holds no image ({', '.join(IMAGE_SUFFIXES)}); "
                "put its class's images in it, or remove it.")
    return class_dirs


def _known_wnids(directory):
    """The wnids listed in `<directory>/imagenet_classes.txt` ("label wnid name" lines),
    or None where there is no such file."""
    path = os.path.join(directory, WNID_LIST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return {word for line in f for word in line.split()[1:2]}


def _is_image(filename):
    return filename.lower().endswith(IMAGE_SUFFIXES)


def _imagenet_folder(directory, folder, class_dirs):
    # Labels follow the sorted wnids of train and val together, so that both
    # splits agree even when one of them lacks a class.
    other = _imagenet_class_dirs(directory, "train" if folder == "val" else "val")
    wnids = sorted(set(class_dirs) | set(other))
    root = os.path.join(directory, "imagenet", folder)
    paths, labels = [], []
    for wnid in class_dirs:
        files = sorted(f for f in os.listdir(os.path.join(root, wnid)) if _is_image(f))
        paths += [os.path.join(root, wnid, f) for f in files]
        labels += [wnids.index(wnid)] * len(files)

    def read(i):
        with Image.open(paths[i]) as image:
            return np.asarray(image.convert("RGB"))

    return LabeledImages(labels, read, root, size=DATASETS["imagenet"].stored_size,
                         name=paths.__getitem__)


def _imagenet_samples(paths):
    shards = [_read_npz(path, "test", "imagenet") for path in paths]
    labels = np.concatenate([shard.labels for shard in shards])
    starts = np.cumsum([0] + [len(shard) for shard in shards])

    def locate(i):
        shard = np.searchsorted(starts, i, side="right") - 1
        return shards[shard], i - starts[shard]

    def read(i):
        shard, index = locate(i)
        return shard.pixel(index)

    def name(i):
        shard, index = locate(i)
        return shard.describe(index)

    return LabeledImages(labels, read, ", ".join(paths), size=DATASETS["imagenet"].stored_size,
                         name=name)


def _check_ilsvrc_tar(path, folder):
    """CorruptDataError unless `path` is a tar whose first member is an ILSVRC2012 `folder`
    file (val: ILSVRC2012_val_<8 digits>.JPEG; train: <wnid>.tar); reads one header."""
    expected = ILSVRC_MEMBERS[folder]
    try:
        with tarfile.open(path) as tar:
            first = tar.next()
    except (OSError, tarfile.TarError, EOFError) as error:
        raise CorruptDataError(f"{path}: not a readable tar file: {error}. Expected the "
                               f"ILSVRC2012 {folder} archive from image-net.org.") from error
    name = first and os.path.basename(first.name)
    if name is None or not expected.fullmatch(name):
        raise CorruptDataError(
            f"{path}: not the ILSVRC2012 {folder} archive: its first file is {name!r}, where "
            f"that archive holds files named like {ILSVRC_EXAMPLES[folder]}. Put the archive "
            "from image-net.org there, or remove this file.")


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
        return pixels if size is None else _resize_and_crop(pixels, size)

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
