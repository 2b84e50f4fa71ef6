"""train.py and bsnn_tf.runs.training: a short real run, configs, and bad input."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import app, flags

import bsnn_tf
from bsnn_tf import data, losses, models, quantized, runs
from bsnn_tf.runs import recipe, training
from conftest import reference_net
from reference import simulate_reference

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train  # noqa: E402  (the script at the repository root)

SHORT_RUN = ["--model=mnist_cnn", "--dataset=mnist", "--epochs=1", "--limit=512"]
# A checkpoint of the user's own architecture: no --model.
CHECKPOINT_RUN = SHORT_RUN[1:]


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """The demo's 1,000 training images and 500 of its test images."""
    directory = tmp_path_factory.mktemp("small_mnist")
    for split, n in (("train", 1000), ("test", 500)):
        with np.load(os.path.join(data.DEMO_DIR, f"mnist_{split}.npz")) as demo:
            np.savez(directory / f"mnist_{split}.npz",
                     **{f"x_{split}": demo[f"x_{split}"][:n], f"y_{split}": demo[f"y_{split}"][:n]})
    return directory


def run_train(*argv):
    """Runs train.py's main as `python train.py ...` would; returns the exit code."""
    flags.FLAGS.unparse_flags()
    argv = ["train.py", *argv]
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_info:
        patch.setattr(sys, "argv", argv)
        app.run(train.main, argv=argv)
    return exit_info.value.code


def test_one_short_epoch_writes_model_and_results(tmp_path, small_mnist):
    output_dir = tmp_path / "run"
    code = run_train(*SHORT_RUN, f"--data_dir={small_mnist}", f"--output_dir={output_dir}")
    assert code in (0, None)
    assert sorted(p.name for p in output_dir.iterdir() if p.name != "logs") == [
        "model.keras", "results.json"]
    results = json.loads((output_dir / "results.json").read_text())
    # The reported accuracy is the saved model's on the test images.
    x_test, y_test = data.load("mnist", "test", small_mnist)
    saved = keras.models.load_model(output_dir / "model.keras", compile=False)
    accuracy = np.mean(np.argmax(saved.predict(x_test, verbose=0), -1) == y_test)
    assert results["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert results["epochs"] == 1 and results["flags"]["limit"] == 512
    assert results["flags"]["model"] == "mnist_cnn" and "--limit=512" in results["command"]


def test_jax_backend_without_tensorflow(tmp_path, small_mnist):
    output_dir = tmp_path / "jax_run"
    argv = ["train.py", *SHORT_RUN, f"--data_dir={small_mnist}", f"--output_dir={output_dir}"]
    script = (
        "import sys, runpy\n"
        "sys.modules['tensorflow'] = sys.modules['tensorflow_datasets'] = None\n"
        f"sys.argv = {argv!r}\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO))
    env.pop(data.DATA_DIR_ENV, None)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output_dir / "results.json").read_text())
    assert results["backend"] == "jax" and (output_dir / "model.keras").is_file()


def test_snn_phases_fine_tunes_a_checkpoint_into_its_bsnn_at_the_first_readout(tmp_path,
                                                                                small_mnist):
    """--snn_phases from a checkpoint: the saved model is its BSNN at the first readout,
    image for image (the numpy reference simulator), so its reported test accuracy is
    the BSNN's there."""
    output_dir = tmp_path / "snn_run"
    code = run_train(*SHORT_RUN, "--snn_phases=2", "--lr=0.01",
                     f"--weights={runs.DEMO_CHECKPOINT}", f"--data_dir={small_mnist}",
                     f"--output_dir={output_dir}")
    assert code in (0, None)
    saved = keras.models.load_model(output_dir / "model.keras", compile=False)
    assert {layer.phases for layer in quantized.layers_of(saved)
            if isinstance(layer, quantized.QuantizedReLU)} == {2}
    x_test, y_test = data.load("mnist", "test", small_mnist)
    snn = bsnn_tf.convert(saved, x_test[:64], dtype="float64", verbose=0)
    assert snn.phases == 2  # the phases it was trained for
    x = x_test[:16].astype("float64")
    simulated = simulate_reference(reference_net(snn), x, snn.first_readout)["logits"][:, -1]
    np.testing.assert_allclose(simulated, saved.predict(x, verbose=0), atol=1e-4)
    results = json.loads((output_dir / "results.json").read_text())
    accuracy = np.mean(np.argmax(saved.predict(x_test, verbose=0), -1) == y_test)
    assert results["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--model=nope", "--dataset=mnist"], "Unknown model 'nope'"),
    (["--model=mnist_cnn", "--dataset=svhn"], "Unknown dataset 'svhn'"),
    (["--model=mnist_cnn", "--dataset=cifar10"], "does not fit dataset 'cifar10'"),
    (["--model=mnist_cnn", "--dataset=mnist", "--epochs=0"], "epochs must be a positive"),
    (["--model=mnist_cnn", "--dataset=mnist", "--batch_size=-8"], "batch_size must be a positive"),
    (["--model=mnist_cnn", "--dataset=mnist", "--limit=0"], "limit must be a positive"),
])
def test_bad_flags_fail_clearly_and_write_nothing(tmp_path, argv, message):
    output_dir = tmp_path / "run"
    code = run_train(*argv, f"--output_dir={output_dir}")
    assert isinstance(code, str) and message in code
    assert not output_dir.exists()


@pytest.mark.parametrize("flag, message", [
    ("--lr=nan", "lr must be a positive finite number, got nan."),
    ("--lr=inf", "lr must be a positive finite number, got inf."),
    ("--lr=0", "lr must be a positive finite number, got 0.0."),
    ("--momentum=nan", "momentum must be a finite number >= 0, got nan."),
    ("--weight_decay=-inf", "weight_decay must be a finite number >= 0, got -inf."),
    ("--warmup_epochs=1", "warmup_epochs must be in [0, epochs=1), got 1.0."),
    ("--label_smoothing=1", "label_smoothing must be in [0, 1), got 1.0."),
])
def test_bad_rates_are_refused_before_training(tmp_path, flag, message):
    # No data in --data_dir: a run that got past the flag checks fails differently.
    output_dir = tmp_path / "run"
    code = run_train(*SHORT_RUN, flag, f"--data_dir={tmp_path}", f"--output_dir={output_dir}")
    assert isinstance(code, str) and message in code
    assert not output_dir.exists()


def test_diverged_training_writes_no_model_or_results(tmp_path, small_mnist):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "model.keras").write_bytes(b"an earlier run")
    code = run_train(*SHORT_RUN, "--lr=1e30", "--overwrite", f"--data_dir={small_mnist}",
                     f"--output_dir={output_dir}")
    assert isinstance(code, str) and "Training diverged" in code and "Lower --lr" in code
    assert (output_dir / "model.keras").read_bytes() == b"an earlier run"
    assert not (output_dir / "results.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging, no lock


def test_a_failed_save_keeps_the_previous_model(tmp_path, small_mnist, monkeypatch):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "model.keras").write_bytes(b"an earlier run")

    def save_cut_short(model, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a model")
        raise OSError("No space left on device")

    monkeypatch.setattr(keras.Model, "save", save_cut_short)
    config = training.TrainConfig("mnist_cnn", "mnist", str(output_dir), epochs=1,
                                  batch_size=64, limit=128, data_dir=str(small_mnist),
                                  overwrite=True)
    with pytest.raises(OSError, match="No space left"):
        training.train(config)
    assert sorted(p.name for p in output_dir.iterdir()) == ["model.keras"]  # no logs either
    assert (output_dir / "model.keras").read_bytes() == b"an earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging, no lock


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = run_train(*SHORT_RUN, f"--output_dir={blocker / 'run'}")
    assert isinstance(code, str) and "not writable" in code
    assert blocker.read_text() == ""


@pytest.mark.parametrize("output_dir", ["/proc/bsnn_run/out", "/sys/bsnn_run"])
def test_output_dir_the_file_system_refuses(output_dir):
    # os.access says yes to root there; only trying to write tells.
    code = run_train(*SHORT_RUN, f"--output_dir={output_dir}")
    assert isinstance(code, str) and f"Output directory '{output_dir}' is not writable" in code


# Runs train.py with a model save that is cut short by a SIGTERM to the process.
SIGTERM_DRIVER = """
import os, signal, sys
from absl import app
import train
from bsnn_tf.runs import rundir, training

def save_terminated(path):
    with open(path, "wb") as f:
        f.write(b"PK half a model")
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()

def train_until_the_save(config, command=None):  # no training: straight to the save
    os.makedirs(config.output_dir, exist_ok=True)
    rundir.write_atomically(os.path.join(config.output_dir, "model.keras"), save_terminated)

training.train = train_until_the_save
sys.argv = ["train.py", *sys.argv[1:]]
app.run(train.main, argv=sys.argv)
"""


def test_sigterm_while_saving_leaves_no_partial_model(tmp_path):
    output_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.run(
        [sys.executable, "-c", SIGTERM_DRIVER, *SHORT_RUN, f"--output_dir={output_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode != 0 and "KeyboardInterrupt" in process.stderr, process.stderr
    assert list(output_dir.iterdir()) == []  # no hidden .model.keras-*.keras


def test_an_earlier_run_is_refused_without_overwrite_and_replaced_whole_with_it(
        tmp_path, small_mnist):
    output_dir = tmp_path / "run"
    earlier = {"model.keras": "earlier", "results.json": "earlier",
               "logs/train/events.earlier": "earlier", "notes.txt": "keep me"}
    for name, text in earlier.items():
        (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / name).write_text(text)
    run = [*SHORT_RUN, "--limit=128", "--batch_size=64", f"--data_dir={small_mnist}",
           f"--output_dir={output_dir}"]
    code = run_train(*run)
    assert code == (f"train.py: error: Output directory '{output_dir}' holds an earlier run "
                    "(logs, model.keras, results.json); pass --overwrite to replace it, or "
                    "choose another --output_dir.")
    assert {str(p.relative_to(output_dir)): p.read_text() for p in output_dir.rglob("*")
            if p.is_file()} == earlier
    assert run_train(*run, "--overwrite") in (0, None)
    assert (output_dir / "notes.txt").read_text() == "keep me"
    assert json.loads((output_dir / "results.json").read_text())["epochs"] == 1
    keras.models.load_model(output_dir / "model.keras")
    logs = [p.name for p in (output_dir / "logs").rglob("*") if p.is_file()]
    assert logs and "events.earlier" not in logs  # this run's logs only, not mixed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging, no lock


# Runs train.py and sends it a SIGTERM while it trains (after it wrote part of its run).
SIGTERM_WHILE_TRAINING_DRIVER = """
import os, signal, sys
from absl import app
import train
from bsnn_tf.runs import training

def terminated_while_training(config, model, train_batches, test_batches, directory, command):
    os.makedirs(os.path.join(directory, "logs"))
    with open(os.path.join(directory, "model.keras"), "wb") as f:
        f.write(b"PK half a model")
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()

training._fit_and_save = terminated_while_training
sys.argv = ["train.py", *sys.argv[1:]]
app.run(train.main, argv=sys.argv)
"""


def test_sigterm_while_training_leaves_no_staging_directory_or_lock(tmp_path, small_mnist):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.run(
        [sys.executable, "-c", SIGTERM_WHILE_TRAINING_DRIVER, *SHORT_RUN, "--limit=64",
         f"--data_dir={small_mnist}", f"--output_dir={tmp_path / 'out' / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode != 0 and "KeyboardInterrupt" in process.stderr, process.stderr
    assert list((tmp_path / "out").iterdir()) == []  # no .train-* staging, no run/, no lock


def test_snn_phases_refuses_a_model_it_cannot_quantise(tmp_path):
    layers = keras.layers
    for name, activation, message in (
            ("sigmoid", [layers.Activation("sigmoid")], "activation 'sigmoid' is not ReLU"),
            ("leaky", [layers.LeakyReLU(0.1, name="leaky")], "'leaky' (LeakyReLU): no converter"),
            ("linear", [], "but it has none: the saved model would hold no quantiser")):
        model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3), *activation,
                                  layers.Flatten(), layers.Dense(10)])
        model.save(tmp_path / f"{name}.keras")
        output_dir = tmp_path / f"run_{name}"
        code = run_train(*CHECKPOINT_RUN, "--snn_phases=4", f"--weights={tmp_path / name}.keras",
                         f"--output_dir={output_dir}")
        assert isinstance(code, str) and code.startswith("train.py: error: --snn_phases ")
        assert f"--weights {tmp_path / name}.keras" in code and message in code
        assert not output_dir.exists()


def test_weights_that_do_not_fit_the_dataset_are_refused(tmp_path):
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.save(tmp_path / "cifar_shaped.keras")
    code = run_train(*CHECKPOINT_RUN, f"--weights={tmp_path}/cifar_shaped.keras",
                     f"--output_dir={tmp_path / 'run'}")
    assert code == (f"train.py: error: --weights {tmp_path}/cifar_shaped.keras: Model "
                    f"'{model.name}' takes inputs of shape (32, 32, 3), but mnist images are "
                    "(28, 28, 1).")
    assert not (tmp_path / "run").exists()


def test_weights_ending_in_a_softmax_are_refused(tmp_path):
    # train.py's loss takes logits: on probabilities it would train, slowly and wrongly.
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax", name="probabilities")])
    model.save(tmp_path / "softmax.keras")
    code = run_train(*CHECKPOINT_RUN, f"--weights={tmp_path}/softmax.keras",
                     f"--output_dir={tmp_path / 'run'}")
    assert code == (f"train.py: error: --weights {tmp_path}/softmax.keras: its output layer "
                    "'probabilities' is a softmax, but train.py's loss takes logits (it would "
                    "train on probabilities). Save the model without its final softmax "
                    "(convert.py takes either).")
    assert not (tmp_path / "run").exists()


def test_weights_that_are_not_the_named_zoo_model_are_refused_naming_both(tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "own.keras")
    zoo_kernel = next(tuple(v.shape) for v in models.get("mnist_cnn", 10, (28, 28, 1)).weights
                      if v.name == "kernel")
    code = run_train(*SHORT_RUN, f"--weights={tmp_path}/own.keras",
                     f"--output_dir={tmp_path / 'run'}")
    assert code == (f"train.py: error: --weights {tmp_path}/own.keras is not --model mnist_cnn: "
                    f"its kernel 1, of layer '{model.layers[0].name}', is (3, 3, 1, 4) where "
                    f"mnist_cnn's is {zoo_kernel}. Leave --model out to train the "
                    "checkpoint's own architecture, or name the zoo model it is.")
    assert not (tmp_path / "run").exists()


def test_without_model_or_weights_the_run_is_refused(tmp_path):
    code = run_train(*CHECKPOINT_RUN, f"--output_dir={tmp_path / 'run'}")
    assert code.startswith("train.py: error: Give --model NAME (a zoo model: ")
    assert code.endswith("or --weights FILE (a .keras checkpoint to start from).")
    assert not (tmp_path / "run").exists()


def test_weights_of_a_converted_snn_are_refused(tmp_path):
    ann = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"),
                            keras.layers.Dense(3)])
    snn = bsnn_tf.convert(ann, np.random.default_rng(0).uniform(size=(8, 6)), verbose=0)
    snn.save(tmp_path / "snn_bsnn.keras")
    code = run_train(*CHECKPOINT_RUN, f"--weights={tmp_path}/snn_bsnn.keras",
                     f"--output_dir={tmp_path / 'run'}")
    assert code == (f"train.py: error: --weights {tmp_path}/snn_bsnn.keras: Model '{snn.name}' "
                    "is a converted SpikingNetwork (method='bsnn'; convert.py saves them as "
                    "snn_<method>.keras), not an ANN; pass the ANN checkpoint it was converted "
                    "from.")
    assert not (tmp_path / "run").exists()


def test_data_dir_without_the_files(tmp_path):
    empty, output_dir = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    code = run_train(*SHORT_RUN, f"--data_dir={empty}", f"--output_dir={output_dir}")
    assert isinstance(code, str)
    assert "mnist_train.npz" in code and str(empty) in code and "--data_dir" in code
    assert not output_dir.exists() and not any(empty.iterdir())


def test_flagfile_with_unknown_flag(tmp_path, capsys):
    flagfile, output_dir = tmp_path / "bad.cfg", tmp_path / "run"
    flagfile.write_text(
        f"--model=mnist_cnn\n--dataset=mnist\n--timesteps=8\n--output_dir={output_dir}\n")
    assert run_train(f"--flagfile={flagfile}") == 1
    assert "Unknown command line flag 'timesteps'" in capsys.readouterr().err
    assert not output_dir.exists()


def test_weight_decay_is_an_l2_penalty_on_kernels():
    model = models.get("mnist_cnn", num_classes=10, input_shape=(28, 28, 1))
    recipe.add_weight_decay(model, 5e-4)
    kernels = [v for v in model.trainable_variables if v.name == "kernel"]
    expected = sum(2.5e-4 * float(np.sum(np.square(k.numpy()))) for k in kernels)
    assert len(model.losses) == len(kernels) == 3
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "train").glob("*.cfg")
                     if not p.stem.endswith("_cpu"))
CPU_RECIPE = REPO / "configs" / "train" / "cifar10_resnet20_cpu.cfg"


def test_every_paper_experiment_has_both_configs():
    assert EXPERIMENTS == sorted([
        "mnist_cnn", "cifar10_vgg16", "cifar10_resnet20", "cifar10_resnet18",
        "cifar100_vgg16", "cifar100_resnet20", "imagenet_resnet18", "imagenet_resnet34"])
    for experiment in EXPERIMENTS:
        assert (REPO / "configs" / f"{experiment}.cfg").is_file()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_training_configs_parse_and_validate(experiment):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", f"--flagfile={REPO / 'configs' / 'train' / f'{experiment}.cfg'}"])
    model, dataset = flags.FLAGS.model, flags.FLAGS.dataset
    assert experiment.startswith(dataset) and experiment.endswith(model)
    assert model in models.names(), f"configs/train/{experiment}.cfg names no zoo model"
    training.check_training_config(training.TrainConfig(
        model=model, dataset=dataset, output_dir=flags.FLAGS.output_dir,
        epochs=flags.FLAGS.epochs, batch_size=flags.FLAGS.batch_size,
        learning_rate=flags.FLAGS.lr))


def test_cpu_recipe_parses_and_validates():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", f"--flagfile={CPU_RECIPE}"])
    names = ("model", "dataset", "output_dir", "epochs", "batch_size", "lr", "momentum",
             "weight_decay", "rand_augment", "cutout", "warmup_epochs", "label_smoothing",
             "precision")
    settings = {name: getattr(flags.FLAGS, name) for name in names}
    settings["learning_rate"] = settings.pop("lr")  # the flag --lr sets the field learning_rate
    config = training.TrainConfig(**settings)
    training.check_training_config(config)
    assert (config.model, config.dataset, config.rand_augment, config.cutout) == (
        "resnet20", "cifar10", False, False)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_smoothed_sparse_crossentropy_equals_keras_categorical_with_smoothing(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (16, 10)).astype("float32")
    labels = rng.integers(0, 10, 16)
    reference = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                     label_smoothing=smoothing)
    expected = float(reference(np.eye(10)[labels], logits))
    loss = float(losses.SmoothedSparseCrossentropy(smoothing)(labels, logits))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_warmup_rises_linearly_then_decays_along_the_cosine():
    config = training.TrainConfig("mnist_cnn", "mnist", "unused", epochs=4, learning_rate=0.2,
                                  warmup_epochs=1)
    schedule = recipe.learning_rate_schedule(config, steps_per_epoch=10)
    rate = lambda step: float(schedule(step))
    assert rate(0) == pytest.approx(0.0, abs=1e-7)
    assert rate(5) == pytest.approx(0.1, rel=1e-5)
    assert rate(10) == pytest.approx(0.2, rel=1e-5)
    assert rate(25) == pytest.approx(0.1, rel=1e-5)  # half-way through the cosine
    assert rate(40) == pytest.approx(0.0, abs=1e-7)


def test_bfloat16_training_saves_a_float32_model(tmp_path, small_mnist):
    output_dir = tmp_path / "run"
    code = run_train(*SHORT_RUN, "--precision=mixed_bfloat16", f"--data_dir={small_mnist}",
                     f"--output_dir={output_dir}")
    assert code in (0, None)
    model = keras.models.load_model(output_dir / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    results = json.loads((output_dir / "results.json").read_text())
    assert [entry["epoch"] for entry in results["curve"]] == [1]
