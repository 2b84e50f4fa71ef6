"""A run's images: the evaluated test images (streamed in batches, never held whole)
and the calibration images, and where those came from (a training split, or test
images held out of the evaluation).

Example:
    >>> from bsnn_tf import runs
    >>> images = runs.load_images(runs.RunConfig(limit=100))
    >>> len(images.evaluated), images.x_calibration.shape, images.calibration["split"]
    (100, (500, 28, 28, 1), 'train')
    >>> next(images.batches(batch_size=32)).x.shape
    (32, 28, 28, 1)
"""

import typing

import numpy as np

from bsnn_tf import data
from bsnn_tf.runs.checks import ConfigError

# Where the calibration images come from; "auto": train if found, else held-out test images.
CALIBRATION_SPLITS = ("auto", "train", "test")
CALIBRATION_SEED = 0


class Images(typing.NamedTuple):
    """A run's images: the test split (`data.LabeledImages`) and the `evaluated` indices
    of it (ascending), the calibration images and labels, and `calibration`,
    results.json's record of where those came from."""

    dataset: str
    test: data.LabeledImages
    evaluated: np.ndarray
    x_calibration: np.ndarray
    y_calibration: np.ndarray
    calibration: dict

    def batches(self, batch_size, start=0, skip_unreadable=False):
        """The evaluated images from the `start`-th on, preprocessed, as `data.Batch`es
        decoded in parallel with their use (`data.image_batches`)."""
        return data.image_batches(self.dataset, self.test, self.evaluated[start:], batch_size,
                                  skip_unreadable)

    def decoded(self):
        """(x, y): every evaluated image, preprocessed, and its label as arrays, for small
        runs and benchmarks (a run streams them instead)."""
        parts = list(self.batches(batch_size=256))
        return np.concatenate([b.x for b in parts]), np.concatenate([b.y for b in parts])


def load_images(config):
    """The evaluated test images (indices, read later in batches), the calibration
    images (decoded), and where those came from.

    With `calibration_split` "test" (or "auto" and no training split found),
    `calibration_images` test images drawn by
    `np.random.default_rng(CALIBRATION_SEED).permutation` are held out: they
    calibrate and are not evaluated; `limit` takes the first of the rest, in
    file order. Training images are drawn as `data.calibration_batch` does.

    Returns:
        `Images`; its `calibration` record holds the split, the number of images,
        the seed (and the held-out test indices).

    Raises:
        ConfigError: too few test images to hold `calibration_size` out.
        data.DatasetNotFoundError, data.CorruptDataError: as `data.find`.
    """
    test = data.find(config.dataset, "test", config.data_dir)
    size, split, train = config.calibration_images, config.calibration_split, None
    if split != "test":
        try:
            train = data.find(config.dataset, "train", config.data_dir)
        except data.DatasetNotFoundError as error:
            if split == "train":
                raise data.DatasetNotFoundError(
                    f"{error}\nOr calibrate on held-out test images: --calibration_split=test."
                ) from error
    rng = np.random.default_rng(CALIBRATION_SEED)
    evaluated = np.arange(len(test))
    if train is not None:
        indices = np.sort(rng.choice(len(train), size=min(size, len(train)), replace=False))
        source, record = train, {"split": "train", "images": len(indices),
                                 "seed": CALIBRATION_SEED}
    else:
        if len(test) <= size:
            raise ConfigError(
                f"Calibrating on held-out {config.dataset} test images "
                f"({'--calibration_split=test' if split == 'test' else 'no training split found'})"
                f" needs more than --calibration_size={size} of them, but {test.source} has "
                f"{len(test)}; pass a smaller --calibration_size, or provide the training split.")
        order = rng.permutation(len(test))
        indices, evaluated = np.sort(order[:size]), np.sort(order[size:])
        source, record = test, {"split": "test (held out)", "images": size,
                                "seed": CALIBRATION_SEED, "indices": indices.tolist()}
    evaluated = evaluated[:config.limit]
    if train is None:
        reason = ("--calibration_split=test" if split == "test" else
                  f"no {config.dataset} training split in {config.data_dir or 'the default places'}")
        print(f"Calibrating on {size} {config.dataset} test images held out of the evaluation "
              f"({reason}; seed {CALIBRATION_SEED}); evaluating {len(evaluated)} others.")
    return Images(config.dataset, test, evaluated,
                  data.preprocess(config.dataset, source.pixels(indices)),
                  source.labels[indices], record)
