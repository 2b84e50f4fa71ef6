"""Bad input gets a clear error that names what is wrong and what to do."""

import keras
import numpy as np
import pytest

import bsnn_tf
from conftest import conv_net, dense_net, images

L = keras.layers
pytestmark = pytest.mark.jax


@pytest.fixture(scope="module")
def snn():
    return bsnn_tf.convert(conv_net(0), images(8, (8, 8, 2)), phases=4, verbose=0)


@pytest.fixture(scope="module")
def rate_snn():
    return bsnn_tf.convert(dense_net(0), images(8, (6,)), method="rate", verbose=0)


def convert(model, data=None, **kwargs):
    data = images(4, model.inputs[0].shape[1:]) if data is None else data
    return bsnn_tf.convert(model, data, verbose=0, **kwargs)


def test_unsupported_layers_are_all_listed_with_class_and_reason():
    model = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(3, 3, name="c1"),
                              L.LayerNormalization(name="norm"), L.ReLU(),
                              L.Conv2D(3, 3, activation="tanh", name="c2"), L.Flatten(),
                              L.Dense(2)])
    with pytest.raises(ValueError) as error:
        convert(model)
    message = str(error.value)
    assert "'norm' (LayerNormalization)" in message and "no converter" in message
    assert "'c2' (Conv2D)" in message and "'tanh' is not ReLU" in message


@pytest.mark.parametrize("layer, reason", [
    (L.ReLU(max_value=6.0), "max_value"),
    (L.LeakyReLU(), "no converter"),
    (L.Activation("sigmoid"), "'sigmoid' is not ReLU"),
])
def test_non_relu_activations_are_refused(layer, reason):
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), layer, L.Dense(2)])
    with pytest.raises(ValueError, match=reason):
        convert(model)


def test_keras_ops_instead_of_layers_are_refused():
    inp = keras.Input((4,))
    out = L.Dense(2)(L.ReLU()(L.Dense(3)(inp)) * 2.0)
    with pytest.raises(ValueError, match="keras.ops operation, not a layer"):
        convert(keras.Model(inp, out))


def test_several_inputs_or_outputs_are_refused():
    a, b = keras.Input((4,)), keras.Input((4,))
    two_inputs = keras.Model([a, b], L.Dense(2)(L.ReLU()(L.Add()([a, b]))))
    with pytest.raises(ValueError, match="2 inputs and 1 outputs"):
        bsnn_tf.convert(two_inputs, np.zeros((2, 4)), verbose=0)
    hidden = L.ReLU()(L.Dense(3)(a))
    two_outputs = keras.Model(a, [L.Dense(2)(hidden), L.Dense(2)(hidden)])
    with pytest.raises(ValueError, match="1 inputs and 2 outputs"):
        convert(two_outputs)


def test_softmax_inside_the_network_and_maxpool_on_currents_are_refused():
    inner_softmax = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="softmax"),
                                      L.Dense(2)])
    with pytest.raises(ValueError, match="not on the output"):
        convert(inner_softmax)
    pool_on_current = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3),
                                        L.MaxPooling2D(name="pool"), L.Conv2D(2, 3),
                                        L.ReLU(), L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match="'pool' reads .* not a ReLU output"):
        convert(pool_on_current)


def test_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="no defined input"):
        bsnn_tf.convert(keras.Sequential([L.Dense(2)]), np.zeros((2, 4)), verbose=0)
    with pytest.raises(TypeError, match="keras.Model"):
        bsnn_tf.convert(object(), np.zeros((2, 4)), verbose=0)


@pytest.mark.parametrize("data, error, match", [
    (np.zeros((4, 5)), ValueError, r"shape \(4, 5\).*expects \(N, 6\)"),
    (np.full((4, 6), np.nan), ValueError, "NaN or infinite"),
    (np.array([[0, 1, 2, 3, 4, np.inf]]), ValueError, "NaN or infinite"),
    (np.zeros((0, 6)), ValueError, "empty"),
    (np.array([["a"] * 6]), TypeError, "numeric"),
])
def test_bad_calibration_data(data, error, match):
    with pytest.raises(error, match=match):
        convert(dense_net(0), data)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"phases": 0}, ValueError, r"phases=0 is out of range: use 1\.\.24"),
    ({"phases": 25}, ValueError, r"phases=25 is out of range"),
    ({"phases": 2.5}, TypeError, "phases must be an int"),
    ({"method": "ttfs"}, ValueError, "method must be one of"),
    ({"percentile": 0}, ValueError, "percentile=0 is out of range"),
    ({"percentile": 101}, ValueError, "percentile=101 is out of range"),
    ({"input_encoding": "poisson"}, ValueError, "input_encoding"),
    ({"timesteps": -1}, ValueError, "timesteps must be positive"),
])
def test_bad_conversion_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        convert(dense_net(0), **kwargs)


def test_spike_encoding_needs_unit_interval_inputs():
    with pytest.raises(ValueError, match=r"needs inputs in \[0, 1\]"):
        convert(dense_net(0), images(4, (6,)), input_encoding="spike")


@pytest.mark.parametrize("timesteps, error, match", [
    (0, ValueError, "timesteps must be positive, got 0"),
    (-8, ValueError, "timesteps must be positive"),
    (8.0, TypeError, "timesteps must be a positive int"),
    ("64", TypeError, "timesteps must be a positive int"),
])
def test_bad_timesteps(snn, timesteps, error, match):
    with pytest.raises(error, match=match):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=timesteps, verbose=0)


def test_bad_simulation_inputs(snn, rate_snn):
    with pytest.raises(ValueError, match=r"input batch has shape \(2, 8, 8\)"):
        bsnn_tf.simulate(snn, np.zeros((2, 8, 8)), timesteps=8, verbose=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        bsnn_tf.simulate(snn, np.full((2, 8, 8, 2), np.nan), timesteps=8, verbose=0)
    with pytest.raises(ValueError, match="mode='period' is exact for BSNN only"):
        bsnn_tf.simulate(rate_snn, images(2, (6,)), timesteps=8, mode="period", verbose=0)
    with pytest.raises(ValueError, match="mode must be 'period' or 'step'"):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=8, mode="fast", verbose=0)
    with pytest.raises(ValueError, match="not a multiple of phases=4"):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=10, verbose=0)
    with pytest.raises(ValueError, match=r"Checkpoints \[6\] are not multiples of phases=4"):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=8, checkpoints=[6], verbose=0)
    with pytest.raises(ValueError, match="beyond timesteps=8"):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=8, checkpoints=[16], verbose=0)
