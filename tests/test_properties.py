"""Property tests over random small architectures."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import bsnn_tf
from conftest import images, randomize_biases, reference_net
from reference import period_values, simulate_reference

L = keras.layers

BLOCK = st.sampled_from(["conv", "conv_bn", "maxpool", "avgpool", "residual", "concat"])


@st.composite
def architectures(draw):
    return {
        "blocks": draw(st.lists(BLOCK, min_size=1, max_size=4)),
        "channels": draw(st.integers(2, 4)),
        "stride": draw(st.sampled_from([1, 2])),
        "padding": draw(st.sampled_from(["same", "valid"])),
        "head": draw(st.sampled_from(["flatten", "gap"])),
        "seed": draw(st.integers(0, 2**16)),
    }


def build(arch):
    keras.utils.set_random_seed(arch["seed"])
    c, inp = arch["channels"], keras.Input((7, 7, 2))
    x = L.Conv2D(c, 3, padding="same", activation="relu")(inp)
    for block in arch["blocks"]:
        if block == "conv":
            x = L.Conv2D(c, 3, padding="same", activation="relu")(x)
        elif block == "conv_bn":
            x = L.ReLU()(L.BatchNormalization()(L.Conv2D(c, 3, padding="same")(x)))
        elif block == "maxpool" and x.shape[1] >= 2:
            x = L.MaxPooling2D(2, strides=arch["stride"], padding=arch["padding"])(x)
        elif block == "avgpool" and x.shape[1] >= 2:
            x = L.AveragePooling2D(2, strides=arch["stride"], padding=arch["padding"])(x)
        elif block == "residual":
            y = L.Conv2D(c, 3, padding="same", activation="relu")(x)
            x = L.ReLU()(L.Add()([L.Conv2D(x.shape[-1], 3, padding="same")(y), x]))
        elif block == "concat":
            y = L.Conv2D(1, 1, activation="relu")(x)
            x = L.Concatenate()([x, y])
    x = L.Flatten()(x) if arch["head"] == "flatten" else L.GlobalAveragePooling2D()(x)
    return randomize_biases(keras.Model(inp, L.Dense(3)(x)), arch["seed"])


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(architectures())
def test_random_architectures_period_step_and_reference_agree(arch):
    model = build(arch)
    x, calibration = images(2, (7, 7, 2), 1), images(16, (7, 7, 2), 2)
    snn = bsnn_tf.convert(model, calibration, phases=3, dtype="float64", verbose=0, calibration="percentile")
    timesteps = 3 * (snn.depth + 4)
    step = bsnn_tf.simulate(snn, x, timesteps=timesteps, mode="step", trace=True, verbose=0)
    period = bsnn_tf.simulate(snn, x, timesteps=timesteps, mode="period", trace=True, verbose=0)
    reference = simulate_reference(reference_net(snn), x, timesteps)
    for name, expected in {**reference["outputs"], **reference["gates"]}.items():
        np.testing.assert_array_equal(step.trace[name], expected, err_msg=name)
        np.testing.assert_array_equal(period.trace[name], period_values(expected, 3))
    np.testing.assert_allclose(period.outputs, reference["logits"][:, -1], rtol=1e-9)


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(architectures(), st.booleans())
@example({"blocks": ["concat", "residual"], "channels": 2, "stride": 1, "padding": "same",
          "head": "flatten", "seed": 0}, True)  # a rescale inserted before a concat's input
def test_random_architectures_convert_to_the_same_function(arch, channelwise):
    """Folding, normalising and synchronizing keep the ANN's logits."""
    from bsnn_tf import conversion

    model = build(arch)
    x = images(8, (7, 7, 2), 3)
    graph = conversion.fold(conversion.trace(model))
    lambdas = conversion.calibrate(graph, x, percentile=99, channelwise=channelwise, verbose=0)
    graph = conversion.synchronize(conversion.normalize(graph, lambdas))
    ann, _ = conversion.to_keras(graph)
    np.testing.assert_allclose(ann.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)
