"""VGG16 (Simonyan and Zisserman 2015) with BatchNorm, for 32x32 images (CIFAR).

Example:
    >>> from bsnn_tf.models.vgg import vgg16
    >>> ann = vgg16(num_classes=10, input_shape=(32, 32, 3))
    >>> ann.get_layer("block5.conv3").filters
    512
"""

import keras

from bsnn_tf.models import pytorch_style

# Output channels of the 3x3 convolutions in each block; every block ends in a 2x2 max-pool.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16(num_classes=10, input_shape=(32, 32, 3), batch_norm=True):
    """VGG16: five blocks of 3x3 'same' conv -> [BatchNorm] -> ReLU, each closed by MaxPooling2D(2).

    The head is Flatten -> Dense(num_classes) (logits), as usual for CIFAR-sized inputs.

    Args:
        batch_norm: put a BatchNormalization between each convolution and its ReLU;
            without it the convolutions carry a bias.
    """
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        for conv, filters in enumerate(widths, start=1):
            x = _conv_unit(x, filters, f"block{block}", conv, batch_norm)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}.pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="vgg16_bn" if batch_norm else "vgg16")


def _conv_unit(x, filters, block, index, with_batch_norm):
    x = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=not with_batch_norm, name=f"{block}.conv{index}"
    )(x)
    if with_batch_norm:
        x = pytorch_style.batch_norm(x, f"{block}.bn{index}")
    return keras.layers.ReLU(name=f"{block}.relu{index}")(x)
