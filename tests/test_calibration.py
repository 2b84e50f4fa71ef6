"""Calibration modes (bsnn_tf/conversion/calibration.py) against the ANN itself.

The independent truths: the ANN's own activations and logits (Keras
sub-models of the unconverted model), a numpy K-bit rounding written here,
and the numpy reference simulator for the converted network.
"""

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf import conversion
from bsnn_tf.conversion import correction, scale_search
from conftest import conv_net, dense_net, images, reference_net, residual_net
from reference import simulate_reference

MODES = ("percentile", "mse", "light", "advanced")


@pytest.fixture(autouse=True)
def few_reconstruction_steps(monkeypatch):
    """Weight reconstruction in tens of steps, not hundreds: these nets are tiny."""
    monkeypatch.setattr(correction, "RECONSTRUCTION_STEPS", 48)


def _logits(ann, x):
    """The ANN's logits: its output without a final softmax."""
    clone = keras.models.clone_model(ann)
    clone.set_weights(ann.get_weights())
    clone.layers[-1].activation = keras.activations.linear
    return clone.predict(x, verbose=0)


def _nets():
    return {
        "dense": (dense_net(seed=3), images(256, (6,), seed=3)),
        "conv": (conv_net(seed=4), images(128, (8, 8, 2), seed=4)),
        "residual": (residual_net(seed=5), images(128, (8, 8, 2), seed=5)),
    }


def _rounded(v, K):
    """K-bit rounding of a normalised activation: BSNN's first output (membrane 0.5)."""
    return np.clip(np.floor(v * 2**K + 0.5) / 2**K, 0, 1 - 2.0**-K)


def _relu_activations(ann, x):
    """{ReLU layer name: its ANN activations on x}, read from the Keras model itself."""
    relus = [l for l in ann.layers if isinstance(l, keras.layers.ReLU)
             or getattr(getattr(l, "activation", None), "__name__", "") == "relu"]
    probe = keras.Model(ann.inputs, [l.output for l in relus])
    return dict(zip([l.name for l in relus], probe.predict(x, verbose=0)))


@pytest.mark.jax
@pytest.mark.parametrize("K", [2, 3, 4])
def test_mse_scale_never_has_a_larger_quantisation_error_than_the_percentile(K):
    ann, x = dense_net(seed=1, widths=(32, 24)), images(512, (6,), seed=1)
    graph = conversion.fold(conversion.trace(ann))
    neuron = bsnn_tf.neurons.BistableIF(K, initial_membrane=0.5)
    quantizer = lambda v: neuron.mean_output(v)
    found = {mode: conversion.calibrate(graph, x, percentile=99.0, verbose=0, mode=mode,
                                        quantizer=quantizer) for mode in ("percentile", "mse")}
    activations = _relu_activations(ann, x)
    improved = 0
    for node in graph.spiking_nodes():
        a = activations[node.origin].astype("float64")
        error = {mode: np.sum((s[node.name] * _rounded(a / s[node.name], K) - a) ** 2)
                 for mode, s in found.items()}
        assert error["mse"] <= error["percentile"] * (1 + 1e-5), (node.name, error)
        improved += error["mse"] < 0.99 * error["percentile"]
    assert improved, "the search never found a better scale than the percentile"


@pytest.mark.parametrize("channelwise", [False, True])
def test_mse_search_measures_its_sample_of_the_images(monkeypatch, channelwise):
    """The scales are the best on the search's sample (within the grid's resolution), checked
    by a numpy search of 2,000 scales: the other images, 3 times larger, would pull them up."""
    monkeypatch.setattr(scale_search, "SEARCH_IMAGES", 128)
    ann, x = dense_net(seed=2, widths=(16, 12)), images(512, (6,), seed=2)
    rows = scale_search.search_sample(np.arange(len(x)))
    x[np.setdiff1d(np.arange(len(x)), rows)] *= 3.0
    graph = conversion.fold(conversion.trace(ann))
    neuron = bsnn_tf.neurons.BistableIF(3, initial_membrane=0.5)
    scales = conversion.calibrate(graph, x, percentile=99.0, channelwise=channelwise, verbose=0,
                                  mode="mse", quantizer=neuron.mean_output)
    activations = _relu_activations(ann, x[rows])
    for node in graph.spiking_nodes():
        a = activations[node.origin].astype("float64")
        a = a if channelwise else a.reshape(-1, 1)
        grid = np.linspace(1e-3, 1.0, 2000)[:, None] * a.max(axis=0)
        errors = np.stack([np.sum((c * _rounded(a / c, 3) - a) ** 2, axis=0) for c in grid])
        found = np.broadcast_to(scales[node.name], a.shape[1:])
        ours = np.sum((found * _rounded(a / found, 3) - a) ** 2, axis=0)
        assert np.all(ours <= 1.05 * errors.min(axis=0) + 1e-9), (node.name, ours,
                                                                  errors.min(axis=0))


def _first_readout(snn):
    return (snn.readout_start + 1) * snn.phases


@pytest.mark.parametrize("name", ["conv", "residual"])
def test_bias_correction_zeroes_the_mean_output_error_on_the_calibration_set(name):
    ann, x = _nets()[name]
    reference = _logits(ann, x)
    errors = {}
    for mode in ("mse", "light"):
        snn = bsnn_tf.convert(ann, x, phases=3, calibration=mode, verbose=0)
        result = bsnn_tf.simulate(snn, x, timesteps=_first_readout(snn), verbose=0)
        errors[mode] = np.abs(np.mean(result.outputs - reference, axis=0))
    scale = np.abs(reference).mean()
    assert np.all(errors["light"] <= 1e-4 * scale), errors["light"]
    assert np.max(errors["mse"]) > 10 * np.max(errors["light"])  # the test can fail


@pytest.mark.parametrize("mode", ["advanced"])  # every stage runs in "advanced"
def test_calibration_never_changes_the_ann(mode):
    ann, x = _nets()["residual"]
    weights = [w.copy() for w in ann.get_weights()]
    before = ann.predict(x, verbose=0)
    bsnn_tf.convert(ann, x, calibration=mode, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(weights, ann.get_weights()))
    np.testing.assert_array_equal(before, ann.predict(x, verbose=0))


@pytest.mark.parametrize("name, mode", [("conv", "light"), ("residual", "advanced")])
def test_calibrated_snn_matches_the_reference_and_period_equals_step(name, mode):
    ann, x = _nets()[name]
    snn = bsnn_tf.convert(ann, x[:64], phases=3, calibration=mode, verbose=0,
                          dtype="float64")
    T = _first_readout(snn) + 3 * snn.phases
    period = bsnn_tf.simulate(snn, x[:8], timesteps=T, mode="period", verbose=0)
    step = bsnn_tf.simulate(snn, x[:8], timesteps=T, mode="step", verbose=0)
    np.testing.assert_allclose(period.outputs, step.outputs, rtol=1e-9, atol=1e-9)
    expected = simulate_reference(reference_net(snn), x[:8].astype("float64"), T)
    np.testing.assert_allclose(period.outputs, expected["logits"][:, -1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_first_readout_is_the_quantised_ann(mode):
    """BSNN's first output equals the ANN with each ReLU rounded to K bits at its scale."""
    ann, x = _nets()["dense"]
    K = 3
    snn = bsnn_tf.convert(ann, x, phases=K, calibration=mode, verbose=0, dtype="float64")
    first = bsnn_tf.simulate(snn, x[:32], timesteps=_first_readout(snn), verbose=0).outputs
    # The numpy quantised ANN, from the SNN's own weights and biases (per layer).
    v = x[:32].astype("float64")
    net = reference_net(snn)["nodes"]
    for node in net[1:]:
        if node["op"] == "dense":
            v = v @ node["kernel"]
        elif node["op"] == "scale":
            v = v * node["scale"]
        elif node["op"] == "neuron":
            v = _rounded(v + node["bias"], K)
        elif node["op"] == "readout":
            v = v + node["bias"]
    np.testing.assert_allclose(first, v, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["advanced"])
def test_calibrated_snn_saves_and_loads(tmp_path, mode):
    ann, x = _nets()["residual"]
    snn = bsnn_tf.convert(ann, x[:64], calibration=mode, verbose=0)
    path = tmp_path / f"snn_{mode}.keras"
    snn.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(snn.predict(x[:8], verbose=0), loaded.predict(x[:8], verbose=0))


@pytest.mark.parametrize("method, mode", [("rate", "mse"), ("rate", "advanced"),
                                          ("phase", "light")])
def test_every_mode_converts_every_method(method, mode):
    ann, x = _nets()["conv"]
    snn = bsnn_tf.convert(ann, x, method=method, calibration=mode, timesteps=64, verbose=0)
    outputs = bsnn_tf.simulate(snn, x[:32], timesteps=64, verbose=0).outputs
    agreement = np.mean(np.argmax(outputs, -1) == np.argmax(_logits(ann, x[:32]), -1))
    assert agreement >= 0.8, (method, mode, agreement)


def test_advanced_fits_the_first_readout_no_worse_than_light():
    """Weight reconstruction keeps new weights only where they lower a layer's error."""
    ann, x = _nets()["conv"]
    reference = _logits(ann, x)
    error = {}
    for mode in ("light", "advanced"):
        snn = bsnn_tf.convert(ann, x, phases=2, calibration=mode, verbose=0)
        outputs = bsnn_tf.simulate(snn, x, timesteps=_first_readout(snn), verbose=0).outputs
        error[mode] = np.mean((outputs - reference) ** 2)
    assert error["advanced"] <= 1.01 * error["light"], error


def test_unknown_calibration_mode_is_refused_before_any_work():
    ann, x = _nets()["dense"]
    with pytest.raises(ValueError, match="calibration must be one of"):
        bsnn_tf.convert(ann, x, calibration="best")


def test_a_layer_that_never_activates_is_named_in_a_warning():
    ann, x = dense_net(seed=2), images(64, (6,), seed=2)
    first = ann.layers[0]
    first.bias.assign(np.full(first.bias.shape, -100.0, "float32"))
    with pytest.warns(UserWarning, match=f"Layer '{first.name}' never activates"):
        bsnn_tf.convert(ann, x, verbose=0)


@pytest.mark.parametrize("index, value", [(0, np.nan), (1, np.nan), (1, np.inf)])
def test_non_finite_weights_are_refused_naming_the_layer(index, value):
    ann, x = dense_net(seed=2), images(64, (6,), seed=2)
    layer = ann.layers[index]
    kernel = layer.kernel.numpy()
    kernel[0, 0] = value
    layer.kernel.assign(kernel)
    with pytest.raises(ValueError, match=f"Layer '{layer.name}' has NaN or infinite weights"):
        bsnn_tf.convert(ann, x, verbose=0)


@pytest.mark.parametrize("dtype, phases", [("float16", 11), ("bfloat16", 8)])
def test_a_dtype_too_short_for_k_bits_is_refused(dtype, phases):
    ann, x = dense_net(seed=2), images(64, (6,), seed=2)
    with pytest.raises(ValueError, match=f"dtype='{dtype}' keeps .* too few for phases={phases}"):
        bsnn_tf.convert(ann, x, phases=phases, dtype=dtype, verbose=0)


def test_an_activation_that_overflows_in_a_late_batch_stops_percentile_calibration():
    """The median scale stays finite, but the maximum, which the same pass keeps, is not."""
    ann, x = dense_net(seed=2), images(256, (6,), seed=2)
    first = ann.layers[0]
    kernel = first.kernel.numpy()
    kernel[0] = 10.0
    first.kernel.assign(kernel)
    x[-1, 0] = 3e38  # times 10 overflows float32
    with pytest.raises(ValueError, match=f"Layer '{first.name}' has NaN or infinite activations"):
        bsnn_tf.convert(ann, x, percentile=50, batch_size=32, verbose=0)
