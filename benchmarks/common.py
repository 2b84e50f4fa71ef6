"""Shared pieces of the third-party benchmarks (`peer_compare.py`, `timestep_study.py`).

- `load_task`: a third-party checkpoint as a Keras ANN with its test images,
  calibration images and the ANN accuracy the issue quotes.
- `simulate_accuracies`: one simulation, accuracy at every time step of a grid.
- `t_star` (`bsnn_tf.runs.converged_at`): the smallest T from which accuracy stays
  within 0.1 pp of the ANN.
- `throughput`: images per second of a call, compilation excluded.
- `plot_accuracy_vs_t`, `markdown_table`, `update_json`, `run_header`: reporting.

Where results go: benchmarks/results (`RESULTS_DIR`), or $BSNN_RESULTS_DIR if
set; plots: docs/ (`DOCS_DIR`), or $BSNN_PLOTS_DIR if set (benchmarks/gpu_rows.sh
points both elsewhere).

The scripts add the repository root to sys.path, so they run from a clean
clone: `python benchmarks/peer_compare.py --limit 100`.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bsnn_tf  # noqa: E402
from bsnn_tf import data, models  # noqa: E402
from bsnn_tf.runs import plots  # noqa: E402
from bsnn_tf.runs import TOLERANCE  # noqa: E402  (0.1 percentage points)
from bsnn_tf.runs import converged_at as t_star  # noqa: E402
from bsnn_tf.models import thirdparty  # noqa: E402

# The shared data beside the checkout, or $BSNN_DATA_DIR.
DATA_DIR = os.environ.get(data.DATA_DIR_ENV) or str(ROOT.parent / "shared" / "data")
STORED_RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_DIR = pathlib.Path(os.environ.get("BSNN_RESULTS_DIR") or STORED_RESULTS_DIR)
DOCS_DIR = pathlib.Path(os.environ.get("BSNN_PLOTS_DIR") or ROOT / "docs")
POWER_OF_TWO_GRID = tuple(2 ** n for n in range(3, 11))  # 8, 16, ..., 1024
SEED = 0


@dataclasses.dataclass
class Task:
    """A third-party checkpoint and its images.

    Attributes:
        name: "resnet20" or "lenet5".
        ann: the Keras model (logits).
        x_test, y_test: preprocessed test images and labels.
        calibration: preprocessed training images for the data-norm.
        expected_ann_accuracy: what the issue measured on the full test set.
    """

    name: str
    ann: keras.Model
    x_test: np.ndarray
    y_test: np.ndarray
    calibration: np.ndarray
    expected_ann_accuracy: float


TITLES = {"resnet20": "akamaster ResNet-20, CIFAR-10", "lenet5": "snn_toolbox LeNet-5, MNIST",
          "mnist_cnn": "bsnn_tf demo CNN, MNIST",
          "resnet20_ours": "ResNet-20 trained here (train.py), CIFAR-10"}
# The ResNet-20 trained with configs/train/cifar10_resnet20_cpu.cfg (issue 13).
OUR_RESNET20 = ROOT / "pretrained" / "cifar10_resnet20.keras"


def load_task(name, limit=None, data_dir=DATA_DIR, calibration_size=None):
    """The task `name` (a key of `TITLES`) on its first `limit` test images,
    with `calibration_size` training images (default: the task's own count)."""
    loaders = {"resnet20": _resnet20_task, "lenet5": _lenet5_task, "mnist_cnn": _mnist_cnn_task,
               "resnet20_ours": _our_resnet20_task}
    if name not in loaders:
        raise ValueError(f"Unknown task {name!r}; known: {', '.join(loaders)}.")
    task = loaders[name](data_dir, calibration_size)
    if limit:
        task.x_test, task.y_test = task.x_test[:limit], task.y_test[:limit]
    return task


def _resnet20_task(data_dir, calibration_size=None):
    """akamaster ResNet-20, 1,900 lossless CIFAR-10 test images, 500 JPEG training images."""
    test = data.find("cifar10", "test_lossless", data_dir)
    train = data.find("cifar10", "train", data_dir)
    preprocess = thirdparty.cifar10_akamaster_preprocess
    return Task(
        name="resnet20",
        ann=thirdparty.akamaster_resnet20(),
        x_test=preprocess(test.pixels(range(len(test)))),
        y_test=test.labels,
        calibration=preprocess(train.pixels(_random_indices(len(train),
                                                            calibration_size or 500))),
        expected_ann_accuracy=0.9089,
    )


def _our_resnet20_task(data_dir, calibration_size=None):
    """Our ResNet-20 (trained on the JPEG copy), the 1,900 lossless test images, 500 JPEG
    training images; the expected accuracy is the one recorded beside the checkpoint."""
    test = data.find("cifar10", "test_lossless", data_dir)
    train = data.find("cifar10", "train", data_dir)
    record = json.loads(OUR_RESNET20.with_suffix(".json").read_text())
    return Task(
        name="resnet20_ours",
        ann=models.load_keras(OUR_RESNET20),
        x_test=data.preprocess("cifar10", test.pixels(range(len(test)))),
        y_test=test.labels,
        calibration=data.preprocess("cifar10", train.pixels(
            _random_indices(len(train), calibration_size or 500))),
        expected_ann_accuracy=record.get("lossless_accuracy"),
    )


def _lenet5_task(data_dir, calibration_size=None):
    """snn_toolbox LeNet-5, MNIST test set (x / 255), 2,000 training images."""
    x_test, y_test = data.load("mnist", "test")
    x_train, _ = data.load("mnist", "train", data_dir=data_dir)
    return Task(
        name="lenet5",
        ann=thirdparty.snntoolbox_lenet5(),
        x_test=x_test,
        y_test=y_test,
        calibration=x_train[_random_indices(len(x_train), calibration_size or 2000)],
        expected_ann_accuracy=0.9914,
    )


def _mnist_cnn_task(data_dir, calibration_size=None):
    """The embedded demo CNN, its 10,000 test images and (up to 1,000) embedded training images."""
    x_test, y_test = data.load("mnist", "test")
    x_train, _ = data.load("mnist", "train")
    return Task(
        name="mnist_cnn",
        ann=models.load_keras(f"{data.DEMO_DIR}/mnist_cnn.keras"),
        x_test=x_test,
        y_test=y_test,
        calibration=x_train[:min(calibration_size or 500, len(x_train))],
        expected_ann_accuracy=0.9923,
    )


def _random_indices(population, count, seed=SEED):
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(population, size=count, replace=False))


def ann_accuracy(task):
    """Top-1 accuracy of the Keras ANN on the task's test images."""
    logits = task.ann.predict(task.x_test, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == task.y_test))


def check_ann_accuracy(task, accuracy, full_size):
    """Raises if, on the full test set, the ANN misses the accuracy the issue measured."""
    if len(task.y_test) == full_size and abs(accuracy - task.expected_ann_accuracy) > 5e-5:
        raise RuntimeError(f"{task.name}: ANN accuracy {accuracy:.4%} differs from the "
                           f"expected {task.expected_ann_accuracy:.2%}; check weights and data.")


def simulate_accuracies(snn, task, timesteps, mode=None, batch_size=128, jit_compile="auto"):
    """({T: accuracy} for every T in `timesteps`, seconds) from one simulation."""
    start = time.perf_counter()
    accuracy = bsnn_tf.evaluate(snn, task.x_test, task.y_test, timesteps, mode=mode,
                                batch_size=min(batch_size, len(task.y_test)),
                                jit_compile=jit_compile, verbose=0)
    return accuracy, time.perf_counter() - start


def throughput(run, images, repeats=1, warm_up=None):
    """Images per second of `repeats` calls of `run()` (`images` each), timed after one call
    of `warm_up` (default: `run`), so that compilation is not timed."""
    (warm_up or run)()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return images * repeats / (time.perf_counter() - start)


def plot_accuracy_vs_t(curves, ann_accuracy, title, path, log_scale=True):
    """One accuracy-vs-T plot written to `path` (`bsnn_tf.runs.plots.accuracy_figure`)."""
    figure = plots.accuracy_figure(curves, ann_accuracy, title, tolerance=TOLERANCE,
                                   log_scale=log_scale, zoom=True)
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def machine():
    """CPU model and core count, or the accelerator's name, with the Keras backend."""
    accelerator = _accelerator()
    if accelerator:
        return f"{accelerator}, Keras {keras.__version__} ({keras.backend.backend()} backend)"
    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Keras {keras.__version__} " \
           f"({keras.backend.backend()} backend)"


def _accelerator():
    """The first GPU's name as the backend sees it; None on a CPU."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else f"{device.device_kind} (JAX {jax.__version__})"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else None
    return None


def device_label():
    """'NVIDIA H200 (jax)' on a GPU, 'CPU (tensorflow)' on a CPU: a results key's device part."""
    accelerator = _accelerator()
    name = accelerator.split(" (")[0] if accelerator else "CPU"
    return f"{name} ({keras.backend.backend()})"


def run_header():
    """The command line, date and machine of this run."""
    return {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
    }


def update_json(path, key, entry):
    """Stores `entry` as `results[key]` of the JSON file at `path`, keeping the other keys.

    A lock file serialises concurrent runs; the file is replaced atomically.
    """
    import fcntl

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        contents = json.loads(path.read_text()) if path.exists() else {"results": {}}
        contents["results"][key] = entry
        write_atomically(path, json.dumps(contents, indent=1, default=_to_builtin) + "\n")


def write_atomically(path, text):
    """Writes `text` to `path` through a file beside it (`bsnn_tf.runs.rundir.write_atomically`),
    so readers never see half of it."""
    from bsnn_tf.runs.rundir import write_atomically as write_file_atomically

    write_file_atomically(str(path), lambda temporary: pathlib.Path(temporary).write_text(text))


def add_output_arguments(parser, output):
    """The --output (JSON the results are merged into) and --report options of every script."""
    parser.add_argument("--output", type=pathlib.Path, default=output,
                        help="JSON file the results are merged into (default: %(default)s)")
    parser.add_argument("--report", action="store_true",
                        help="only print the table(s) of what --output holds")


def run_or_report(args, run, report):
    """`run(args)` unless --report, then `report(args.output)`: every study's main."""
    if not args.report:
        run(args)
    report(args.output)


def stored_results(path):
    """The "results" of the JSON file at `path` (`update_json`), or {} with a message
    when there is none yet: every `report`'s input."""
    path = pathlib.Path(path)
    if not path.exists():
        print(f"No results in {path}.")
        return {}
    return json.loads(path.read_text())["results"]


def markdown_table(headers, rows):
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def percent(accuracy):
    """'90.89' for 0.9089; '-' for None."""
    return "-" if accuracy is None else f"{100 * accuracy:.2f}"


def save_json(contents, path):
    """Writes `contents` and this run's command line, date and machine to `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**run_header(), **contents}, indent=1, default=_to_builtin) + "\n")


def apply_smoke(parser, args, smoke, keep=()):
    """Sets each `--smoke` value of `smoke` on `args` where the user left the default
    (or None), except the names in `keep`."""
    for name, value in smoke.items():
        if name not in keep and getattr(args, name) in (None, parser.get_default(name)):
            setattr(args, name, value)
