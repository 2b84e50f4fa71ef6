"""convert.py and bsnn_tf.runs: the demo and an ImageNet-format folder end to end, and bad input.

convert.py runs in a subprocess, as users run it; its absl flags would clash
with train.py's in the pytest process. Importing TensorFlow takes most of a
short run, so one subprocess runs several command lines (`run_convert`).
"""

import dataclasses
import inspect
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import bsnn_tf
from bsnn_tf import data, quantized, runs
from bsnn_tf.runs import rundir
from bsnn_tf.conversion import ConversionConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_LIMIT, DEMO_TIMESTEPS = 100, 16
DEMO_ARGV = ["--methods=bsnn,rate", "--phases=4", f"--timesteps={DEMO_TIMESTEPS}",
             f"--limit={DEMO_LIMIT}", "--calibration_size=100"]
IMAGENET_WNIDS = ("n01440764", "n01443537", "n01484850")
HELD_OUT_IMAGES, HELD_OUT_CALIBRATION = 60, 20
OUTPUTS = ["accuracy_vs_timesteps.png", "results.json", "snn_bsnn.keras", "snn_rate.keras",
           "tensorboard"]

# Runs each command line of argv[1] (JSON) as `python convert.py ...` would and
# writes [{code, stdout, stderr}] to the file argv[2].
DRIVER = """
import contextlib, io, json, sys
from absl import app, flags
import convert

command_lines, outcomes_file = json.loads(sys.argv[1]), sys.argv[2]
outcomes = []
for argv in command_lines:
    sys.argv = ["convert.py", *argv]
    flags.FLAGS.unparse_flags()
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            app.run(convert.main, argv=sys.argv)
        except SystemExit as exit:
            code = exit.code
    if isinstance(code, str):  # sys.exit(message): the interpreter prints it, exit code 1
        stderr.write(code + "\\n")
        code = 1
    outcomes.append({"code": code or 0, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
with open(outcomes_file, "w") as f:
    json.dump(outcomes, f)
"""


def run_convert(command_lines, cwd, timeout=600):
    """Runs convert.py once per command line, all in one subprocess; returns their outcomes."""
    outcomes_file = pathlib.Path(cwd) / "outcomes.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(data.DATA_DIR_ENV, None)
    process = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(command_lines), str(outcomes_file)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    outcomes = json.loads(outcomes_file.read_text())
    outcomes_file.unlink()
    return outcomes


def make_imagenet_folder(root, train_per_class=2, val_per_class=1):
    """imagenet/{train,val}/<wnid>/*.JPEG of random pixels, of varying sizes (no empty split)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for wnid in IMAGENET_WNIDS if count else ():
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                shape = (rng.integers(40, 80), rng.integers(40, 80), 3)
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")
    return root


def make_held_out_mnist(folder, count=HELD_OUT_IMAGES, calibration_size=HELD_OUT_CALIBRATION):
    """`folder`/mnist_test.npz only: demo test images, labelled so that the demo ANN is right
    on exactly those that `runs.load_images` evaluates (not on the held-out ones).

    Returns the held-out indices, drawn as the issue specifies.
    """
    x, _ = data.load("mnist", "test", data.DEMO_DIR, limit=count)
    with np.load(os.path.join(data.DEMO_DIR, "mnist_test.npz")) as demo_test:
        pixels = demo_test["x_test"][:count]
    predicted = np.argmax(keras.models.load_model(runs.DEMO_CHECKPOINT).predict(x, verbose=0), -1)
    held_out = np.sort(np.random.default_rng(0).permutation(count)[:calibration_size])
    labels = predicted.copy()
    labels[held_out] = (predicted[held_out] + 1) % 10
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "mnist_test.npz", x_test=pixels, y_test=labels)
    return held_out


def read_tensorboard(logdir):
    """{tag: {step: value}} of the scalars tf.summary wrote to `logdir` (the text
    "count_window" as a str)."""
    events = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    value = lambda e: (e.tensor_proto.string_val[0].decode() if e.tensor_proto.string_val
                       else float(tensor_util.make_ndarray(e.tensor_proto)))
    return {tag: {e.step: value(e) for e in events.Tensors(tag)}
            for tag in events.Tags()["tensors"]
            if not tag.startswith("firing_rate_per_unit/")}


@pytest.fixture(scope="module")
def end_to_end(tmp_path_factory):
    """{run: (output_dir, outcome)}: the demo with two methods, random ResNet-34 on ImageNet
    val images only, and the demo ANN calibrated on held-out test images."""
    root = tmp_path_factory.mktemp("end_to_end")
    imagenet_data = make_imagenet_folder(root / "data", train_per_class=0, val_per_class=3)
    held_out = make_held_out_mnist(root / "mnist_test_only")
    demo_dir, imagenet_dir = root / "demo", root / "imagenet_run"
    held_out_dir, test_split_dir = root / "held_out_run", root / "test_split_run"
    # An earlier run's directory: its outputs get replaced, other files stay.
    (demo_dir / "tensorboard" / "bsnn").mkdir(parents=True)
    (demo_dir / "tensorboard" / "bsnn" / "events.out.tfevents.earlier").write_bytes(b"")
    (demo_dir / "results.json").write_text("{}")
    (demo_dir / "snn_phase.keras").write_bytes(b"a method this run does not convert")
    (demo_dir / "notes.txt").write_text("keep me")
    outcomes = run_convert([
        [*DEMO_ARGV, f"--output_dir={demo_dir}", "--overwrite"],
        ["--model=resnet34", "--dataset=imagenet", f"--data_dir={imagenet_data}",
         "--random_weights", "--phases=1", "--timesteps=2", "--limit=2", "--calibration=percentile",
         "--calibration_size=4", "--batch_size=2", f"--output_dir={imagenet_dir}"],
        [f"--data_dir={root / 'mnist_test_only'}", f"--calibration_size={HELD_OUT_CALIBRATION}",
         "--phases=4", "--timesteps=8", f"--output_dir={held_out_dir}"],
        ["--calibration_split=test", "--phases=4", "--timesteps=8", "--limit=50",
         "--calibration_size=50", f"--output_dir={test_split_dir}"],
    ], cwd=root)
    return {"demo": (demo_dir, outcomes[0]), "imagenet": (imagenet_dir, outcomes[1]),
            "held_out": (held_out_dir, outcomes[2], held_out),
            "test_split": (test_split_dir, outcomes[3])}


def test_demo_run_writes_every_output(end_to_end):
    output_dir, outcome = end_to_end["demo"]
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    assert sorted(p.name for p in output_dir.iterdir()) == sorted([*OUTPUTS, "notes.txt"])
    assert (output_dir / "notes.txt").read_text() == "keep me"
    assert not (output_dir / "tensorboard" / "bsnn" / "events.out.tfevents.earlier").exists()
    png = (output_dir / "accuracy_vs_timesteps.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    for method in ("bsnn", "rate"):
        assert list((output_dir / "tensorboard" / method).glob("events.out.tfevents.*"))

    results = json.loads((output_dir / "results.json").read_text())
    # The rate baseline's powers of two, the BSNN's every period from its first readout (12).
    assert results["test_images"] == DEMO_LIMIT and results["timesteps"] == [4, 8, 12, 16]
    assert results["calibration"] == {"split": "train", "images": 100, "seed": 0}
    assert "held out" not in outcome["stdout"]
    assert results["ann_accuracy"] > 0.95
    assert results["flags"]["methods"] == ["bsnn", "rate"]
    assert f"--timesteps={DEMO_TIMESTEPS}" in results["command"]
    for method, entry in results["methods"].items():
        accuracy = dict(zip(results["timesteps"], entry["accuracy"]))
        assert entry["converged_at"] == runs.converged_at(accuracy, results["ann_accuracy"])
        assert accuracy[DEMO_TIMESTEPS] >= results["ann_accuracy"] - 0.03, method
        assert set(entry["firing_rates"]) == set(entry["sin_rates"]) == {
            "conv1_relu", "conv2_relu"}
        assert entry["ann_macs"] == 24 * 24 * 12 * 25 + 8 * 8 * 64 * 25 * 12 + 1024 * 10
        assert entry["synaptic_operations"] > 0
        assert entry["statistics"]["count_window"] == "schedule"
        assert entry["energy"]["pj_per_ac"] == 0.9 and entry["energy"]["pj_per_mac"] == 4.6
        assert entry["energy"]["ann_pj"] == pytest.approx(entry["ann_macs"] * 4.6)
        assert entry["verification"]["timesteps"] == DEMO_TIMESTEPS
    # Before its first readout, T = (depth + 1) x phases = 12, the BSNN is not measured.
    assert results["methods"]["bsnn"]["accuracy"][:2] == [None, None]
    assert "Top-1 accuracy (ANN" in outcome["stdout"] and "T*" in outcome["stdout"]
    assert "Synaptic operations per image" in outcome["stdout"]


@pytest.mark.parametrize("method", ["bsnn", "rate"])
def test_logged_firing_rates_match_an_independent_simulation(end_to_end, method):
    output_dir, outcome = end_to_end["demo"]
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    logged = read_tensorboard(output_dir / "tensorboard" / method)
    snn = keras.models.load_model(output_dir / f"snn_{method}.keras")
    x, y = data.load("mnist", "test", data.DEMO_DIR, limit=DEMO_LIMIT)
    # The batch size convert.py used: the same padded batch, the same arithmetic.
    result = bsnn_tf.simulate(snn, x, timesteps=DEMO_TIMESTEPS, batch_size=128, verbose=0)
    for layer in snn.spiking_layers():
        neurons = layer.neurons_per_unit * int(np.prod(snn.unit_shapes[layer.name]))
        spikes = result.spike_counts[layer.name].sum()
        # counted on the schedule: from the layer's start period to the last one that
        # still reaches the readout at T (the baselines: all T)
        steps = (DEMO_TIMESTEPS if method == "rate" else
                 4 * (DEMO_TIMESTEPS // 4 - (snn.depth - 1 - layer.start_period)
                      - layer.start_period))
        expected = spikes / (len(x) * neurons * steps)
        assert logged[f"firing_rate/{layer.name}"] == {DEMO_TIMESTEPS: pytest.approx(expected)}
    assert logged["accuracy"][DEMO_TIMESTEPS] == pytest.approx(result.accuracy(y))
    assert logged["count_window"][DEMO_TIMESTEPS].startswith("schedule: ")
    assert logged["energy_pj/ann_total"][DEMO_TIMESTEPS] == pytest.approx(
        4.6 * (24 * 24 * 12 * 25 + 8 * 8 * 64 * 25 * 12 + 1024 * 10), rel=1e-6)
    measured = {"bsnn": {12, 16}, "rate": {4, 8, 12, 16}}[method]
    assert set(logged["accuracy"]) == measured


def test_resnet34_on_an_imagenet_folder(end_to_end):
    output_dir, outcome = end_to_end["imagenet"]
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    results = json.loads((output_dir / "results.json").read_text())
    assert (results["model"], results["dataset"]) == ("resnet34", "imagenet")
    assert results["test_images"] == 2 and results["calibration_images"] == 4
    # No imagenet/train: 4 of the 9 val images calibrate, 2 of the other 5 are evaluated.
    record = results["calibration"]
    assert record["split"] == "test (held out)" and record["images"] == 4
    assert record["indices"] == sorted(np.random.default_rng(0).permutation(9)[:4].tolist())
    assert "no imagenet training split in" in outcome["stdout"]
    assert results["timesteps"] == [2]  # T = 2 is before its first readout: T alone
    assert len(results["methods"]["bsnn"]["firing_rates"]) > 30
    assert (output_dir / "snn_bsnn.keras").is_file()


def test_held_out_calibration_images_are_not_evaluated(end_to_end):
    output_dir, outcome, held_out = end_to_end["held_out"]
    held_out_data = output_dir.parent / "mnist_test_only"
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    results = json.loads((output_dir / "results.json").read_text())
    assert results["calibration"] == {"split": "test (held out)", "images": HELD_OUT_CALIBRATION,
                                      "seed": 0, "indices": held_out.tolist()}
    assert results["flags"]["calibration_split"] == "auto"
    assert results["test_images"] == HELD_OUT_IMAGES - HELD_OUT_CALIBRATION
    # The ANN is wrong on every held-out image, right on every other one.
    assert results["ann_accuracy"] == 1.0
    lines = [line for line in outcome["stdout"].splitlines() if "held out" in line]
    assert lines == [f"Calibrating on {HELD_OUT_CALIBRATION} mnist test images held out of the "
                     f"evaluation (no mnist training split in {held_out_data}; seed 0); "
                     "evaluating 40 others."]


def test_calibration_split_test_on_the_demo_data(end_to_end):
    output_dir, outcome = end_to_end["test_split"]
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    results = json.loads((output_dir / "results.json").read_text())
    record = results["calibration"]
    assert (record["split"], record["images"], record["seed"]) == ("test (held out)", 50, 0)
    assert results["test_images"] == 50  # --limit counts the images left after the 50
    assert results["ann_accuracy"] > 0.9
    assert "(--calibration_split=test; seed 0); evaluating 50 others." in outcome["stdout"]


@pytest.mark.jax
def test_load_images_holds_the_calibration_slice_out(tmp_path):
    held_out = make_held_out_mnist(tmp_path / "data")
    config = runs.RunConfig(data_dir=str(tmp_path / "data"), calibration_split="test",
                            calibration_size=HELD_OUT_CALIBRATION)
    images = runs.load_images(config)
    x_calibration, record = images.x_calibration, images.calibration
    x_test = np.concatenate([batch.x for batch in images.batches(batch_size=16)])
    y_test = np.concatenate([batch.y for batch in images.batches(batch_size=16)])
    x_all, _ = data.load("mnist", "test", tmp_path / "data")
    assert len(np.unique(x_all.reshape(len(x_all), -1), axis=0)) == len(x_all)
    np.testing.assert_array_equal(x_calibration, x_all[held_out])
    assert len(x_test) == len(y_test) == HELD_OUT_IMAGES - HELD_OUT_CALIBRATION
    assert not any((x == x_calibration).all(axis=(1, 2, 3)).any() for x in x_test)
    assert record["indices"] == held_out.tolist()
    # --limit: the first evaluated images, in file order.
    config.limit = 5
    x_limited = next(runs.load_images(config).batches(batch_size=16)).x
    np.testing.assert_array_equal(x_limited, np.delete(x_all, held_out, axis=0)[:5])
    config.limit, config.calibration_size = None, HELD_OUT_IMAGES
    with pytest.raises(runs.ConfigError, match=re.escape(
            f"needs more than --calibration_size={HELD_OUT_IMAGES} of them")):
        runs.load_images(config)
    config.calibration_split = "val"
    with pytest.raises(runs.ConfigError, match=re.escape(
            "--calibration_split must be one of auto, train, test; got 'val'.")):
        runs.check_run_config(config)


# (id, convert.py arguments, message); {inputs} is a folder of prepared bad
# inputs, {out} the output directory, which must not appear.
BAD_INPUTS = [
    ("unknown_model", ["--model=nope"], "Unknown model 'nope'. Known models: mnist_cnn, resnet18"),
    ("unknown_dataset", ["--dataset=svhn"],
     "Unknown dataset 'svhn'. Known datasets: cifar10, cifar100, imagenet, mnist."),
    ("input_shape_mismatch", ["--dataset=cifar10", "--weights=" + runs.DEMO_CHECKPOINT],
     "takes inputs of shape (28, 28, 1), but cifar10 images are (32, 32, 3)"),
    ("class_count_mismatch", ["--weights={inputs}/five_classes.keras"],
     "predicts 5 classes, but mnist has 10"),
    ("missing_checkpoint", ["--weights={inputs}/missing.keras"],
     "Checkpoint file not found: {inputs}/missing.keras"),
    ("truncated_checkpoint", ["--weights={inputs}/truncated.keras"],
     "Cannot load checkpoint {inputs}/truncated.keras: the file is damaged"),
    ("damaged_checkpoint", ["--weights={inputs}/damaged.keras"],
     "Cannot load checkpoint {inputs}/damaged.keras: the file is damaged"),
    ("sigmoid_model", ["--weights={inputs}/sigmoid.keras"],
     "'sigmoid_conv' (Conv2D): activation 'sigmoid' is not ReLU"),
    ("corrupt_torchvision_weights",
     ["--model=resnet18", "--dataset=cifar10", "--weights={inputs}/corrupt.safetensors"],
     "Cannot load weights {inputs}/corrupt.safetensors"),
    ("unknown_checkpoint_format", ["--weights={inputs}/model.h5"],
     "Cannot tell the format of checkpoint {inputs}/model.h5"),
    ("weights_required", ["--model=vgg16", "--dataset=cifar10"],
     "--weights is required for vgg16 on cifar10"),
    ("weights_and_random_weights", ["--random_weights", "--weights=" + runs.DEMO_CHECKPOINT],
     "Give either --weights or --random_weights, not both."),
    ("data_dir_without_files", ["--data_dir={inputs}/empty"],
     "No 'mnist' 'test' data found. Searched:\n  - {inputs}/empty: expected mnist_test.npz"),
    ("corrupt_data", ["--data_dir={inputs}/corrupt_data"],
     "{inputs}/corrupt_data/mnist_test.npz: not a readable .npz archive"),
    ("flagfile_with_unknown_flag", ["--flagfile={inputs}/unknown_flag.cfg"],
     "Unknown command line flag 'epochs'"),
    ("timesteps_zero", ["--timesteps=0"], "timesteps must be positive, got 0."),
    ("timesteps_negative", ["--timesteps=-64"], "timesteps must be positive, got -64."),
    ("timesteps_beyond_int32", ["--timesteps=4294967296"],
     "--timesteps=4294967296 is too large: the simulation counts time in int32; use at most "
     "2147483647."),
    ("timesteps_off_period", ["--timesteps=62"],
     "Time steps [62] are not multiples of phases=4"),
    ("checkpoint_beyond_timesteps", ["--timesteps=32", "--checkpoints=8,64"],
     "Checkpoint 64 is outside 1..timesteps=32."),
    ("checkpoints_not_integers", ["--checkpoints=8,x"], "--checkpoints takes positive integers"),
    ("phases_zero", ["--phases=0"], "phases must be in 1..24, got 0."),
    ("phases_too_many", ["--phases=25", "--timesteps=50"], "phases must be in 1..24, got 25."),
    ("output_dir_not_writable", ["--output_dir={inputs}/a_file/run"],
     "Output directory '{inputs}/a_file/run' is not writable"),
    # os.access says yes to root there; the file systems refuse.
    ("output_dir_under_proc", ["--output_dir=/proc/bsnn_run/out"],
     "Output directory '/proc/bsnn_run/out' is not writable"),
    ("output_dir_under_sys", ["--output_dir=/sys/bsnn_run"],
     "Output directory '/sys/bsnn_run' is not writable"),
    ("unknown_method", ["--method=spiky"], "flag --method=spiky: value should be one of"),
    ("unknown_method_in_list", ["--methods=bsnn,spiky"],
     "Unknown method 'spiky'. Known methods: bsnn, phase, rate."),
    ("percentile_out_of_range", ["--percentile=0"], "percentile must be in (0, 100], got 0.0."),
    ("calibration_size_zero", ["--calibration_size=0"], "calibration_size must be a positive"),
    ("limit_zero", ["--limit=0"], "limit must be a positive integer, got 0."),
    ("finetune_epochs_zero", ["--calibration=finetune", "--calibration_size=300",
                              "--finetune_epochs=0"],
     "--finetune_epochs must be a positive int or None, got 0."),
    ("unexpected_argument", ["extra"], "Unexpected arguments: extra"),
    ("calibration_split_unknown", ["--calibration_split=val"],
     "flag --calibration_split=val: value should be one of"),
    ("calibration_split_test_too_few",
     ["--calibration_split=test", "--data_dir={inputs}/ten_test_images", "--calibration_size=10"],
     "(--calibration_split=test) needs more than --calibration_size=10 of them, but "
     "{inputs}/ten_test_images/mnist_test.npz has 10; pass a smaller --calibration_size"),
    ("calibration_split_train_missing",
     ["--calibration_split=train", "--data_dir={inputs}/ten_test_images"],
     "No 'mnist' 'train' data found. Searched:"),
    ("calibration_split_train_missing_hint",
     ["--calibration_split=train", "--data_dir={inputs}/ten_test_images"],
     "Or calibrate on held-out test images: --calibration_split=test."),
    ("phases_not_the_trained_k", ["--weights={inputs}/quantized_k4.keras", "--phases=3"],
     "--phases=3 does not fit --weights {inputs}/quantized_k4.keras: it was trained with "
     "--snn_phases=4 (its QuantizedReLU layers, e.g. 'conv1_relu', have phases=4), and a BSNN "
     "of another K is not the trained network at its first readout. Pass --phases=4, or "
     "leave --phases out."),
    ("timesteps_not_periods_of_the_trained_k",
     ["--weights={inputs}/quantized_k3.keras", "--timesteps=64"],
     "Time steps [64] are not multiples of phases=3: period mode simulates whole periods. "
     "--weights {inputs}/quantized_k3.keras was trained with --snn_phases=3: use multiples of 3."),
    ("weights_an_snn", ["--weights={inputs}/snn_bsnn.keras"],
     "Model 'mnist_cnn_bsnn' is a converted SpikingNetwork (method='bsnn'; convert.py saves "
     "them as snn_<method>.keras), not an ANN; pass the ANN checkpoint it was converted from."),
    ("finetune_flags_without_finetune", ["--finetune_epochs=2", "--finetune_start=percentile"],
     "--finetune_epochs and --finetune_start are settings of --calibration=finetune, but "
     "--calibration=percentile: nothing would be fine-tuned. Pass --calibration=finetune, or "
     "leave --finetune_epochs and --finetune_start out."),
    ("earlier_run_without_overwrite", ["--output_dir={inputs}/earlier_run"],
     "Output directory '{inputs}/earlier_run' holds an earlier run (results.json, "
     "snn_bsnn.keras); pass --overwrite to replace it"),
]
# Refused by absl's flag parsing, in its own words.
FLAG_PARSING_ERRORS = {"flagfile_with_unknown_flag", "checkpoints_not_integers", "unknown_method",
                       "unexpected_argument", "calibration_split_unknown"}
# The paper experiments' flagfiles parse and validate; only the trained model is missing.
BAD_INPUTS += [
    (f"config_{path.stem}", [f"--flagfile={path}"],
     "Checkpoint file not found: " + re.search(r"--weights=(\S+)", path.read_text()).group(1))
    for path in sorted((REPO / "configs").glob("*.cfg"))
]


@pytest.fixture(scope="module")
def bad_input_outcomes(tmp_path_factory):
    """{case id: (outcome, its directory, the prepared inputs)} for every BAD_INPUTS case."""
    root = tmp_path_factory.mktemp("bad_input")
    inputs = root / "inputs"
    for folder in ("empty", "corrupt_data"):
        (inputs / folder).mkdir(parents=True)
    (inputs / "corrupt_data" / "mnist_test.npz").write_bytes(b"PK\x03\x04 cut short")
    (inputs / "ten_test_images").mkdir()
    with np.load(os.path.join(data.DEMO_DIR, "mnist_test.npz")) as demo_test:
        np.savez_compressed(inputs / "ten_test_images" / "mnist_test.npz",
                            x_test=demo_test["x_test"][:10], y_test=demo_test["y_test"][:10])
    demo = pathlib.Path(runs.DEMO_CHECKPOINT).read_bytes()
    (inputs / "truncated.keras").write_bytes(demo[:len(demo) // 2])
    write_damaged_checkpoint(runs.DEMO_CHECKPOINT, inputs / "damaged.keras")
    sigmoid = keras.Sequential([keras.Input((28, 28, 1)),
                                keras.layers.Conv2D(2, 3, activation="sigmoid",
                                                    name="sigmoid_conv"),
                                keras.layers.Flatten(), keras.layers.Dense(10)])
    sigmoid.save(inputs / "sigmoid.keras")
    (inputs / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    (inputs / "model.h5").write_bytes(b"")
    (inputs / "a_file").write_text("keep me")
    (inputs / "earlier_run").mkdir()
    for name in ("results.json", "snn_bsnn.keras"):
        (inputs / "earlier_run" / name).write_text("an earlier run")
    five_classes = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                     keras.layers.Dense(5)])
    five_classes.save(inputs / "five_classes.keras")
    demo_ann = keras.models.load_model(runs.DEMO_CHECKPOINT)
    for phases in (3, 4):  # as train.py --snn_phases saves it
        quantized.quantize_relus(demo_ann, phases).save(inputs / f"quantized_k{phases}.keras")
    x_calibration, _ = data.load("mnist", "train", data.DEMO_DIR, limit=32)
    bsnn_tf.convert(demo_ann, x_calibration, verbose=0).save(inputs / "snn_bsnn.keras")
    (inputs / "unknown_flag.cfg").write_text(
        f"--model=mnist_cnn\n--epochs=3\n--output_dir={root / 'flagfile_with_unknown_flag'}/out\n")
    command_lines = []
    for case, argv, _ in BAD_INPUTS:
        (root / case).mkdir()
        argv = [a.format(inputs=inputs) for a in argv]
        if not any(a.startswith("--output_dir") for a in argv):
            argv.append(f"--output_dir={root / case / 'out'}")
        command_lines.append(argv)
    workdir = root / "workdir"
    workdir.mkdir()
    outcomes = run_convert(command_lines, cwd=workdir)
    assert not any(workdir.iterdir()), "a bad run wrote to the working directory"
    return {case: (outcome, root / case, inputs)
            for (case, _, _), outcome in zip(BAD_INPUTS, outcomes)}


@pytest.mark.jax
@pytest.mark.parametrize("case, message", [(c, m) for c, _, m in BAD_INPUTS],
                         ids=[c for c, _, _ in BAD_INPUTS])
def test_bad_input_fails_clearly_and_writes_nothing(bad_input_outcomes, case, message):
    outcome, case_dir, inputs = bad_input_outcomes[case]
    message = message.format(inputs=inputs)
    assert outcome["code"] not in (0, None)
    assert message in outcome["stderr"], outcome["stderr"][-2000:]
    assert "Traceback" not in outcome["stderr"]
    assert "ANN accuracy" not in outcome["stdout"]  # refused before any long work
    assert case in FLAG_PARSING_ERRORS or outcome["stderr"].startswith("convert.py: error: ")
    assert not any(case_dir.iterdir())
    assert (inputs / "a_file").read_text() == "keep me"
    assert (inputs / "earlier_run" / "results.json").read_text() == "an earlier run"


def write_damaged_checkpoint(source, path):
    """A copy of the .keras archive `source` whose weights file is cut in half: a
    readable zip that Keras cannot load."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as damaged:
        for info in original.infolist():
            content = original.read(info)
            damaged.writestr(info.filename, content[:len(content) // 2]
                             if info.filename.endswith(".h5") else content)


QUIET_PROBE = """
import logging, os, sys
sys.argv = [sys.argv[1] + ".py", *sys.argv[2:]]
__import__(sys.argv[0][:-3])
import tensorflow as tf
tf.constant(1.0) + 1.0
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"), logging.getLogger("tensorflow").level)
"""


@pytest.mark.parametrize("script", ["convert", "train"])
def test_scripts_start_quietly_unless_verbosity_asks(script):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    start = lambda *argv: subprocess.run([sys.executable, "-c", QUIET_PROBE, script, *argv],
                                         cwd=REPO, env=env, capture_output=True, text=True,
                                         timeout=300)
    quiet, verbose = start(), start("--verbosity", "1")
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stdout.split() == ["3", str(logging.ERROR)]
    level, logger_level = verbose.stdout.split()
    assert level != "3" and logger_level == str(logging.NOTSET)  # Keras may set its own "1"
    # TensorFlow's C++ start-up lines (oneDNN, CUDA, CPU features), which TensorFlow 2.21
    # prints whatever TF_CPP_MIN_LOG_LEVEL says, show only when asked for.
    assert not re.search(r"oneDNN|cuda|cpu_feature_guard|absl::InitializeLog", quiet.stderr)


@pytest.mark.jax
@pytest.mark.parametrize("timesteps, message", [
    (2**32, "--timesteps=4294967296 is too large"),
    (2**31, "--timesteps=2147483648 is too large"),
    (True, "--timesteps must be a positive int, got True."),
    (64.0, "--timesteps must be a positive int, got 64.0."),
])
def test_timesteps_the_simulation_cannot_count_are_refused(tmp_path, timesteps, message):
    config = runs.RunConfig(timesteps=timesteps, phases=1, output_dir=str(tmp_path / "out"))
    with pytest.raises(runs.ConfigError, match=re.escape(message)):
        runs.check_run_config(config)


@pytest.mark.jax
def test_a_second_run_into_the_same_directory_is_refused(tmp_path):
    output_dir = tmp_path / "run"
    with rundir.run_lock(str(output_dir)):
        assert (tmp_path / "run.lock").is_file()
        with pytest.raises(runs.ConfigError, match="Another convert.py run is writing"):
            with rundir.run_lock(str(output_dir)):
                pass
    assert not any(tmp_path.iterdir())
    with rundir.run_lock(str(output_dir)):  # free again
        pass


# Stages a run into argv[1] and is killed (SIGKILL: nothing can clean up) while writing it.
SIGKILL_DRIVER = """
import os, signal, sys
from bsnn_tf.runs import rundir

def killed_while_writing(directory):
    with open(os.path.join(directory, "snn_bsnn.keras"), "wb") as f:
        f.write(b"PK half an SNN")
    os.kill(os.getpid(), signal.SIGKILL)

rundir.replace_directory(sys.argv[1], killed_while_writing)
"""
# Holds the lock of the staging directory argv[1], as a live run does, until killed.
LIVE_RUN = """
import fcntl, os, sys, time
handle = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(handle, fcntl.LOCK_EX)
print("holding", flush=True)
time.sleep(600)
"""


def test_a_run_removes_staging_of_dead_runs_and_keeps_that_of_live_ones(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = subprocess.run([sys.executable, "-c", SIGKILL_DRIVER, str(tmp_path / "run")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (dead,) = [p.name for p in tmp_path.iterdir()]
    assert dead.startswith(".convert-")  # what a SIGKILL leaves
    (tmp_path / ".train-0123456789ab-old").mkdir()  # an earlier run's copy, swap over
    live = tmp_path / ".train-11112222aaaa"
    live.mkdir()
    (tmp_path / ".train-data").mkdir()  # not a staging name: the user's
    holder = subprocess.Popen([sys.executable, "-c", LIVE_RUN, str(live)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with rundir.run_lock(str(tmp_path / "run")):
            pass
        assert sorted(p.name for p in tmp_path.iterdir()) == [".train-11112222aaaa",
                                                              ".train-data"]
    finally:
        holder.kill()
        holder.wait()
    with rundir.run_lock(str(tmp_path / "other_run")):  # its run is over now
        pass
    assert [p.name for p in tmp_path.iterdir()] == [".train-data"]


SIGTERM_DRIVER = """
import os, signal, sys
from absl import app
import convert
from bsnn_tf import metrics, runs

def terminated_while_writing(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()

metrics.write_tensorboard = terminated_while_writing
sys.argv = ["convert.py", *sys.argv[1:]]
app.run(convert.main, argv=sys.argv)
"""


def test_sigterm_while_writing_leaves_no_staging_directory_or_lock(tmp_path):
    """Only the finished batches are left, hidden beside the output directory, for
    --resume: nothing that looks like a run."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(data.DATA_DIR_ENV, None)
    process = subprocess.run(
        [sys.executable, "-c", SIGTERM_DRIVER, "--phases=4", "--timesteps=8", "--limit=8",
         "--calibration_size=8", f"--output_dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode != 0 and "KeyboardInterrupt" in process.stderr, process.stderr
    # no .convert-* staging, no run/, no run.lock
    assert [p.name for p in tmp_path.iterdir()] == [".run.partial"]


@pytest.mark.jax
def test_default_checkpoints():
    assert runs.default_checkpoints(64, 8) == [8, 16, 32, 64]
    assert runs.default_checkpoints(1024, 8) == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert runs.default_checkpoints(20, 1) == [1, 2, 4, 8, 16, 20]
    assert runs.default_checkpoints(60, 5) == [10, 15, 30, 60]


@pytest.mark.jax
def test_converged_at_is_the_first_t_from_which_accuracy_stays_close():
    ann = 0.9923
    assert runs.converged_at({8: 0.11, 16: 0.9913, 32: 0.990, 64: 0.9925}, ann) == 64
    assert runs.converged_at({8: 0.11, 16: 0.9913, 32: 0.9920, 64: 0.9930}, ann) == 16
    assert runs.converged_at({8: 0.11, 16: 0.5}, ann) is None


@pytest.mark.jax
def test_a_checkpoint_trained_with_snn_phases_converts_with_its_k(tmp_path):
    path = tmp_path / "quantized_k3.keras"
    demo_ann = keras.models.load_model(runs.DEMO_CHECKPOINT)
    quantized.quantize_relus(demo_ann, 3).save(path)
    config = runs.RunConfig(weights=str(path), methods=("bsnn", "rate"))
    runs.load_ann(config)
    assert (config.phases_of("bsnn"), config.phases_of("rate")) == (3, 8)
    assert config.period_steps == 3  # (rate is simulated step by step)


def test_default_config_is_the_offline_demo():
    config = runs.RunConfig()
    assert config.weights == runs.DEMO_CHECKPOINT and os.path.isfile(config.weights)
    assert config.timesteps is None and config.batch_size is None  # chosen per model
    assert config.output_dir == os.path.join("outputs", "mnist_mnist_cnn")


def test_default_timesteps_are_the_first_readout_plus_a_few_periods():
    ann = keras.models.load_model(runs.DEMO_CHECKPOINT, compile=False)
    x, _ = data.load("mnist", "test", data.DEMO_DIR, limit=20)
    bsnn = bsnn_tf.convert(ann, x, phases=4, verbose=0)
    rate = bsnn_tf.convert(ann, x, method="rate", verbose=0)
    # The demo CNN is two spiking layers deep: its first readout is (2 + 1) x 4.
    assert bsnn.first_readout == 12
    assert runs.default_timesteps([bsnn], "mnist") == 12 + 4 * runs.EXTRA_PERIODS
    assert runs.default_timesteps([bsnn, rate], "mnist") == max(
        12 + 4 * runs.EXTRA_PERIODS, runs.BASELINE_TIMESTEPS["mnist"])
    config = runs.RunConfig(methods=("bsnn", "rate"), phases=4)
    # The rate baseline's powers of two from one period, the BSNN's every period from 12.
    assert runs.measured_timesteps(config, [bsnn, rate], 64) == [4, 8, *range(12, 64 + 1, 4)]


# --overwrite replaces a run directory as one step (rundir.replace_directory).
EARLIER_RUN = {"results.json": "earlier", "snn_bsnn.keras": "earlier bsnn",
               "snn_rate.keras": "earlier rate", "tensorboard/bsnn/events": "earlier"}
NEW_RUN = {"results.json": "new", "snn_bsnn.keras": "new bsnn", "snn_phase.keras": "new phase",
           "tensorboard/bsnn/events": "new", "tensorboard/phase/events": "new"}
OTHER_FILES = {"notes.txt": "keep me", "analysis/plot.py": "keep me too"}


def write_files(files):
    """A `write(directory)` that writes `files`, {relative path: text}."""
    def write(directory):
        for name, text in files.items():
            path = pathlib.Path(directory) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return write


def files_under(directory):
    """{relative path: text} of every file under `directory`."""
    return {str(p.relative_to(directory)): p.read_text()
            for p in pathlib.Path(directory).rglob("*") if p.is_file()}


@pytest.fixture
def earlier_run(tmp_path):
    output_dir = tmp_path / "run"
    write_files({**EARLIER_RUN, **OTHER_FILES})(output_dir)
    return output_dir


def interrupt_on_call(function, call, before=True):
    """`function`, raising KeyboardInterrupt on its `call`-th call (before or after it runs)."""
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == call and before:
            raise KeyboardInterrupt
        result = function(*args, **kwargs)
        if len(calls) == call:
            raise KeyboardInterrupt
        return result
    return interrupted


@pytest.mark.jax
def test_overwrite_replaces_the_run_and_keeps_other_files(earlier_run):
    (earlier_run / "analysis" / "link").symlink_to("plot.py")
    rundir.replace_directory(str(earlier_run), write_files(NEW_RUN), overwrite=True)
    assert files_under(earlier_run) == {**NEW_RUN, **OTHER_FILES, "analysis/link": "keep me too"}
    assert os.readlink(earlier_run / "analysis" / "link") == "plot.py"
    assert [p.name for p in earlier_run.parent.iterdir()] == ["run"]  # no staging left
    fresh = earlier_run.parent / "fresh" / "run"
    rundir.replace_directory(str(fresh), write_files(NEW_RUN))
    assert files_under(fresh) == NEW_RUN and [p.name for p in fresh.parent.iterdir()] == ["run"]


@pytest.mark.jax
@pytest.mark.parametrize("step", ["writing", "keeping other files", "renaming the earlier run",
                                  "renaming the new run", "after the swap"])
def test_an_interrupted_overwrite_leaves_one_whole_run(earlier_run, monkeypatch, step):
    write = write_files(NEW_RUN)
    if step == "writing":
        write = interrupt_on_call(write_files(NEW_RUN), 1, before=False)
    elif step == "keeping other files":
        monkeypatch.setattr(rundir, "_link_or_copy", interrupt_on_call(rundir._link_or_copy, 2))
    elif step == "renaming the earlier run":
        monkeypatch.setattr(os, "rename", interrupt_on_call(os.rename, 1))
    elif step == "renaming the new run":
        monkeypatch.setattr(os, "rename", interrupt_on_call(os.rename, 2))
    else:  # while the earlier run is being removed
        monkeypatch.setattr(shutil, "rmtree", interrupt_on_call(shutil.rmtree, 1))
    with pytest.raises(KeyboardInterrupt):
        rundir.replace_directory(str(earlier_run), write, overwrite=True)
    monkeypatch.undo()
    expected = {**(NEW_RUN if step == "after the swap" else EARLIER_RUN), **OTHER_FILES}
    assert files_under(earlier_run) == expected
    if step != "after the swap":  # (there the earlier run's copy may be left, hidden)
        assert [p.name for p in earlier_run.parent.iterdir()] == ["run"]
    with rundir.run_lock(str(earlier_run)):  # the next run removes that copy
        pass
    assert [p.name for p in earlier_run.parent.iterdir()] == ["run"]


@pytest.mark.jax
def test_ctrl_c_between_the_renames_waits_for_the_swap(earlier_run, monkeypatch):
    rename = os.rename

    def rename_then_ctrl_c(*args):
        rename(*args)
        signal.raise_signal(signal.SIGINT)

    # Ctrl-C's handler as in an interactive session (a process started in the background
    # of a shell inherits SIGINT ignored, and Python then leaves it so).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(os, "rename", rename_then_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            rundir.replace_directory(str(earlier_run), write_files(NEW_RUN), overwrite=True)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
    monkeypatch.undo()
    assert files_under(earlier_run) == {**NEW_RUN, **OTHER_FILES}
    assert [p.name for p in earlier_run.parent.iterdir()] == ["run"]


@pytest.mark.jax
def test_a_model_of_any_image_size_fits_the_dataset():
    def model(shape, classes=10):
        return keras.Sequential([keras.Input(shape), keras.layers.GlobalAveragePooling2D(),
                                 keras.layers.Dense(classes)])

    runs.check_fits(model((None, None, 1)), "mnist")
    with pytest.raises(runs.ConfigError, match=r"takes inputs of shape \(None, None, 3\)"):
        runs.check_fits(model((None, None, 3)), "mnist")


def test_convert_py_fine_tunes_the_first_readout(tmp_path):
    """--calibration=finetune end to end: the record of what fine-tuning did is in
    results.json, and the saved SNN is the fine-tuned one."""
    outcome = run_convert([["--calibration=finetune", "--calibration_size=300",
                            "--finetune_epochs=1", "--finetune_start=percentile", "--limit=40",
                            "--statistics_images=8",
                            f"--output_dir={tmp_path / 'run'}"]], cwd=tmp_path)[0]
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    record = results["methods"]["bsnn"]["finetuning"]
    assert record["epochs"] == 1 and record["labels"] is False and record["start"] == "percentile"
    assert record["training_images"] + record["held_out_images"] == 300
    assert "Fine-tuning the first readout" in outcome["stdout"]


def test_every_run_setting_is_a_flag_with_the_settings_default():
    """One record: each RunConfig field is a convert.py flag of the same name and
    default, and the library's settings take the library's defaults."""
    script = ("import json, convert\nfrom absl import flags\n"
              "print(json.dumps({name: flags.FLAGS[name].default for name in flags.FLAGS}))")
    process = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                             text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    defaults = json.loads(process.stdout.splitlines()[-1])
    for field in dataclasses.fields(runs.RunConfig):
        if field.name == "methods":  # --methods defaults to --method's one
            assert [defaults["method"]] == list(field.default)
        else:
            wanted = list(field.default) if isinstance(field.default, tuple) else field.default
            assert defaults[field.name] == wanted, field.name
    for name in ("calibration", "percentile", "channelwise", "synchronous"):
        assert runs.RunConfig.default(name) == ConversionConfig.default(name)
        assert inspect.signature(bsnn_tf.convert).parameters[name].default == \
            ConversionConfig.default(name)
