"""ImageNet from local files: the folder `imagenet/<split>/<wnid>/*.JPEG`, the
1-image-per-class sample `imagenet_sample_*.npz`, or the ILSVRC2012 tar files (handed to
tensorflow-datasets as its manual dir); each checked where it is found.
"""

import glob
import os
import re
import tarfile

import numpy as np
from PIL import Image

from bsnn_tf.data.datasets import DATASETS, CorruptDataError
from bsnn_tf.data.labeled import LabeledImages
from bsnn_tf.data.npz import read_npz
from bsnn_tf.data.tfds_splits import tfds_images

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
# An ImageNet class folder's name; where the data directory has WNID_LIST, one of its wnids.
WNID = re.compile(r"n\d{8}")
WNID_LIST = "imagenet_classes.txt"
# The files of the ILSVRC2012 archives that tensorflow-datasets prepares.
ILSVRC_MEMBERS = {"val": re.compile(r"ILSVRC2012_val_\d{8}\.JPEG"),
                  "train": re.compile(r"n\d{8}\.tar")}
ILSVRC_EXAMPLES = {"val": "ILSVRC2012_val_00000001.JPEG", "train": "n01440764.tar"}



def find_imagenet(split, directory):
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
        return tfds_images("imagenet", folder, manual_dir=directory)
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
    shards = [read_npz(path, "test", "imagenet") for path in paths]
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

