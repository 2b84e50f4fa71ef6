"""The datasets the library knows: their shapes, classes, normalisation and augmentation
(`DATASETS`), and the errors of finding and reading them.

Example:
    >>> from bsnn_tf import data
    >>> data.spec("cifar10").input_shape, data.spec("cifar10").num_classes
    ((32, 32, 3), 10)
"""

import dataclasses

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
