"""The ResNet-20 trained here (issue 13): ANN and BSNN accuracy per T, and the record beside it.

Converts `pretrained/cifar10_resnet20.keras` with the library defaults
(K = 4, percentile calibration on 500 training images drawn as convert.py
draws them) and simulates every period up to --timesteps on the 1,900
lossless test images and on the first --jpeg_limit images of the JPEG test
split. Writes `benchmarks/results/trained_resnet20.json`, and the "bsnn" and
"lossless_accuracy" entries of `pretrained/cifar10_resnet20.json`, which
tests/test_pretrained.py re-checks on a slice.

    python benchmarks/trained_resnet20.py                  # about 15 min on 2 cores
    python benchmarks/trained_resnet20.py --record_only    # the record only, 1-2 min
    python benchmarks/trained_resnet20.py --jpeg_limit 10000 --timesteps 256
"""

import argparse
import json
import time

import numpy as np

import common

import bsnn_tf  # noqa: E402  (common puts the repository first on sys.path)
from bsnn_tf import data  # noqa: E402
from bsnn_tf.runs.rundir import write_atomically  # noqa: E402

RECORD = common.OUR_RESNET20.with_suffix(".json")
TEST_DATA = common.ROOT / "tests" / "data" / "cifar10_lossless_500.npz"
# The slice tests/test_pretrained.py re-checks: the first 100 images of the lossless file in
# tests/data, calibrated on its images 100-499.
SLICE_IMAGES, SLICE_CALIBRATION = 100, slice(100, 500)


def accuracies(snn, x, y, timesteps, batch_size=128):
    """({T: accuracy} for T = K, 2K, ..., timesteps; seconds)."""
    grid = list(range(snn.phases, timesteps + 1, snn.phases))
    start = time.perf_counter()
    result = bsnn_tf.simulate(snn, x, timesteps=timesteps, checkpoints=grid,
                              batch_size=batch_size, count_spikes=False, verbose=0)
    return {t: result.accuracy(y, t) for t in grid}, round(time.perf_counter() - start, 1)


def ann_accuracy(ann, x, y):
    return float(np.mean(ann.predict(x, batch_size=500, verbose=0).argmax(1) == y))


def split_row(snn, ann, x, y, timesteps):
    ann_acc = ann_accuracy(ann, x, y)
    accuracy, seconds = accuracies(snn, x, y, timesteps)
    return {"images": len(y), "ann_accuracy": ann_acc, "accuracy": accuracy,
            "t_star": common.t_star(accuracy, ann_acc), "simulate_seconds": seconds}


def slice_check(ann, timesteps):
    """The values tests/test_pretrained.py recomputes (data committed in tests/data)."""
    with np.load(TEST_DATA) as stored:
        x = data.preprocess("cifar10", stored["x_test"])
        y = stored["y_test"]
    snn = bsnn_tf.convert(ann, x[SLICE_CALIBRATION], verbose=0)
    x, y = x[:SLICE_IMAGES], y[:SLICE_IMAGES]
    accuracy = bsnn_tf.evaluate(snn, x, y, timesteps=[timesteps], verbose=0)[timesteps]
    return {"images": SLICE_IMAGES, "calibration": "tests/data images 100-499",
            "ann_accuracy": ann_accuracy(ann, x, y), "timesteps": timesteps,
            "bsnn_accuracy": float(accuracy)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=128)
    parser.add_argument("--jpeg_limit", type=int, default=1000,
                        help="first N images of the JPEG test split for the BSNN")
    parser.add_argument("--record_only", action="store_true",
                        help="only the ANN accuracies and the slice of the record")
    common.add_output_arguments(parser, common.RESULTS_DIR / "trained_resnet20.json")
    args = parser.parse_args()
    record = json.loads(RECORD.read_text())
    task = common.load_task("resnet20_ours")
    ann = task.ann
    snn = bsnn_tf.convert(ann, data.calibration_batch("cifar10", 500, common.DATA_DIR), verbose=0)
    first_readout = (snn.readout_start + 1) * snn.phases
    print(f"K={snn.phases}, D={snn.depth}, first readout at T={first_readout}", flush=True)
    record["lossless_accuracy"] = ann_accuracy(ann, task.x_test, task.y_test)
    record["bsnn"] = {"phases": snn.phases, "first_readout": first_readout,
                      "slice": slice_check(ann, first_readout + 2 * snn.phases),
                      "command": "python benchmarks/trained_resnet20.py --record_only"}
    _write_record(record)
    print(f"record: {record['bsnn']['slice']}", flush=True)
    if args.record_only:
        return
    jpeg_x, jpeg_y = data.load("cifar10", "test", common.DATA_DIR)
    rows = {
        "lossless": split_row(snn, ann, task.x_test, task.y_test, args.timesteps),
        "jpeg": split_row(snn, ann, jpeg_x[:args.jpeg_limit], jpeg_y[:args.jpeg_limit],
                          args.timesteps),
    }
    rows["jpeg"]["ann_accuracy_all"] = ann_accuracy(ann, jpeg_x, jpeg_y)
    rows["jpeg"]["images_all"] = len(jpeg_y)
    entry = {"phases": snn.phases, "depth": snn.depth, "first_readout": first_readout,
             "calibration": "percentile, 500 training images (seed 0)", **rows,
             **common.run_header()}
    for name, row in rows.items():
        print(f"{name}: ANN {common.percent(row['ann_accuracy'])}% on {row['images']}; BSNN at "
              f"first readout {common.percent(row['accuracy'][first_readout])}%, "
              f"T* {row['t_star']} ({row['simulate_seconds']:.0f} s)", flush=True)
    common.update_json(args.output, "resnet20_ours", entry)


def _write_record(record):
    def write(path):
        with open(path, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")

    write_atomically(str(RECORD), write)


if __name__ == "__main__":
    main()
