"""Third-party pretrained checkpoints rebuilt as convertible Keras 3 models.

- akamaster/pytorch_resnet_cifar10 ResNet-20, CIFAR-10 (numpy copy of the
  PyTorch state dict): 91.5% on CIFAR-10 test images 0-999.
- SNN Toolbox LeNet-5, MNIST (Keras 2.2.4 HDF5): 99.14% on the test set.

Both end in logits (no softmax), as the converter expects.

Example:
    >>> from bsnn_tf.models import thirdparty
    >>> x_uint8 = np.zeros((2, 32, 32, 3), "uint8")          # CIFAR-10 pixels
    >>> thirdparty.cifar10_akamaster_preprocess(x_uint8).shape
    (2, 32, 32, 3)

Then `thirdparty.akamaster_resnet20().predict(...)` of that gives logits
(the .npz is in `../shared`, see `AKAMASTER_RESNET20`).
"""

import os
import pathlib

import h5py
import keras
import numpy as np

from bsnn_tf.models.resnet import cifar_resnet
from bsnn_tf.models.torchvision import load_state_dict

def _weights_dir():
    """BSNN_WEIGHTS_DIR if set, else the repository's pretrained/thirdparty folder."""
    if os.environ.get("BSNN_WEIGHTS_DIR"):
        return pathlib.Path(os.environ["BSNN_WEIGHTS_DIR"])
    return pathlib.Path(__file__).resolve().parents[2] / "pretrained" / "thirdparty"


WEIGHTS_DIR = _weights_dir()
AKAMASTER_RESNET20 = WEIGHTS_DIR / "resnet20_cifar10_akamaster.npz"
SNNTOOLBOX_LENET5 = WEIGHTS_DIR / "lenet5_mnist_99.14.h5"

# The ImageNet statistics that akamaster's training script normalises CIFAR-10 with.
AKAMASTER_MEAN = (0.485, 0.456, 0.406)
AKAMASTER_STD = (0.229, 0.224, 0.225)


def akamaster_resnet20(npz_path=AKAMASTER_RESNET20):
    """ResNet-20 for CIFAR-10 with akamaster's weights; feed `cifar10_akamaster_preprocess` output.

    Raises:
        FileNotFoundError: no file at `npz_path`.
    """
    return akamaster_resnet(20, npz_path)


def akamaster_resnet(depth, path):
    """akamaster's CIFAR-10 ResNet-`depth` (20, 32, 44, 56, 110) from a numpy copy of its
    state dict (.npz) or its own checkpoint (.th, read with torch); feed
    `cifar10_akamaster_preprocess` output.

    The option-A shortcuts are fixed 1x1 stride-2 convolutions (see `resnet.cifar_resnet`),
    which have no entry in the state dict.
    """
    path = _checkpoint(path)
    model = cifar_resnet(depth, num_classes=10, input_shape=(32, 32, 3), shortcut="A")
    fixed = [layer.name for layer in model.layers if not layer.trainable]
    load_state_dict(model, _state_dict(path), source=str(path), fixed_layers=fixed)
    return model


def _state_dict(path):
    """{name: numpy array}, without DataParallel's "module." prefix."""
    if str(path).endswith(".npz"):
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}
    import torch  # the .th checkpoints are torch pickles (trusted: check their hash)

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return {key.removeprefix("module."): value.numpy()
            for key, value in checkpoint["state_dict"].items()}


def cifar10_akamaster_preprocess(x_uint8):
    """uint8 images (N, 32, 32, 3) -> float32 (x / 255 - mean) / std, channels last."""
    x = np.asarray(x_uint8, np.float32) / 255.0
    return (x - np.float32(AKAMASTER_MEAN)) / np.float32(AKAMASTER_STD)


def snntoolbox_lenet5(h5_path=SNNTOOLBOX_LENET5):
    """SNN Toolbox's MNIST LeNet-5, channels last, with the HDF5 file's weights; input x / 255.

    The original declares channels_first input, but Keras 2's
    Flatten(data_format="channels_first") flattened in (H, W, C) order, which is
    what a channels-last Flatten does: flattening in (C, H, W) order drops the
    test accuracy from 99.14% to about 5%. Kernels are stored as
    (kh, kw, cin, cout) and load unchanged.

    Raises:
        FileNotFoundError: no file at `h5_path`.
    """
    path = _checkpoint(h5_path)
    model = _lenet5()
    with h5py.File(path, "r") as checkpoint:
        weights = checkpoint["model_weights"]
        for layer in model.layers:
            if layer.weights:
                group = weights[layer.name]
                layer.set_weights([group[name.decode()][()] for name in group.attrs["weight_names"]])
    return model


def _lenet5():
    """The LeNet-5 of the HDF5 file, with its layer names; softmax left out (logits)."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="input"),
            layers.Conv2D(6, 5, activation="relu", name="conv2d_1"),
            layers.MaxPooling2D(2, name="max_pooling2d_1"),
            layers.Conv2D(16, 5, activation="relu", name="conv2d_2"),
            layers.MaxPooling2D(2, name="max_pooling2d_2"),
            layers.Dropout(0.5, name="dropout_1"),
            layers.Conv2D(120, 5, padding="same", activation="relu", name="conv2d_3"),
            layers.Flatten(name="flatten_1"),
            layers.Dense(84, activation="relu", name="dense_1"),
            layers.Dense(10, name="dense_2"),
        ],
        name="snntoolbox_lenet5",
    )


def _checkpoint(path):
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} not found. Pass the path of your copy "
            f"(the default location is {WEIGHTS_DIR})."
        )
    return path
