"""convert.py's one pass over the test images and --resume: the results equal those of
the run before the one pass (a committed results.json), a run killed midway resumes to
the same results, and an unreadable image stops a run (its batches kept) or is skipped."""

import json
import os
import pathlib
import shlex
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import bsnn_tf
from bsnn_tf import data, runs
from bsnn_tf.runs import rundir
from conftest import REPO

# The results.json of the demo run below before convert.py made one pass (today's stages:
# the ANN on every image, then each method, then a second simulation for statistics).
EXPECTED = json.loads((REPO / "tests" / "data" / "convert_demo_results.json").read_text())
ARGV = shlex.split(EXPECTED["command"])[1:-2]  # without --output_dir
# What may differ between two runs of the same images: the time, the command line, where
# the checkpoint and outputs are, and the flags that do not change results.
VOLATILE = {"seconds", "command", "weights", "output_dir", "resume", "skip_unreadable"}
# The spike statistics: since it was made, they count each layer's periods in the run's
# schedule (issue 34, item 4); held to `bsnn_tf.simulate` instead (`assert_statistics`).
VOLATILE |= {"firing_rates", "sin_rates", "synaptic_operations", "synops_per_mac"}
# Keys that results.json gained after the committed one was made (other issues' work).
ADDED = {"latency_search", "count_window", "count_window_note", "synaptic_operations_per_layer",
         "ann_macs_per_layer", "energy", "auto_tolerance"}

# Runs convert.py with argv[1:], killing itself (SIGKILL, no clean-up) once the partial
# state on disk holds KILL_AFTER images.
KILLED_DRIVER = """
import os, signal, sys
from absl import app
import convert
from bsnn_tf.runs import partial

save, kill_after = partial.save, int(os.environ["KILL_AFTER"])

def save_then_die(directory, state, **kwargs):
    save(directory, state, **kwargs)
    if state.done >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

partial.save = save_then_die
sys.argv = ["convert.py", *sys.argv[1:]]
app.run(convert.main, argv=sys.argv)
"""


def convert(argv, cwd, driver=None, **env):
    environment = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **env)
    environment.pop(data.DATA_DIR_ENV, None)
    command = ["-c", driver] if driver else [str(REPO / "convert.py")]
    return subprocess.run([sys.executable, *command, *argv], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


def assert_same_results(actual, expected, where="results.json"):
    """Equal key by key, but the VOLATILE keys; floats to rounding."""
    if isinstance(expected, dict):
        assert set(actual) - VOLATILE - ADDED == set(expected) - VOLATILE, where
        for key in set(expected) - VOLATILE:
            assert_same_results(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_results(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12), where
    else:
        assert actual == expected, where


def assert_statistics(results, output_dir):
    """Each method's spike statistics are `bsnn_tf.simulate`'s on the first
    --statistics_images test images, with the saved SNN."""
    ann = keras.models.load_model(runs.DEMO_CHECKPOINT, compile=False)
    count = EXPECTED["methods"]["bsnn"]["statistics"]["images"]
    x, _ = data.load("mnist", "test", data.DEMO_DIR, limit=count)
    for method, record in results["methods"].items():
        snn = keras.models.load_model(output_dir / f"snn_{method}.keras")
        result = bsnn_tf.simulate(snn, x, timesteps=record["statistics"]["timesteps"],
                                  ann=ann, verbose=0)
        assert record["statistics"]["images"] == count
        assert record["firing_rates"] == pytest.approx(result.firing_rates(), rel=1e-6)
        assert record["sin_rates"] == pytest.approx(result.sin_rates(), rel=1e-6)


def test_one_pass_gives_the_results_of_the_separate_passes(tmp_path):
    process = convert([*ARGV, f"--output_dir={tmp_path / 'run'}"], tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert_same_results(results, EXPECTED)
    assert_statistics(results, tmp_path / "run")
    # One progress line over the images for the ANN and both methods.
    passes = [line for line in process.stdout.splitlines() if "test images:" in line]
    assert passes == [f"ANN and bsnn, phase on mnist test images: "
                      f"{EXPECTED['test_images']}/{EXPECTED['test_images']} images (100%) in "
                      + passes[-1].rsplit(" in ", 1)[1]]
    assert not os.path.exists(rundir.partial_directory(str(tmp_path / "run")))


def test_a_killed_run_resumes_to_the_results_of_an_uninterrupted_one(tmp_path):
    output_dir = tmp_path / "run"
    argv = [*ARGV, f"--output_dir={output_dir}"]
    killed = convert(argv, tmp_path, KILLED_DRIVER, KILL_AFTER="32")
    assert killed.returncode == -9, killed.stderr[-3000:]
    partial_dir = pathlib.Path(rundir.partial_directory(str(output_dir)))
    state = json.loads((partial_dir / "state.json").read_text())
    assert state["done"] == state["images"] == 32
    assert not output_dir.exists()  # nothing that looks like a finished run
    refused = convert(argv, tmp_path)
    assert refused.returncode != 0 and "pass --resume to continue it" in refused.stderr
    other = convert([*argv, "--resume", "--limit=95"], tmp_path)
    assert other.returncode != 0 and "(evaluated images, --limit differ)" in other.stderr, other.stderr[-3000:]
    assert "Converting" not in other.stdout  # refused before any work
    resumed = convert([*argv, "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming after 32 evaluated images" in resumed.stdout
    results = json.loads((output_dir / "results.json").read_text())
    assert_same_results(results, EXPECTED)
    assert_statistics(results, output_dir)
    assert not partial_dir.exists()


def tiny_imagenet_model(path):
    """A few strided convolutions on 224 x 224 x 3 inputs, 1000 classes, saved to `path`."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((224, 224, 3)),
        layers.Conv2D(4, 8, strides=8, activation="relu"),
        layers.Conv2D(8, 4, strides=4, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(1000),
    ])
    model.save(path)
    return path


def imagenet_folder(root, shared_data, count, classes=4, side=None):
    """imagenet/val/<wnid>/ with `count` images, the sample's JPEG files in turn (hard
    links: no copies), or re-encoded with their longer side `side` pixels."""
    with np.load(shared_data / "imagenet_sample_0.npz") as sample:
        blob, offsets = sample["test_jpeg"], sample["test_offsets"]
    wnids = sorted(line.split()[1] for line in
                   (shared_data / "imagenet_classes.txt").read_text().splitlines())[:classes]
    sources = root / "sources"
    sources.mkdir(parents=True)
    paths = []
    for i in range(min(count, len(offsets) - 1)):
        path = sources / f"{i}.JPEG"
        path.write_bytes(blob[offsets[i]:offsets[i + 1]].tobytes())
        if side:
            with Image.open(path) as image:
                image.thumbnail((side, side))
                image.save(path, quality=90)
        paths.append(path)
    for i in range(count):
        folder = root / "imagenet" / "val" / wnids[i % classes]
        folder.mkdir(parents=True, exist_ok=True)
        os.link(paths[i % len(paths)], folder / f"ILSVRC2012_val_{i:08d}.JPEG")
    return sorted((root / "imagenet" / "val").glob("*/*.JPEG"))


TINY_ARGV = ["--dataset=imagenet", "--calibration_split=test", "--calibration_size=4",
             "--phases=2", "--timesteps=8", "--calibration=percentile"]


def test_an_unreadable_image_stops_the_run_and_resume_can_skip_it(tmp_path, shared_data):
    files = imagenet_folder(tmp_path / "data", shared_data, count=12)
    evaluated = [f for i, f in enumerate(files)
                 if i not in np.random.default_rng(0).permutation(12)[:4]]
    broken = evaluated[5]
    broken.unlink()  # a hard link: truncate a copy of its own
    broken.write_bytes(files[0].read_bytes()[:700])
    argv = [*TINY_ARGV, f"--weights={tiny_imagenet_model(tmp_path / 'tiny.keras')}",
            f"--data_dir={tmp_path / 'data'}", "--batch_size=2",
            f"--output_dir={tmp_path / 'run'}"]
    stopped = convert(argv, tmp_path)
    assert stopped.returncode == 1
    assert str(broken) in stopped.stderr and "4 evaluated images before it are kept" in \
        stopped.stderr, stopped.stderr[-3000:]
    assert not (tmp_path / "run").exists()
    resumed = convert([*argv, "--resume", "--skip_unreadable"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_images"] == 7
    assert results["unreadable_images"]["count"] == 1
    assert str(broken) in results["unreadable_images"]["files"][0]


def test_memory_does_not_grow_with_the_number_of_images(tmp_path, shared_data):
    """1,000 and 5,000 ImageNet images (224 x 224 inputs, from small JPEG files that decode
    quickly), each command in a process of its own (benchmarks/peak_rss.py), both at once:
    had the run kept its images, the second would hold 4,000 x 600 kB more."""
    model = tiny_imagenet_model(tmp_path / "tiny.keras")
    runs = {}
    for count in (1000, 5000):
        imagenet_folder(tmp_path / str(count), shared_data, count, side=96)
        out = tmp_path / f"{count}.json"
        command = [sys.executable, str(REPO / "benchmarks" / "peak_rss.py"), str(out),
                   str(REPO / "convert.py"), *TINY_ARGV, f"--weights={model}",
                   f"--data_dir={tmp_path / str(count)}", "--batch_size=100",
                   "--statistics_images=100", f"--output_dir={tmp_path / f'run{count}'}"]
        runs[count] = (out, subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, text=True))
    peaks = {}
    for count, (out, process) in runs.items():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        peaks[count] = json.loads(out.read_text())["peak_rss_bytes"] / 2**20
    assert peaks[5000] < 1.1 * peaks[1000] + 150, f"peak RSS in MB: {peaks}"
