"""Keras layers that follow PyTorch's conventions, so that PyTorch weights import exactly.

PyTorch pads both sides of an image by the same amount. Keras 'same' padding
pads the bottom and right side one pixel more than the top and left when the
stride is 2, which shifts every output. Stride-2 layers (and any other padding
that 'same' cannot express) therefore get an explicit `ZeroPadding2D` followed
by 'valid' padding. BatchNorm uses PyTorch's epsilon and momentum.

Example:
    >>> import keras
    >>> x = keras.Input((32, 32, 3))
    >>> y = conv2d(x, 16, 3, name="conv1", stride=2)  # "conv1.pad" (1 px), then 3x3/2 'valid'
    >>> y = batch_norm(y, "bn1")
"""

import keras

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1 weights the new batch, Keras's the old average.


def conv2d(x, filters, kernel_size, name, stride=1, padding=None, use_bias=False):
    """`torch.nn.Conv2d(..., kernel_size, stride, padding)`; `padding` defaults to kernel_size // 2."""
    padding = kernel_size // 2 if padding is None else padding
    if stride == 1 and kernel_size % 2 == 1 and padding == kernel_size // 2:
        keras_padding = "same"  # symmetric for odd kernels at stride 1
    else:
        x = _zero_pad(x, padding, name)
        keras_padding = "valid"
    conv = keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding=keras_padding, use_bias=use_bias, name=name
    )
    return conv(x)


def max_pool2d(x, pool_size, name, stride, padding=0):
    """`torch.nn.MaxPool2d`, for inputs >= 0 (after a ReLU), where zero padding equals -inf padding."""
    x = _zero_pad(x, padding, name)
    return keras.layers.MaxPooling2D(pool_size, strides=stride, padding="valid", name=name)(x)


def batch_norm(x, name):
    """`torch.nn.BatchNorm2d` / `BatchNorm1d` over the last axis."""
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _zero_pad(x, padding, name):
    if padding == 0:
        return x
    return keras.layers.ZeroPadding2D(padding, name=f"{name}.pad")(x)
