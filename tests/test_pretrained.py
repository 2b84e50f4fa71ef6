"""The committed checkpoints (the MNIST demo, the CIFAR-10 ResNet-20) keep the accuracies
recorded beside them.

`bsnn_tf/demo/mnist_cnn.json` records the ANN's accuracy on the embedded test
split (all 10,000 MNIST test images) and the BSNN's at T=64 with the library's
defaults, calibrated on the first 500 embedded training images. A change to the
checkpoint, the data, the converter or the simulator that costs accuracy fails here.
"""

import json
import os

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf import data, runs

RECORD_PATH = os.path.join(data.DEMO_DIR, "mnist_cnn.json")
# Float summation order may flip an image whose two top logits tie to ~1e-7.
ONE_IMAGE = 1e-4


@pytest.fixture(scope="module")
def demo():
    with open(RECORD_PATH) as record_file:
        record = json.load(record_file)
    ann = keras.models.load_model(os.path.join(data.DEMO_DIR, "mnist_cnn.keras"))
    x_test, y_test = data.load("mnist", "test")
    x_train, _ = data.load("mnist", "train")
    return record, ann, x_test, y_test, x_train


def test_demo_checkpoint_reaches_recorded_ann_accuracy(demo):
    record, ann, x_test, y_test, _ = demo

    accuracy = np.mean(ann.predict(x_test, batch_size=1000, verbose=0).argmax(1) == y_test)

    assert len(y_test) == record["test_images"] == 10_000
    assert accuracy == pytest.approx(record["test_accuracy"], abs=ONE_IMAGE)


def test_demo_checkpoint_bsnn_reaches_recorded_accuracy_at_t64(demo):
    record, ann, x_test, y_test, x_train = demo
    bsnn = record["bsnn"]

    snn = bsnn_tf.convert(ann, x_train[:bsnn["calibration_images"]], verbose=0)
    accuracy = bsnn_tf.evaluate(snn, x_test, y_test, timesteps=[64], batch_size=1000,
                                verbose=0)[64]

    assert snn.phases == bsnn["phases"]
    assert bsnn_tf.conversion.calibration.DEFAULT_CALIBRATION == bsnn["calibration"]
    assert accuracy == pytest.approx(bsnn["accuracy_t64"], abs=ONE_IMAGE)
    assert accuracy >= record["test_accuracy"] - 0.001  # within 0.1 pp of the ANN


RESNET20 = os.path.join(os.path.dirname(__file__), os.pardir, "pretrained", "cifar10_resnet20.keras")
CIFAR_SLICE = os.path.join(os.path.dirname(__file__), "data", "cifar10_lossless_500.npz")


def test_trained_resnet20_keeps_its_recorded_ann_and_bsnn_accuracy():
    """pretrained/cifar10_resnet20.json records, for the first 100 lossless test images in
    tests/data, the ANN's accuracy and the BSNN's (library defaults, calibrated on that
    file's images 100-499) at the first readout plus two periods
    (benchmarks/trained_resnet20.py wrote them)."""
    with open(RESNET20.replace(".keras", ".json")) as record_file:
        recorded = json.load(record_file)["bsnn"]["slice"]
    ann = keras.models.load_model(RESNET20)
    with np.load(CIFAR_SLICE) as stored:
        x, y = data.preprocess("cifar10", stored["x_test"]), stored["y_test"]
    snn = bsnn_tf.convert(ann, x[100:500], verbose=0)
    x, y = x[:recorded["images"]], y[:recorded["images"]]
    timesteps = recorded["timesteps"]

    ann_accuracy = np.mean(ann.predict(x, verbose=0).argmax(1) == y)
    bsnn_accuracy = bsnn_tf.evaluate(snn, x, y, timesteps=[timesteps], verbose=0)[timesteps]

    one_image = 1 / recorded["images"] + 1e-9
    assert ann_accuracy == pytest.approx(recorded["ann_accuracy"], abs=one_image)
    assert bsnn_accuracy == pytest.approx(recorded["bsnn_accuracy"], abs=one_image)
    assert bsnn_accuracy >= 0.8  # a usable CIFAR-10 model, not a stale or random one


def test_convert_py_defaults_to_the_trained_resnet20_on_cifar10():
    config = runs.RunConfig(model="resnet20", dataset="cifar10")
    assert os.path.samefile(config.weights, RESNET20)
    assert runs.RunConfig(model="resnet20", dataset="cifar10", random_weights=True).weights is None
