"""Residual networks: the CIFAR ResNet-20 of He et al. (2016) and torchvision's ResNet-18/34.

Layer names mirror the PyTorch modules ("layer2.0.conv1", "layer2.0.downsample.0",
"fc"), so that a state dict maps onto the Keras layers by name (see
`bsnn_tf.models.torchvision`). Padding follows PyTorch (`pytorch_style`).

Example:
    >>> from bsnn_tf.models.resnet import resnet18, resnet20
    >>> cifar = resnet20(num_classes=10, input_shape=(32, 32, 3))
    >>> imagenet = resnet18(num_classes=1000, input_shape=(224, 224, 3))  # ImageNet stem
"""

import keras
import numpy as np

from bsnn_tf.models.pytorch_style import batch_norm, conv2d, max_pool2d

# Smallest input side for which resnet18/34 default to the ImageNet stem.
IMAGENET_STEM_MIN_SIZE = 64


def resnet20(num_classes=10, input_shape=(32, 32, 3), shortcut="B"):
    """ResNet-20 for CIFAR (`cifar_resnet` of depth 20)."""
    return cifar_resnet(20, num_classes, input_shape, shortcut)


def cifar_resnet(depth, num_classes=10, input_shape=(32, 32, 3), shortcut="B"):
    """The CIFAR ResNets of He et al. (2016): 3x3 conv 16, three stages of (depth - 2) / 6
    BasicBlocks (16/32/64 channels), GAP, Dense: ResNet-20, 32, 44, 56, 110.

    Stages 2 and 3 start with stride 2. Names follow akamaster/pytorch_resnet_cifar10
    ("conv1", "layer1.0.bn2", "layer2.0.shortcut", "linear").

    Args:
        shortcut: where a block changes shape, "B" adds a trainable 1x1 conv with
            stride 2 and BatchNorm ("layer2.0.shortcut.0/.1"); "A" subsamples and
            zero-pads channels, as a fixed, non-trainable 1x1 conv ("layer2.0.shortcut").
    """
    shortcuts = {"A": _channel_embedding, "B": _projection}
    if shortcut not in shortcuts:
        raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}.")
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"A CIFAR ResNet has depth 6 n + 2 (20, 32, 44, 56, ...), got {depth}.")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="input")
    x = _stem(inputs, 16, 3, stride=1)
    x = _stages(x, (16, 32, 64), (blocks,) * 3, shortcuts[shortcut], "shortcut")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, name="linear")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def resnet18(num_classes=1000, input_shape=(224, 224, 3), stem=None):
    """torchvision's ResNet-18 (BasicBlocks 2-2-2-2).

    Args:
        stem: "imagenet" (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or "cifar"
            (3x3/1 conv, BN, ReLU, no pooling). Default: "imagenet" for inputs of
            at least 64 pixels a side, else "cifar".
    """
    return _torchvision_resnet((2, 2, 2, 2), num_classes, input_shape, stem, "resnet18")


def resnet34(num_classes=1000, input_shape=(224, 224, 3), stem=None):
    """torchvision's ResNet-34 (BasicBlocks 3-4-6-3); `stem` as for `resnet18`."""
    return _torchvision_resnet((3, 4, 6, 3), num_classes, input_shape, stem, "resnet34")


def _torchvision_resnet(blocks_per_stage, num_classes, input_shape, stem, name):
    if stem is None:
        stem = "imagenet" if min(input_shape[:2]) >= IMAGENET_STEM_MIN_SIZE else "cifar"
    inputs = keras.Input(input_shape, name="input")
    if stem == "imagenet":
        x = _stem(inputs, 64, 7, stride=2)
        x = max_pool2d(x, 3, name="maxpool", stride=2, padding=1)
    elif stem == "cifar":
        x = _stem(inputs, 64, 3, stride=1)
    else:
        raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}.")
    x = _stages(x, (64, 128, 256, 512), blocks_per_stage, _projection, "downsample")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def _stem(x, filters, kernel_size, stride):
    """"conv1" (PyTorch padding kernel_size // 2) -> "bn1" -> "relu"."""
    x = conv2d(x, filters, kernel_size, name="conv1", stride=stride)
    x = batch_norm(x, "bn1")
    return keras.layers.ReLU(name="relu")(x)


def _stages(x, widths, blocks_per_stage, shortcut, shortcut_name):
    """Stages "layer1", "layer2", ...; every stage after the first starts with stride 2."""
    for stage, (planes, blocks) in enumerate(zip(widths, blocks_per_stage), start=1):
        for index in range(blocks):
            stride = 2 if stage > 1 and index == 0 else 1
            name = f"layer{stage}.{index}"
            x = _basic_block(x, planes, stride, name, shortcut, f"{name}.{shortcut_name}")
    return x


def _basic_block(x, planes, stride, name, shortcut, shortcut_name):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); identity shortcut when shapes match."""
    out = conv2d(x, planes, 3, name=f"{name}.conv1", stride=stride)
    out = batch_norm(out, f"{name}.bn1")
    out = keras.layers.ReLU(name=f"{name}.relu1")(out)
    out = conv2d(out, planes, 3, name=f"{name}.conv2")
    out = batch_norm(out, f"{name}.bn2")
    if stride != 1 or x.shape[-1] != planes:
        x = shortcut(x, planes, stride, shortcut_name)
    out = keras.layers.Add(name=f"{name}.add")([out, x])
    return keras.layers.ReLU(name=f"{name}.relu2")(out)


def _projection(x, planes, stride, name):
    """Option B / torchvision's downsample: 1x1 conv with stride (`name`.0), BatchNorm (`name`.1)."""
    x = conv2d(x, planes, 1, name=f"{name}.0", stride=stride, padding=0)
    return batch_norm(x, f"{name}.1")


def _channel_embedding(x, planes, stride, name):
    """Option A: x[:, ::stride, ::stride, :] with (planes - in) // 2 zero channels on each side.

    A 1x1 'valid' conv with stride `stride` subsamples exactly like the slice; its
    fixed 0/1 kernel places input channel c at output channel c + pad.
    """
    in_planes = x.shape[-1]
    conv = keras.layers.Conv2D(planes, 1, strides=stride, use_bias=False, trainable=False, name=name)
    out = conv(x)
    conv.set_weights([_channel_embedding_kernel(in_planes, planes)])
    return out


def _channel_embedding_kernel(in_planes, planes):
    """The (1, 1, in_planes, planes) kernel copying channel c to c + (planes - in_planes) // 2."""
    pad = (planes - in_planes) // 2
    kernel = np.zeros((1, 1, in_planes, planes), np.float32)
    kernel[0, 0, np.arange(in_planes), np.arange(in_planes) + pad] = 1.0
    return kernel
