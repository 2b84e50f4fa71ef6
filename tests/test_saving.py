"""A converted SNN is a keras.Model that saves as .keras and loads back identical; so
does every other model the library saves, after `import bsnn_tf` alone."""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf import quantized
from bsnn_tf.runs import recipe, training
from conftest import images, residual_net

REPO = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.jax


@pytest.mark.parametrize("method", ["bsnn", "phase", "rate"])
def test_saved_and_loaded_snn_simulates_identically(tmp_path, method):
    model = residual_net(0, concat=True)
    snn = bsnn_tf.convert(model, images(16, (8, 8, 2)), method=method, phases=4,
                          timesteps=48, verbose=0, calibration="percentile")
    x = images(4, (8, 8, 2), seed=1)
    before = bsnn_tf.simulate(snn, x, timesteps=48, checkpoints=[24], verbose=0)
    path = tmp_path / "snn.keras"
    snn.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, bsnn_tf.SpikingNetwork)
    assert (loaded.method, loaded.phases, loaded.timesteps, loaded.depth) == (
        snn.method, snn.phases, snn.timesteps, snn.depth)
    after = bsnn_tf.simulate(loaded, x, timesteps=48, checkpoints=[24], verbose=0)
    for t in (24, 48):
        np.testing.assert_array_equal(after.outputs_at[t], before.outputs_at[t])
    for name, counts in before.spike_counts.items():
        np.testing.assert_array_equal(after.spike_counts[name], counts)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), snn.predict(x, verbose=0))


# In a fresh process, as a user would: each .keras file of argv[1:] loaded (first one
# without bsnn_tf, which Keras refuses naming its module), then `import bsnn_tf` alone.
LOAD_AFTER_IMPORT = """
import json, sys
import keras, numpy as np
try:
    keras.models.load_model(sys.argv[1])
    refusal = None
except TypeError as error:
    refusal = str(error)
import bsnn_tf
loaded = {"refusal": refusal}
for path in sys.argv[1:]:
    model = keras.models.load_model(path)
    np.save(path + ".y.npy", model.predict(np.load(path + ".x.npy"), verbose=0))
    loaded[path] = [type(model).__name__, type(getattr(model, "loss", None)).__name__,
                    getattr(getattr(model, "loss", None), "smoothing", None)]
print(json.dumps(loaded))
"""


def _saved_class_names(path):
    """Every class_name in the saved config of the .keras file `path`."""
    with zipfile.ZipFile(path) as archive:
        return set(_class_names(json.loads(archive.read("config.json"))))


def _class_names(config):
    if isinstance(config, dict):
        if "class_name" in config:
            yield config["class_name"]
        for value in config.values():
            yield from _class_names(value)
    elif isinstance(config, list):
        for value in config:
            yield from _class_names(value)


@pytest.mark.jax
def test_every_saved_model_loads_after_import_bsnn_tf_alone(tmp_path):
    """train.py's checkpoint (QuantizedReLU, its loss and warm-up schedule) and SNNs of
    every method (each neuron, the encoder, synchronous layers, the max gate, channel
    affine, readout) load with keras.models.load_model in a process that imported
    bsnn_tf only, and predict what they predicted before saving."""
    config = training.TrainConfig("mnist_cnn", "mnist", str(tmp_path / "run"),
                                  snn_phases=3, label_smoothing=0.1, warmup_epochs=0.5)
    checkpoint = recipe.compiled_model(config, steps_per_epoch=4)
    unfolded_bn = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.BatchNormalization(),
                                    keras.layers.Conv2D(4, 3, activation="relu"),
                                    keras.layers.Flatten(), keras.layers.Dense(3)])
    calibration = images(16, (8, 8, 2), low=0.0)
    models = {"checkpoint": (checkpoint, images(4, (28, 28, 1)))}
    for method, timesteps in (("bsnn", 32), ("phase", 8), ("rate", 8)):
        models[method] = (bsnn_tf.convert(residual_net(0, concat=True), calibration,
                                          method=method, timesteps=timesteps, verbose=0,
                                          calibration="percentile"), calibration[:2])
    models["spike_input"] = (bsnn_tf.convert(unfolded_bn, calibration, input_encoding="spike",
                                             timesteps=8, verbose=0), calibration[:2])
    saved = {}
    for name, (model, x) in models.items():
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        np.save(path + ".x.npy", x)
        saved[path] = model.predict(x, verbose=0)
    classes = set().union(*map(_saved_class_names, saved))
    assert {"QuantizedReLU", "SmoothedSparseCrossentropy", "CosineDecay", "SpikingNetwork",
            "BistableIF", "PhaseIF", "IF", "SynchronousLayer", "SpikingMaxPool",
            "ChannelAffine", "PhaseEncoder", "Readout"} <= classes

    process = subprocess.run([sys.executable, "-c", LOAD_AFTER_IMPORT, *saved],
                             env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    loaded = json.loads(process.stdout.strip().splitlines()[-1])
    assert "Could not locate class" in loaded["refusal"] and "bsnn_tf" in loaded["refusal"]
    checkpoint_path = str(tmp_path / "checkpoint.keras")
    assert loaded[checkpoint_path] == ["Functional", "SmoothedSparseCrossentropy", 0.1]
    for path, before in saved.items():
        if path != checkpoint_path:
            assert loaded[path][0] == "SpikingNetwork"
        np.testing.assert_allclose(np.load(path + ".y.npy"), before, rtol=1e-5, atol=1e-6)
