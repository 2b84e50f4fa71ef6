"""BSNN approaches the ANN as 2**-K / P; phase coding spikes where the ANN is silent;
synchronous layers matter on a real residual network."""

import pathlib

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf.models import thirdparty
from bsnn_tf.verification import logits_tensor
from conftest import conv_net, dense_net, images, mobile_net, residual_net

L = keras.layers

LOSSLESS_500 = pathlib.Path(__file__).parent / "data" / "cifar10_lossless_500.npz"


def ann_logits(model, x):
    return keras.Model(model.inputs, logits_tensor(model)).predict(x, verbose=0)


@pytest.mark.parametrize("phases", [4, 8])
@pytest.mark.parametrize("build, shape", [
    pytest.param(dense_net, (6,), marks=pytest.mark.jax), (conv_net, (8, 8, 2)),
    (lambda seed: residual_net(seed, maxpool=False), (8, 8, 2)),
    # Clipped at 0.5, below the calibration maximum: the clip is the neurons' top level.
    (lambda seed: mobile_net(seed, clip=0.5), (8, 8, 2)),
])
def test_output_error_shrinks_as_two_to_minus_k_over_periods(build, shape, phases):
    for seed in range(2):
        model, x = build(seed), images(8, shape, seed)
        # Calibrating on larger inputs keeps every test activation below the
        # largest K-bit value, where the error is a quantisation residual only.
        snn = bsnn_tf.convert(model, np.concatenate([x, 2 * x]), percentile=100,
                              phases=phases, dtype="float64", verbose=0, calibration="percentile")
        periods = [4, 16, 64]
        steps = {p: (snn.depth + p) * phases for p in periods}
        result = bsnn_tf.simulate(snn, x, timesteps=steps[64], checkpoints=steps.values(),
                                  verbose=0)
        reference = ann_logits(model, x)
        errors = {p: np.abs(result.outputs_at[steps[p]] - reference).max()
                  / np.abs(reference).max() for p in periods}
        for p, error in errors.items():
            assert error <= 64 * 2.0**-phases / p, (p, errors)
        assert errors[64] < errors[4] / 4, errors


def sin_model():
    """x -> a = relu(x / 2) -> c = relu(1 - 2 a) -> out = c. For x = 1, c is inactivated."""
    model = keras.Sequential([keras.Input((1,)), L.Dense(1, activation="relu"),
                              L.Dense(1, activation="relu"), L.Dense(1)])
    model.layers[0].set_weights([np.array([[0.5]]), np.zeros(1)])
    model.layers[1].set_weights([np.array([[-2.0]]), np.ones(1)])
    model.layers[2].set_weights([np.ones((1, 1)), np.zeros(1)])
    return model


@pytest.mark.jax
def test_phase_coding_spikes_in_inactivated_neurons_and_bsnn_does_not():
    model = sin_model()
    x, calibration = np.ones((1, 1), "float32"), np.array([[1.0], [2.0]], "float32")
    inactive_layer = model.layers[1].name
    assert model.get_layer(inactive_layer).output is not None
    counts = {}
    for method in ("phase", "bsnn"):
        snn = bsnn_tf.convert(model, calibration, method=method, phases=4, percentile=100,
                              verbose=0, calibration="percentile")
        result = bsnn_tf.simulate(snn, x, timesteps=64, mode="step", ann=model, verbose=0)
        neuron = next(n for n, a in snn.ann_layers.items() if a == inactive_layer)
        counts[method] = result.sin[neuron]
    assert counts["phase"][1] == counts["bsnn"][1] == 1  # one inactivated unit
    assert counts["phase"][0] == 1  # ... which spikes under phase coding
    assert counts["bsnn"][0] == 0  # ... and never under BSNN


@pytest.fixture(scope="module")
def resnet20_cifar():
    test_set = np.load(LOSSLESS_500)
    x = thirdparty.cifar10_akamaster_preprocess(test_set["x_test"])
    return thirdparty.akamaster_resnet20(), x[:64], test_set["y_test"][:64], x[100:400]


def test_synchronous_layers_cut_early_error_on_resnet20(resnet20_cifar):
    ann, x, y, calibration = resnet20_cifar
    reference = ann.predict(x, verbose=0)
    checkpoints = [160, 192, 224, 256]
    errors, accuracy = {}, {}
    for synchronous in (True, False):
        snn = bsnn_tf.convert(ann, calibration, phases=8, synchronous=synchronous, verbose=0, calibration="percentile")
        result = bsnn_tf.simulate(snn, x, timesteps=256, checkpoints=checkpoints, verbose=0)
        errors[synchronous] = {t: np.abs(result.outputs_at[t] - reference).mean()
                               for t in checkpoints}
        accuracy[synchronous] = {t: result.accuracy(y, t) for t in checkpoints}
    ann_accuracy = np.mean(reference.argmax(1) == y)
    for t in checkpoints:
        assert errors[False][t] > 2 * errors[True][t], (t, errors)
    assert accuracy[True][192] >= ann_accuracy - 0.03, accuracy
    assert accuracy[False][160] <= accuracy[True][160] - 0.3, accuracy
