"""Finding a split: the data directory's .npz files (`npz`), its ImageNet folder, sample
or tar files (`imagenet`), then tensorflow-datasets (`tfds_splits`); see `bsnn_tf.data`
for the order. `find` returns a `LabeledImages`, which decodes on demand.

Example:
    >>> from bsnn_tf import data
    >>> images = data.find("mnist", "test")   # the shipped demo data
    >>> len(images) > 0, images.pixels([0, 1]).shape
    (True, (2, 28, 28, 1))
"""

import os

from bsnn_tf.data.datasets import DatasetNotFoundError, spec
from bsnn_tf.data.imagenet import find_imagenet
from bsnn_tf.data.npz import read_npz
from bsnn_tf.data.tfds_splits import find_in_tfds

DATA_DIR_ENV = "BSNN_DATA_DIR"
DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo")


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
    images, tfds_report = find_in_tfds(name, split)
    if images is not None:
        return images
    searched.append(tfds_report)
    raise DatasetNotFoundError(
        f"No {name!r} {split!r} data found. Searched:\n  - "
        + "\n  - ".join(searched)
        + f"\nPoint at a directory holding these files with --data_dir DIR or "
        f"the {DATA_DIR_ENV} environment variable (formats: help(bsnn_tf.data))."
    )


def _find_in_directory(name, split, directory):
    if name == "imagenet":
        return find_imagenet(split, directory)
    path = os.path.join(directory, f"{name}_{split}.npz")
    if os.path.isfile(path):
        return read_npz(path, "train" if split == "train" else "test", name)
    return None


def _expected_files(name, split):
    if name != "imagenet":
        return f"{name}_{split}.npz"
    folder = "val" if split == "test" else split
    sample = ", imagenet_sample_*.npz" if folder == "val" else ""
    return (f"imagenet/{folder}/<wnid>/*.JPEG{sample}, "
            f"or ILSVRC2012_img_{folder}.tar (tensorflow-datasets manual dir)")

