"""Shared helpers: small random ANNs and the adapter to the numpy reference simulator."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# No test downloads (tensorflow-datasets, published weights); subprocesses inherit it.
# Tests of the download paths unset it and fetch from local files.
os.environ.setdefault("BSNN_OFFLINE", "1")

import pathlib

import keras
import numpy as np
import pytest

from bsnn_tf import data, roles
from bsnn_tf.roles import Role

import reference

L = keras.layers
REPO = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The real offline data: $BSNN_DATA_DIR, else ../shared/data beside the checkout.

    A test that needs it fails (it is not skipped) where it is missing: CI
    runs with it, and a skipped test would stand in for one that ran.
    """
    directory = pathlib.Path(os.environ.get(data.DATA_DIR_ENV) or REPO.parent / "shared" / "data")
    if not (directory / "mnist_test.npz").is_file():
        pytest.fail(f"The shared data is missing: no mnist_test.npz in {directory}. Put the "
                    f"shared data folder beside the checkout (../shared/data) or set "
                    f"{data.DATA_DIR_ENV}.", pytrace=False)
    return directory


@pytest.fixture(scope="session")
def shared_data():
    return shared_data_dir()


def randomize_biases(model, seed, scale=0.1):
    """Keras initialises biases to zero; tests need them nonzero to exercise bias gating."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(rng.normal(0, scale, layer.bias.shape).astype("float32"))
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
    return model


def dense_net(seed=0, widths=(12, 10, 8), inputs=6, classes=4):
    keras.utils.set_random_seed(seed)
    net = [keras.Input((inputs,))] + [L.Dense(w, activation="relu") for w in widths]
    return randomize_biases(keras.Sequential(net + [L.Dense(classes)]), seed)


def conv_net(seed=0, pool="max"):
    keras.utils.set_random_seed(seed)
    pool_layer = L.MaxPooling2D(2) if pool == "max" else L.AveragePooling2D(2, padding="same")
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.Conv2D(6, 3, strides=2, padding="same"),
        L.BatchNormalization(),
        L.ReLU(),
        pool_layer,
        L.Flatten(),
        L.Dense(5, activation="relu"),
        L.Dense(3, activation="softmax"),
    ])
    return randomize_biases(model, seed)


def residual_net(seed=0, blocks=2, channels=4, concat=False, maxpool=True):
    """Conv stem, residual blocks (identity and projection shortcuts), optional concat merge."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(channels, 3, padding="same", activation="relu")(inp)
    if maxpool:
        x = L.MaxPooling2D(2, strides=1, padding="same")(x)
    for block in range(blocks):
        stride = 2 if block == 1 else 1
        y = L.Conv2D(channels, 3, strides=stride, padding="same", activation="relu")(x)
        y = L.BatchNormalization()(L.Conv2D(channels, 3, padding="same")(y))
        shortcut = x if stride == 1 else L.Conv2D(channels, 1, strides=stride)(x)
        x = L.ReLU()(L.Add()([y, shortcut]))
    if concat:
        branch = L.Conv2D(3, 1, activation="relu")(L.Conv2D(3, 1, activation="relu")(x))
        x = L.Concatenate()([x, branch])
    x = L.GlobalAveragePooling2D()(x)
    return randomize_biases(keras.Model(inp, L.Dense(3)(x)), seed)


def mobile_net(seed=0, clip=6.0):
    """The layer types of MobileNet and MobileNetV2 at toy size.

    DepthwiseConv2D (with a multiplier and a stride), SeparableConv2D, ReLU
    clipped at `clip`, UpSampling2D, Cropping2D, and an inverted residual block
    whose Add sums two signed linear paths (MobileNetV2's linear bottleneck):
    the shortcut crosses two spiking layers fewer than the block.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 2))
    x = L.ReLU(clip)(L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(inp)))
    x = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(x)
    x = L.ReLU(clip)(L.BatchNormalization()(x))
    bottleneck = L.BatchNormalization()(L.Conv2D(4, 1)(x))
    y = L.Conv2D(8, 1, activation="relu")(bottleneck)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu6")(y)
    y = L.BatchNormalization()(L.Conv2D(4, 1, use_bias=False)(y))
    x = L.Add()([bottleneck, y])
    x = L.SeparableConv2D(5, 3, padding="same", activation="relu")(x)
    x = L.Cropping2D(((1, 0), (0, 1)))(L.UpSampling2D(2)(x))
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Reshape((3,))(L.Conv2D(3, 1)(x))
    return randomize_biases(keras.Model(inp, x), seed)


def images(n, shape, seed=0, low=None):
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, 1.0, (n,) + tuple(shape)).astype("float32")
    return rng.normal(0, 1, (n,) + tuple(shape)).astype("float32")


def reference_net(snn):
    """The numpy reference's description of a SpikingNetwork (weights and settings only)."""
    nodes = []
    for name, inputs in snn.topology:
        layer = snn.get_layer(name)
        node = {"name": name, "inputs": list(inputs)}
        node.update(_reference_op(layer))
        nodes.append(node)
    return {"method": snn.method, "phases": snn.phases,
            "input_encoding": snn.encoder.encoding, "nodes": nodes}


def _reference_op(layer):
    weights = lambda: [np.asarray(w, "float64") for w in layer.get_weights()]
    role = roles.of(layer)
    if role == Role.INPUT:
        return {"op": "input"}
    if role == Role.NEURON:
        return {"op": "neuron", "bias": weights()[0], "start": layer.start_period,
                "initial": layer.initial_membrane * layer.smallest_spike}
    if role == Role.READOUT:
        return {"op": "readout", "bias": weights()[0], "start": layer.start_period}
    if role == Role.GATE:
        return {"op": "maxpool", "pool_size": layer.pool_size, "strides": layer.strides,
                "padding": layer.padding}
    if isinstance(layer, L.Conv2D):
        assert tuple(layer.dilation_rate) == (1, 1)
    return reference.synapse_op(layer)


@pytest.fixture(scope="session")
def backend_name():
    return keras.backend.backend()
