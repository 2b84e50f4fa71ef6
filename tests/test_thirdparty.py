"""The third-party checkpoints reproduce their published accuracies as Keras 3 models."""

import numpy as np
import pytest

from bsnn_tf.models import thirdparty

DATA = thirdparty.WEIGHTS_DIR.parent


def test_akamaster_resnet20_accuracy_on_lossless_cifar10():
    test_set = np.load(DATA / "cifar10_test_lossless.npz")
    images = thirdparty.cifar10_akamaster_preprocess(test_set["x_test"])
    first_1000 = test_set["orig_test_index"] >= 0
    model = thirdparty.akamaster_resnet20()

    correct = model.predict(images, batch_size=500, verbose=0).argmax(1) == test_set["y_test"]

    assert correct.sum() == 1727  # 90.89% of 1,900
    assert correct[first_1000].mean() == pytest.approx(0.915)


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
    test_set = np.load(DATA / "mnist_test.npz")
    model = thirdparty.snntoolbox_lenet5()

    predictions = model.predict(test_set["x_test"] / np.float32(255), batch_size=2000, verbose=0)

    assert (predictions.argmax(1) == test_set["y_test"]).sum() == 9914


@pytest.mark.parametrize("loader", [thirdparty.akamaster_resnet20, thirdparty.snntoolbox_lenet5])
def test_missing_checkpoint_names_the_path(loader, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        loader(tmp_path / "nowhere.bin")
