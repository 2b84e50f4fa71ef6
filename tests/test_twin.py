"""The first-readout twin (`SpikingNetwork.first_readout_model`) against the numpy reference
simulator and against `bsnn_tf.simulate` at T = (D + 1) K, on the test nets, every zoo
architecture and the MobileNets."""

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf import models
from conftest import images, reference_net
from reference import simulate_reference
from test_simulation import NETS, converted

ZOO = {  # (model, input shape): small inputs, the arithmetic of each layer type
    "mnist_cnn": (28, 28, 1),
    "vgg16": (32, 32, 3),
    "resnet20": (32, 32, 3),
    "resnet18": (64, 64, 3),
    "resnet34": (64, 64, 3),
}


def first_readout_logits(snn, x):
    return bsnn_tf.simulate(snn, x, timesteps=snn.first_readout, count_spikes=False,
                            verbose=0).outputs


# On JAX (float64, CPU) depthwise convolutions differ from numpy by up to about 1e-8:
# the depthwise net is held to the reference in the TensorFlow run only.
@pytest.mark.parametrize("net", [pytest.param(net, marks=[] if net == "mobile" else
                                              [pytest.mark.jax]) for net in sorted(NETS)])
@pytest.mark.parametrize("encoding", ["real", "spike"])
def test_twin_equals_the_reference_simulator(net, encoding):
    snn, x = converted(net, "bsnn", phases=3, encoding=encoding)  # float64
    twin = snn.first_readout_model()(x)
    reference = simulate_reference(reference_net(snn), x.astype("float64"), snn.first_readout)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(twin), reference["logits"][:, -1],
                               rtol=1e-9, atol=1e-9)


def _zoo_snn(name, shape):
    keras.utils.set_random_seed(0)
    ann = models.get(name, 10, shape)
    x = images(24, shape, seed=1)
    return bsnn_tf.convert(ann, x[:16], verbose=0), x[16:]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_twin_equals_the_simulation_on_every_zoo_model(name):
    snn, x = _zoo_snn(name, ZOO[name])
    twin = snn.first_readout_model().predict(x, verbose=0)
    simulated = first_readout_logits(snn, x)
    scale = np.abs(simulated).max()
    np.testing.assert_allclose(twin, simulated, atol=1e-4 * scale)
    np.testing.assert_array_equal(np.argmax(twin, -1), np.argmax(simulated, -1))


@pytest.mark.parametrize("application", ["MobileNet", "MobileNetV2"])
def test_twin_equals_the_simulation_on_the_mobilenets(application):
    keras.utils.set_random_seed(0)
    ann = getattr(keras.applications, application)(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
        classifier_activation=None)
    x = images(20, (32, 32, 3), seed=1)
    snn = bsnn_tf.convert(ann, x[:16], verbose=0)
    twin = snn.first_readout_model().predict(x[16:], verbose=0)
    simulated = first_readout_logits(snn, x[16:])
    np.testing.assert_allclose(twin, simulated, atol=1e-4 * np.abs(simulated).max())
    np.testing.assert_array_equal(np.argmax(twin, -1), np.argmax(simulated, -1))


def test_the_twin_shares_the_networks_variables():
    snn, x = converted("conv_maxpool", "bsnn", phases=3)
    twin = snn.first_readout_model()
    before = keras.ops.convert_to_numpy(twin(x))
    layer = next(layer for layer in snn.graph_layers if getattr(layer, "kernel", None) is not None)
    layer.kernel.assign(keras.ops.convert_to_numpy(layer.kernel) * 2)
    after = keras.ops.convert_to_numpy(twin(x))
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, first_readout_logits(snn, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method, kwargs, message", [
    ("rate", {}, "exact for BSNN only"),
    ("bsnn", {"readout_delay": 1}, "readout_delay=0"),
])
def test_a_twin_exists_only_for_an_exact_first_readout(method, kwargs, message):
    build, shape = NETS["dense"]
    snn = bsnn_tf.convert(build(0), images(32, shape), method=method, verbose=0, **kwargs)
    with pytest.raises(ValueError, match=message):
        snn.first_readout_model()
