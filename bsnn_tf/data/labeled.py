"""`LabeledImages`: one split's labels with its images decoded on demand, and the
decoding, resizing and cropping every source shares.

Example:
    >>> import numpy as np
    >>> from bsnn_tf.data.labeled import LabeledImages
    >>> images = LabeledImages.from_arrays(np.zeros((3, 4, 4, 3), "uint8"), [0, 1, 2], "zeros")
    >>> len(images), images.pixels([0, 2]).shape, images.describe(1)
    (3, (2, 4, 4, 3), 'zeros: image 1')
"""

import importlib
import io

import numpy as np
from PIL import Image

from bsnn_tf.data.datasets import CorruptDataError
from bsnn_tf.data.transforms import center_crop


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
        return image if self._size is None else resize_and_crop(image, self._size)

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


def jpeg_images(blob, offsets, labels, source, size=None, name=None):
    if len(offsets) != len(labels) + 1:
        raise CorruptDataError(
            f"{source}: {len(offsets)} offsets for {len(labels)} labels (expected one more)."
        )

    def read(i):
        return decode(blob[offsets[i]:offsets[i + 1]].tobytes())

    return LabeledImages(labels, read, source, size, name=name)


def decode(encoded):
    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))


def optional_import(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def resize_and_crop(image, size):
    """Resizes the shorter side to `size`, then centre-crops a square."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    resized_shape = (max(size, round(width * scale)), max(size, round(height * scale)))
    resized = Image.fromarray(image).resize(resized_shape, Image.BILINEAR)
    return center_crop(np.asarray(resized)[None], (size, size))[0]
