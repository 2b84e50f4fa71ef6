"""The MNIST CNN of the paper (section 4.2, after Kim et al. 2018): 12c5-2s-64c5-2s-10."""

import keras


def mnist_cnn(num_classes=10, input_shape=(28, 28, 1), pooling="max"):
    """12c5-2s-64c5-2s-10: two 5x5 ReLU convolutions, each followed by 2x2 pooling.

    Args:
        pooling: "max" (converted to the spiking max gate) or "avg".
    """
    pool = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}[pooling]
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(12, 5, activation="relu", name="conv1"),
            pool(2, name="pool1"),
            keras.layers.Conv2D(64, 5, activation="relu", name="conv2"),
            pool(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="mnist_cnn",
    )
