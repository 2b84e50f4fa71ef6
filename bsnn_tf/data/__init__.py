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
   environment variable is set, e.g. to 1). Its splits are read lazily, in
   order (only the labels are held whole).

`image_batches` streams chosen images of a split as preprocessed batches, decoded
in parallel with their use (an unreadable image: a `CorruptDataError` naming its
file, or skipped). An ImageNet class folder that is not a wnid (`n` and 8 digits;
one of `imagenet_classes.txt`'s where the directory has that file), one with no
image, and an `ILSVRC2012_img_*.tar` that is not that archive are refused when found.

If nothing is found, `DatasetNotFoundError` lists what was searched.

Example:
    >>> from bsnn_tf import data
    >>> x, y = data.load("mnist", "test", limit=100)   # the shipped demo data
    >>> x.shape, x.dtype, y[:3]
    ((100, 28, 28, 1), dtype('float32'), array([7, 2, 1]))
"""

from bsnn_tf.data.datasets import (DATASETS, Augmentation, CorruptDataError, DatasetNotFoundError,
                                   DatasetSpec, spec)
from bsnn_tf.data.files import DATA_DIR_ENV, DEMO_DIR, find
from bsnn_tf.data.imagenet import IMAGE_SUFFIXES
from bsnn_tf.data.labeled import LabeledImages
from bsnn_tf.data.tfds_splits import OFFLINE_ENV, offline
from bsnn_tf.data.splits import calibration_batch, check_limit, load
from bsnn_tf.data.streams import (MAX_DECODED_BYTES, PREFETCH_BATCHES, Batch, dataset,
                                  image_batches, train_dataset)
from bsnn_tf.data.transforms import augment, preprocess, shift_and_flip

__all__ = [
    "DATASETS", "DATA_DIR_ENV", "DEMO_DIR", "IMAGE_SUFFIXES", "MAX_DECODED_BYTES", "OFFLINE_ENV",
    "PREFETCH_BATCHES", "Augmentation", "Batch", "CorruptDataError", "DatasetNotFoundError",
    "DatasetSpec", "LabeledImages", "augment", "calibration_batch", "check_limit", "dataset",
    "find", "image_batches", "load", "offline", "preprocess", "shift_and_flip", "spec",
    "train_dataset",
]
