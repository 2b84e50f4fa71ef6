"""Conversion stages keep the ANN's function; the converter handles Keras models it should."""

import keras
import numpy as np
import pytest

import bsnn_tf
import bsnn_tf.verification
from bsnn_tf import conversion as stages
from conftest import conv_net, dense_net, images, randomize_biases, residual_net

L = keras.layers

MODELS = {
    "dense": (dense_net, (6,)),
    "conv": (conv_net, (8, 8, 2)),
    "residual": (residual_net, (8, 8, 2)),
    "residual_concat": (lambda seed: residual_net(seed, concat=True), (8, 8, 2)),
}


def ann_logits(model, x):
    """The model's output before a final softmax."""
    return keras.Model(model.inputs, bsnn_tf.verification.logits_tensor(model)).predict(x, verbose=0)


def graph_outputs(graph, x, names=None):
    model, _ = stages.to_keras(graph, outputs=names)
    out = model.predict(x, verbose=0)
    return out if isinstance(out, list) else [out]


@pytest.mark.jax
@pytest.mark.parametrize("name", sorted(MODELS))
def test_trace_and_fold_keep_the_ann_function(name):
    build, shape = MODELS[name]
    model, x = build(0), images(16, shape)
    traced = stages.trace(model)
    folded = stages.fold(traced)
    assert not any(node.op in ("bn", "identity", "softmax") for node in folded)
    np.testing.assert_allclose(graph_outputs(folded, x)[0], ann_logits(model, x),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.jax
@pytest.mark.parametrize("channelwise", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_normalisation_scales_activations_and_keeps_logits(name, channelwise):
    build, shape = MODELS[name]
    model, x = build(1), images(32, shape, seed=1)
    folded = stages.fold(stages.trace(model))
    lambdas = stages.calibrate(folded, x, percentile=100, channelwise=channelwise, verbose=0)
    normalised = stages.normalize(folded, lambdas)
    relus = [node.name for node in folded.spiking_nodes()]
    before = graph_outputs(folded, x, relus + [folded.output])
    after = graph_outputs(normalised, x, relus + [normalised.output])
    for relu, ann, snn in zip(relus, before[:-1], after[:-1]):
        np.testing.assert_allclose(snn * lambdas[relu], ann, rtol=1e-4, atol=1e-5, err_msg=relu)
        # max-norm: every normalised activation is at most 1, and some reach it
        assert snn.max() <= 1 + 1e-5
        assert np.isclose(snn.max(), 1, atol=1e-5) or channelwise
    np.testing.assert_allclose(after[-1], before[-1], rtol=1e-4, atol=1e-5)


def test_percentile_statistic_is_exact():
    model, x = dense_net(2), images(200, (6,), seed=2)
    folded = stages.fold(stages.trace(model))
    names = [n.name for n in folded.spiking_nodes()]
    activations = graph_outputs(folded, x, names)
    for channelwise in (False, True):
        lambdas = stages.calibrate(folded, x, percentile=99.3, channelwise=channelwise,
                                   batch_size=7, verbose=0)
        for name, a in zip(names, activations):
            expected = np.percentile(a.reshape(-1, a.shape[-1]), 99.3, axis=0) if channelwise \
                else np.percentile(a, 99.3)
            expected = np.where(expected > 0, expected, 1.0)
            np.testing.assert_allclose(lambdas[name], expected, rtol=1e-6)


@pytest.mark.jax
@pytest.mark.parametrize("name", ["residual", "residual_concat"])
def test_synchronous_layers_equalise_merge_depths_and_keep_the_function(name):
    build, shape = MODELS[name]
    model, x = build(3), images(16, shape, seed=3)
    folded = stages.fold(stages.trace(model))
    lambdas = stages.calibrate(folded, x, percentile=100, verbose=0)
    normalised = stages.normalize(folded, lambdas)
    synced = stages.synchronize(normalised)
    depths = stages.spiking_depths(synced)
    merges = [node for node in synced if node.op in ("add", "concat")]
    assert merges
    for merge in merges:
        assert len({depths[i] for i in merge.inputs}) == 1, merge.name
    assert any(node.op == "sync" for node in synced)
    np.testing.assert_allclose(graph_outputs(synced, x)[0], graph_outputs(normalised, x)[0],
                               rtol=1e-5, atol=1e-6)
    unsynced = stages.synchronize(normalised, enabled=False)
    assert not any(node.op == "sync" for node in unsynced)
    assert any(len({stages.spiking_depths(unsynced)[i] for i in n.inputs}) > 1
               for n in unsynced if n.op in ("add", "concat"))


@pytest.mark.jax
def test_start_periods_follow_spiking_depth():
    snn = bsnn_tf.convert(dense_net(0, widths=(5, 5, 5)), images(8, (6,)), verbose=0, calibration="percentile")
    assert [layer.start_period for layer in snn.spiking_layers()] == [0, 1, 2]
    assert snn.depth == 3


@pytest.mark.jax
def test_residual_scaling_puts_lambda_ratio_on_identity_shortcut():
    model, x = residual_net(4, blocks=1, maxpool=False), images(16, (8, 8, 2), seed=4)
    folded = stages.fold(stages.trace(model))
    lambdas = stages.calibrate(folded, x, percentile=100, verbose=0)
    normalised = stages.normalize(folded, lambdas)
    add = next(node for node in normalised if node.op == "add")
    rescale = next(normalised[i] for i in add.inputs if normalised[i].op == "scale")
    block_in = normalised[rescale.inputs[0]]
    block_out = normalised.consumers(add.name)[0]
    np.testing.assert_allclose(rescale.weights["scale"],
                               lambdas[block_in.name] / lambdas[block_out.name], rtol=1e-6)


def test_keras_applications_vgg16_and_resnet50_convert():
    x = images(4, (32, 32, 3), seed=5)
    for application in (keras.applications.VGG16, keras.applications.ResNet50):
        keras.utils.set_random_seed(0)
        model = application(weights=None, input_shape=(32, 32, 3), classes=10)
        snn = bsnn_tf.convert(model, x, percentile=100, verbose=0, calibration="percentile")
        assert len(snn.spiking_layers()) >= 13
        ops = {type(layer).__name__ for layer in snn.graph_layers}
        assert "SpikingMaxPool" in ops
        if application is keras.applications.ResNet50:
            assert "SynchronousLayer" in ops
        folded = stages.fold(stages.trace(model))
        np.testing.assert_allclose(graph_outputs(folded, x)[0], ann_logits(model, x),
                                   rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("application, alpha", [(keras.applications.MobileNet, 0.25),
                                                (keras.applications.MobileNetV2, 0.35)])
def test_keras_applications_mobilenets_convert_and_match_their_ann(application, alpha):
    """Depthwise and 1 x 1 convolutions, ReLU6 and (V2) Adds of signed linear bottlenecks."""
    keras.utils.set_random_seed(0)
    model = randomize_biases(application(weights=None, input_shape=(32, 32, 3), alpha=alpha,
                                         classes=10, classifier_activation=None), seed=0)
    x, calibration = images(4, (32, 32, 3), seed=5), images(32, (32, 32, 3), seed=6)
    snn = bsnn_tf.convert(model, calibration, verbose=0, calibration="percentile")
    kinds = [type(layer).__name__ for layer in snn.graph_layers]
    assert kinds.count("DepthwiseConv2D") >= 13
    if application is keras.applications.MobileNetV2:
        assert "SynchronousLayer" in kinds  # the shortcuts are delayed to their Adds
    reference = ann_logits(model, x)
    timesteps = (snn.depth + 8) * snn.phases
    logits = bsnn_tf.simulate(snn, x, timesteps=timesteps, verbose=0).outputs
    assert np.array_equal(logits.argmax(1), reference.argmax(1))
    assert np.abs(logits - reference).max() / np.abs(reference).max() < 0.05


def test_maxpool_before_relu_is_reordered():
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(3, 3), L.MaxPooling2D(2),
                              L.Activation("relu"), L.Flatten(), L.Dense(2)])
    graph = stages.fold(stages.trace(model))
    ops = [node.op for node in graph]
    assert ops.index("relu") < ops.index("maxpool")
    x = images(8, (8, 8, 1), seed=6)
    np.testing.assert_allclose(graph_outputs(graph, x)[0], model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_nested_models_are_flattened():
    inner = conv_net(7)
    outer = keras.Sequential([keras.Input((8, 8, 2)), L.Identity(), inner])
    x = images(8, (8, 8, 2), seed=7)
    graph = stages.fold(stages.trace(outer))
    np.testing.assert_allclose(graph_outputs(graph, x)[0], ann_logits(inner, x),
                               rtol=1e-4, atol=1e-5)


def test_method_neurons_and_gates():
    model, x = conv_net(8), images(8, (8, 8, 2), seed=8)
    expected = {"bsnn": "BistableIF", "phase": "PhaseIF", "rate": "IF"}
    for method, neuron in expected.items():
        snn = bsnn_tf.convert(model, x, method=method, verbose=0, calibration="percentile")
        kinds = {type(layer).__name__ for layer in snn.graph_layers}
        assert neuron in kinds and "SpikingMaxPool" in kinds
        assert snn.mode == ("period" if method == "bsnn" else "step")


@pytest.mark.parametrize("name, shape, classes", [
    ("mnist_cnn", (28, 28, 1), 10), ("vgg16", (32, 32, 3), 100), ("resnet20", (32, 32, 3), 10),
    ("resnet18", (32, 32, 3), 10), ("resnet34", (64, 64, 3), 1000),
])
def test_zoo_models_convert(name, shape, classes):
    keras.utils.set_random_seed(0)
    model = bsnn_tf.models.get(name, num_classes=classes, input_shape=shape)
    snn = bsnn_tf.convert(model, images(4, shape), verbose=0, calibration="percentile")
    relus = sum(1 for node in stages.fold(stages.trace(model)) if node.op == "relu")
    synchronous = [layer for layer in snn.spiking_layers()
                   if isinstance(layer, bsnn_tf.layers.SynchronousLayer)]
    assert len(snn.spiking_layers()) - len(synchronous) == relus
    assert bool(synchronous) == name.startswith("resnet")
    assert snn.unit_shapes["readout"] == (classes,)
