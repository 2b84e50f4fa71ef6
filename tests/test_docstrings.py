"""Every docstring example in the package runs and prints what it says.

Each module's examples run as doctests in a fresh working directory, with
the module's globals plus the names the examples take as given: `ann` (the
embedded MNIST demo CNN), `snn` (it converted with the defaults), `x_train`,
`x_test`, `y_test`, `x`, `y` (embedded demo images) and a small `model`.
"""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest
from keras import ops

import bsnn_tf
from bsnn_tf import data, runs

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples():
    finder = doctest.DocTestFinder()
    names = []
    for info in pkgutil.walk_packages(bsnn_tf.__path__, "bsnn_tf."):
        module = importlib.import_module(info.name)
        if any(test.examples for test in finder.find(module)):
            names.append(info.name)
    return ["bsnn_tf"] + names


@pytest.fixture(scope="module")
def given():
    ann = keras.models.load_model(runs.DEMO_CHECKPOINT)
    x_train, _ = data.load("mnist", "train", limit=500)
    x_test, y_test = data.load("mnist", "test", limit=100)
    keras.config.disable_interactive_logging()   # progress bars to the log, not stdout
    snn = bsnn_tf.convert(ann, x_train)
    yield dict(ann=ann, snn=snn, x_train=x_train, x_calibration=x_train, x_test=x_test,
               y_test=y_test, x=x_test[:16], y=y_test[:16], bsnn_tf=bsnn_tf, np=np,
               keras=keras, ops=ops)
    keras.config.enable_interactive_logging()


def test_every_module_with_examples_is_collected():
    """The examples below are found (a module whose examples vanished would pass silently)."""
    modules = _modules_with_examples()
    for expected in ("bsnn_tf.clock", "bsnn_tf.coding", "bsnn_tf.neurons", "bsnn_tf.simulation",
                     "bsnn_tf.conversion.converters", "bsnn_tf.runs", "bsnn_tf.runs.training"):
        assert expected in modules


@pytest.mark.parametrize("module_name", _modules_with_examples())
def test_docstring_examples(module_name, given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given["ann"].save(tmp_path / "model.keras")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in doctest.DocTestFinder().find(module, extraglobs={**given, "model": model}):
        runner.run(test, out=report.append)
    assert runner.tries > 0
    assert runner.failures == 0, "".join(report)
