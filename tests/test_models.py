"""The model zoo: every model builds for its datasets, has the expected size and only convertible layers."""

import keras
import numpy as np
import pytest

from bsnn_tf import models

CONVERTIBLE_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Conv2D,
    keras.layers.Dense,
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Dropout,
    keras.layers.ZeroPadding2D,
    keras.layers.Add,
    keras.layers.Concatenate,
)

MNIST = ((28, 28, 1), 10)
CIFAR10 = ((32, 32, 3), 10)
CIFAR100 = ((32, 32, 3), 100)

ZOO_DATASETS = [
    pytest.param(name, input_shape, num_classes, id=f"{name}-{num_classes}")
    for name, datasets in [
        ("mnist_cnn", [MNIST]),
        ("vgg16", [CIFAR10, CIFAR100]),
        ("resnet20", [CIFAR10, CIFAR100]),
        ("resnet18", [CIFAR10, CIFAR100]),
        ("resnet34", [CIFAR10, CIFAR100]),
    ]
    for input_shape, num_classes in datasets
]


@pytest.mark.parametrize("name, input_shape, num_classes", ZOO_DATASETS)
def test_zoo_model_builds_and_predicts(name, input_shape, num_classes):
    model = models.get(name, num_classes=num_classes, input_shape=input_shape)
    images = np.random.default_rng(0).random((2, *input_shape), np.float32)

    logits = model(images, training=False)

    assert logits.shape == (2, num_classes)
    assert np.all(np.isfinite(logits))
    _assert_convertible(model)


@pytest.mark.parametrize(
    "name, trainable_parameters", [("resnet18", 11_689_512), ("resnet34", 21_797_672)]
)
def test_imagenet_resnet_has_torchvision_parameter_count(name, trainable_parameters):
    model = models.get(name, num_classes=1000, input_shape=(224, 224, 3))

    assert model.output_shape == (None, 1000)
    assert model.get_layer("maxpool").output.shape == (None, 56, 56, 64)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable_parameters
    _assert_convertible(model)


@pytest.mark.parametrize("size, has_max_pool", [(32, False), (63, False), (64, True)])
def test_resnet18_default_stem_depends_on_input_size(size, has_max_pool):
    model = models.get("resnet18", input_shape=(size, size, 3))

    assert ("maxpool" in [layer.name for layer in model.layers]) == has_max_pool


def test_resnet_stem_can_be_chosen():
    cifar_stem = models.get("resnet34", input_shape=(64, 64, 3), stem="cifar")

    assert cifar_stem.get_layer("conv1").kernel_size == (3, 3)
    with pytest.raises(ValueError, match="stem"):
        models.get("resnet18", stem="mnist")


def test_resnet20_has_he_et_al_shape():
    model = models.get("resnet20", num_classes=10, input_shape=(32, 32, 3))

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 19 + 2  # 19 weight layers + the fc make 20; 2 projection shortcuts
    assert model.get_layer("layer3.2.relu2").output.shape == (None, 8, 8, 64)
    assert model.get_layer("layer2.0.shortcut.0").strides == (2, 2)


def test_resnet20_option_a_shortcut_subsamples_and_pads_channels():
    model = models.get("resnet20", shortcut="A")
    shortcut = model.get_layer("layer2.0.shortcut")
    x = np.random.default_rng(1).random((2, 31, 31, 16), np.float32)

    expected = np.pad(x[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (8, 8)])
    np.testing.assert_array_equal(shortcut(x), expected)
    assert not shortcut.trainable_weights


def test_vgg16_without_batch_norm_has_conv_biases():
    model = models.get("vgg16", batch_norm=False)

    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.get_layer("block1.conv1").use_bias


def test_get_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="resnet18.*resnet20.*resnet34.*vgg16"):
        models.get("alexnet")


def _assert_convertible(model):
    for layer in model.layers:
        assert isinstance(layer, CONVERTIBLE_LAYERS), f"{layer.name}: {type(layer).__name__}"
        assert getattr(layer, "activation", keras.activations.relu) in (
            keras.activations.relu,
            keras.activations.linear,
        ), layer.name
