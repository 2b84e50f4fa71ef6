"""--distribute: data parallelism over two virtual CPU devices gives the one-device results.

The virtual devices must exist before the backend starts (XLA_FLAGS for JAX,
logical CPU devices for TensorFlow), so each backend runs in a subprocess.
Imports take most of a short run, so one subprocess per backend does every
check (`DRIVER`): `simulate` on two devices against one, a short
`training.train` run and its saved model evaluated on two devices and on one,
and `convert.py --distribute` against a one-device evaluation of its outputs.
The tests compare what it reports.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bsnn_tf import data

REPO = pathlib.Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax")
TRAIN_IMAGES, TEST_IMAGES = 256, 200
CONVERT_ARGV = ["--methods=bsnn", "--phases=4", "--timesteps=16", "--checkpoints=8",
                "--limit=64", "--calibration_size=64"]

# Two devices: code run before anything initialises the backend, and environment variables.
TWO_DEVICES = {
    "tensorflow": (
        "import tensorflow as tf\n"
        "tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0],\n"
        "                                           [tf.config.LogicalDeviceConfiguration()] * 2)\n"
    ),
    "jax": "",
}
ENVIRONMENT = {
    "tensorflow": {},
    "jax": {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_ENABLE_X64": "1"},
}

# argv[1]: a work directory holding data/ (a small MNIST); argv[2]: convert.py's
# arguments (JSON). Writes report.json there.
DRIVER = """
import contextlib, io, json, pathlib, sys
import keras, numpy as np
from absl import app
import bsnn_tf, convert
from bsnn_tf import backend, data
from bsnn_tf.runs import training
from conftest import conv_net, images

work, convert_argv = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
report = {"devices": backend.devices(True).count}


def mismatches(snn, x, **kwargs):
    # Names of the results that differ between distribute=False and True.
    one = bsnn_tf.simulate(snn, x, verbose=0, record_values=True, **kwargs)
    two = bsnn_tf.simulate(snn, x, verbose=0, record_values=True, distribute=True, **kwargs)
    pairs = {f"logits@{t}": (one.outputs_at[t], two.outputs_at[t]) for t in one.outputs_at}
    for field in ("spike_counts", "unit_spike_counts", "values", "trace"):
        for name, value in (getattr(one, field) or {}).items():
            pairs[f"{field}/{name}"] = (value, getattr(two, field)[name])
    assert len(pairs) > 4 and len(one.outputs) == len(x)
    return sorted(name for name, (a, b) in pairs.items() if not np.array_equal(a, b))


# A conv net with max pooling, 7 images in batches of 4 (the last one padded), 2 chunks or more.
snn = bsnn_tf.convert(conv_net(0), images(32, (8, 8, 2), seed=1), phases=4, dtype="float64",
                      verbose=0, calibration="percentile")
x = images(7, (8, 8, 2), seed=2)
report["simulate"] = {
    "step": mismatches(snn, x, timesteps=16, mode="step", checkpoints=[8], batch_size=4,
                       chunk=2, trace=True),
    "period": mismatches(snn, x, timesteps=24, checkpoints=[8, 16], batch_size=4, chunk=2),
}

# training.train on two devices; its saved model evaluated on two devices and on one.
data_dir = str(work / "data")
config = training.TrainConfig("mnist_cnn", "mnist", str(work / "train"), epochs=1,
                              batch_size=64, data_dir=data_dir, distribute=True)
results = training.train(config)
x_test, y_test = data.load("mnist", "test", data_dir)
saved = str(work / "train" / "model.keras")
one_device = keras.models.load_model(saved).evaluate(x_test, y_test, batch_size=64,
                                                     return_dict=True, verbose=0)
with backend.distribution_scope(True):
    two_devices = keras.models.load_model(saved).evaluate(x_test, y_test, batch_size=64,
                                                          return_dict=True, verbose=0)
report["train"] = {"results": results, "one_device": one_device, "two_devices": two_devices}
if keras.backend.backend() == "jax":
    uneven = training.TrainConfig("mnist_cnn", "mnist", str(work / "uneven"), epochs=1,
                                  batch_size=63, data_dir=data_dir, distribute=True)
    try:
        training.train(uneven)
    except training.ConfigError as error:
        report["train"]["uneven"] = [str(error), (work / "uneven").exists()]

# convert.py --distribute, then its ANN and SNN evaluated on one device.
output_dir = work / "convert"
sys.argv = ["convert.py", *convert_argv, "--distribute", f"--output_dir={output_dir}"]
stderr = io.StringIO()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
    try:
        app.run(convert.main, argv=sys.argv)
    except SystemExit as exit:
        assert not exit.code, (exit.code, stderr.getvalue()[-3000:])
results = json.loads((output_dir / "results.json").read_text())
x_test, y_test = data.load("mnist", "test", limit=results["test_images"])
ann = keras.models.load_model(results["flags"]["weights"], compile=False)
snn = keras.models.load_model(output_dir / "snn_bsnn.keras")
report["convert"] = {
    "results": results,
    "ann_accuracy": float(np.mean(np.argmax(ann.predict(x_test, verbose=0), -1) == y_test)),
    "accuracy": bsnn_tf.evaluate(snn, x_test, y_test, results["timesteps"], verbose=0),
    "first_readout": snn.first_readout,
}
(work / "report.json").write_text(json.dumps(report))
"""


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """The first demo MNIST images: `TRAIN_IMAGES` training and `TEST_IMAGES` test ones."""
    directory = tmp_path_factory.mktemp("small_mnist")
    for split, n in (("train", TRAIN_IMAGES), ("test", TEST_IMAGES)):
        with np.load(os.path.join(data.DEMO_DIR, f"mnist_{split}.npz")) as demo:
            np.savez(directory / f"mnist_{split}.npz",
                     **{f"x_{split}": demo[f"x_{split}"][:n], f"y_{split}": demo[f"y_{split}"][:n]})
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_mnist):
    """{backend: (exit code, work directory)} of `DRIVER` on two virtual CPU devices.

    The backends run at the same time: most of their time goes to
    compilation, which uses one core.
    """
    processes = {}
    for backend in BACKENDS:
        work = tmp_path_factory.mktemp(f"distribute_{backend}")
        (work / "data").symlink_to(small_mnist, target_is_directory=True)
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
                   **ENVIRONMENT[backend])
        env.pop(data.DATA_DIR_ENV, None)
        with open(work / "output.txt", "w") as output:
            processes[backend] = (subprocess.Popen(
                [sys.executable, "-c", TWO_DEVICES[backend] + DRIVER, str(work),
                 json.dumps(CONVERT_ARGV)],
                cwd=work, env=env, stdout=output, stderr=subprocess.STDOUT), work)
    try:
        return {backend: (process.wait(timeout=600), work)
                for backend, (process, work) in processes.items()}
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.kill()


@pytest.fixture(params=BACKENDS)
def report(request, runs):
    """What `DRIVER` reported on the backend."""
    code, work = runs[request.param]
    assert code == 0, (work / "output.txt").read_text()[-5000:]
    report = json.loads((work / "report.json").read_text())
    report["backend"] = request.param
    return report


def test_two_devices(report):
    assert report["devices"] == 2


def test_simulation_on_two_devices_equals_one_exactly(report):
    # float64: logits at every checkpoint, spike counts, values and traces, bit for bit.
    assert report["simulate"] == {"step": [], "period": []}


def test_training_on_two_devices_saves_a_model_with_the_same_accuracy_on_one(report):
    train = report["train"]
    results = train["results"]
    assert results["backend"] == report["backend"] and results["flags"]["distribute"]
    assert 0.0 < results["test_accuracy"] <= 1.0
    # The last validation pass (two devices), and the saved model on two devices and on one.
    assert train["one_device"]["accuracy"] == train["two_devices"]["accuracy"]
    assert train["one_device"]["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)


def test_training_on_jax_refuses_batches_that_do_not_split(runs):
    """Only JAX needs it: TensorFlow's MirroredStrategy splits uneven batches."""
    code, work = runs["jax"]
    assert code == 0, (work / "output.txt").read_text()[-5000:]
    report = json.loads((work / "report.json").read_text())
    message, output_dir_exists = report["train"]["uneven"]
    assert "splits every batch evenly over the 2 devices" in message
    assert "batches of 63" in message and not output_dir_exists


def test_convert_distributed_accuracies_equal_one_device(report):
    convert = report["convert"]
    results = convert["results"]
    assert results["flags"]["distribute"] and results["backend"] == report["backend"]
    assert results["test_images"] == 64 and results["timesteps"] == [8, 16]
    assert results["ann_accuracy"] == convert["ann_accuracy"]
    # Before the first readout the outputs say nothing about the input: no accuracy.
    assert results["methods"]["bsnn"]["accuracy"] == [
        convert["accuracy"][str(t)] if t >= convert["first_readout"] else None
        for t in results["timesteps"]]
