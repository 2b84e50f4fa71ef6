"""The third-party checkpoints reproduce their published accuracies as Keras 3 models."""

import pathlib

import numpy as np
import pytest

from bsnn_tf import data
from bsnn_tf.models import thirdparty

# The first 500 of the 1,900 lossless CIFAR-10 test images (../shared/data); the
# full set gives 1,727 correct (90.89%), see docs/RESULTS.md.
LOSSLESS_500 = pathlib.Path(__file__).parent / "data" / "cifar10_lossless_500.npz"


def test_akamaster_resnet20_accuracy_on_lossless_cifar10():
    test_set = np.load(LOSSLESS_500)
    images = thirdparty.cifar10_akamaster_preprocess(test_set["x_test"])
    model = thirdparty.akamaster_resnet20()

    correct = model.predict(images, batch_size=500, verbose=0).argmax(1) == test_set["y_test"]

    assert correct.sum() == 455  # 91.0%


def test_akamaster_option_a_shortcuts_are_fixed():
    model = thirdparty.akamaster_resnet20()

    shortcuts = [layer for layer in model.layers if not layer.trainable]
    assert [layer.name for layer in shortcuts] == ["layer2.0.shortcut", "layer3.0.shortcut"]
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 269_722


def test_cifar10_akamaster_preprocess():
    white = np.full((1, 32, 32, 3), 255, np.uint8)

    x = thirdparty.cifar10_akamaster_preprocess(white)

    assert x.dtype == np.float32
    expected = [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    np.testing.assert_allclose(x[0, 0, 0], expected, rtol=1e-6)


def test_snntoolbox_lenet5_accuracy_on_mnist():
    x_test, y_test = data.load("mnist", "test")
    model = thirdparty.snntoolbox_lenet5()

    predictions = model.predict(x_test, batch_size=2000, verbose=0)

    assert (predictions.argmax(1) == y_test).sum() == 9914


@pytest.mark.parametrize("loader", [thirdparty.akamaster_resnet20, thirdparty.snntoolbox_lenet5])
def test_missing_checkpoint_names_the_path(loader, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        loader(tmp_path / "nowhere.bin")
