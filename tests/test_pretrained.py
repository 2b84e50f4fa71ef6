"""The committed MNIST checkpoint still reaches the accuracies recorded beside it.

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
from bsnn_tf import data

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
