"""Calibration study: accuracy at the first readout and T* per calibration mode and K.

For each model, K and calibration mode (`bsnn_tf.convert(calibration=...)`),
the BSNN is converted (timed) and simulated once in period mode, with the
accuracy read at every period from the first readout (D + 1) K to
`--periods` periods later. Each entry records the accuracy at the first
readout, T* on that grid (the smallest T from which accuracy stays within
0.1 pp of the ANN up to the grid's end), the synaptic operations per image
when simulating T* steps (on the first 100 test images), and the calibration
time. `--rate` adds the rate baseline with and without calibration at
T = 32, 64, 128, 256 (calibrated at each target T).

Results are merged into benchmarks/results/calibration_study.json, one entry
per setting with its command line, date and machine; `--report` prints the
tables and draws docs/calibration_study_<model>.png.

Usage (from the repository root):
    python benchmarks/calibration_study.py --models lenet5 mnist_cnn --phases 2 3 4
    python benchmarks/calibration_study.py --models resnet20 --limit 500 --phases 3 4
    python benchmarks/calibration_study.py --models lenet5 --rate --limit 1000
    python benchmarks/calibration_study.py --report
"""

import argparse
import itertools
import json
import time

import common

import bsnn_tf
from bsnn_tf import metrics
from bsnn_tf.conversion.calibration import MODES

OUTPUT = common.RESULTS_DIR / "calibration_study.json"
RATE_TIMESTEPS = (32, 64, 128, 256)
BATCH_SIZE = {"resnet20": 128, "lenet5": 1000, "mnist_cnn": 1000, "resnet20_ours": 128}
SYNOPS_IMAGES = 100


def run_bsnn(task, ann_accuracy, phases, mode, periods):
    start = time.perf_counter()
    snn = bsnn_tf.convert(task.ann, task.calibration, phases=phases, calibration=mode,
                          verbose=0)
    seconds = time.perf_counter() - start
    first = (snn.readout_start + 1) * phases
    grid = range(first, first + periods * phases + 1, phases)
    accuracy, simulate_seconds = common.simulate_accuracies(
        snn, task, grid, batch_size=BATCH_SIZE[task.name])
    t_star = common.t_star(accuracy, ann_accuracy)
    return {
        "model": task.name, "method": "bsnn", "phases": phases, "calibration": mode,
        "images": len(task.y_test), "calibration_images": len(task.calibration),
        "ann_accuracy": ann_accuracy, "depth": snn.depth, "first_readout": first,
        "accuracy": accuracy, "t_star": t_star,
        "synops_at_t_star": _synops(snn, task, t_star) if t_star else None,
        "calibration_seconds": round(seconds, 1), "simulate_seconds": round(simulate_seconds, 1),
        **common.run_header(),
    }


def run_rate(task, ann_accuracy, mode):
    """Rate baseline: one conversion per target T ("percentile" has no target: one run)."""
    accuracy, seconds = {}, 0.0
    targets = RATE_TIMESTEPS if mode != "percentile" else RATE_TIMESTEPS[-1:]
    for target in targets:
        start = time.perf_counter()
        snn = bsnn_tf.convert(task.ann, task.calibration, method="rate", calibration=mode,
                              timesteps=target, verbose=0)
        seconds += time.perf_counter() - start
        wanted = RATE_TIMESTEPS if mode == "percentile" else [target]
        measured, _ = common.simulate_accuracies(snn, task, wanted, batch_size=BATCH_SIZE[task.name])
        accuracy.update(measured)
    return {
        "model": task.name, "method": "rate", "phases": None, "calibration": mode,
        "images": len(task.y_test), "calibration_images": len(task.calibration),
        "ann_accuracy": ann_accuracy, "accuracy": accuracy,
        "t_star": common.t_star(accuracy, ann_accuracy),
        "calibration_seconds": round(seconds, 1), **common.run_header(),
    }


def _synops(snn, task, timesteps):
    """Synaptic operations per image over `timesteps` steps, on the first test images."""
    result = bsnn_tf.simulate(snn, task.x_test[:SYNOPS_IMAGES], timesteps=timesteps, verbose=0)
    return float(sum(metrics.synaptic_operations(snn, result).values()))


def run(args):
    for model in args.models:
        task = common.load_task(model, args.limit, calibration_size=args.calibration_size)
        ann_accuracy = common.ann_accuracy(task)
        print(f"{model}: ANN {common.percent(ann_accuracy)}% on {len(task.y_test)} images, "
              f"{len(task.calibration)} calibration images", flush=True)
        if args.rate:
            for mode in args.modes:
                entry = run_rate(task, ann_accuracy, mode)
                _store(args, f"{model} n={len(task.y_test)} rate {mode}", entry)
            continue
        for phases, mode in itertools.product(args.phases, args.modes):
            entry = run_bsnn(task, ann_accuracy, phases, mode, args.periods)
            _store(args, f"{model} n={len(task.y_test)} K={phases} {mode}", entry)


def _store(args, key, entry):
    common.update_json(args.output, key, entry)
    accuracy = {int(t): a for t, a in entry["accuracy"].items()}
    first = entry.get("first_readout") or min(accuracy)
    print(f"  {key}: first readout {common.percent(accuracy[first])}% at T={first}, "
          f"T*={entry['t_star']} (calibration {entry['calibration_seconds']:.0f} s)", flush=True)


def bsnn_table(results):
    rows = []
    for entry in sorted((e for e in results.values() if e["method"] == "bsnn"), key=_order):
        accuracy = {int(t): a for t, a in entry["accuracy"].items()}
        first = entry["first_readout"]
        rows.append([
            entry["model"], entry["images"], entry["phases"], entry["calibration"],
            common.percent(entry["ann_accuracy"]), first, common.percent(accuracy[first]),
            f"{100 * (accuracy[first] - entry['ann_accuracy']):+.2f}",
            common.percent(accuracy.get(first + entry["phases"])),
            entry["t_star"] or f"none <= {max(accuracy)}",
            f"{entry['synops_at_t_star'] / 1e6:.2f}" if entry["synops_at_t_star"] else "-",
            entry["calibration_seconds"],
        ])
    headers = ["model", "images", "K", "calibration", "ANN", "first readout", "accuracy there",
               "vs ANN (pp)", "next period", "T*", "MSynOps/image at T*", "calibration (s)"]
    return common.markdown_table(headers, rows)


def rate_table(results):
    rows = []
    for entry in sorted((e for e in results.values() if e["method"] == "rate"), key=_order):
        accuracy = {int(t): a for t, a in entry["accuracy"].items()}
        rows.append([entry["model"], entry["images"], entry["calibration"],
                     common.percent(entry["ann_accuracy"]),
                     *[common.percent(accuracy.get(t)) for t in RATE_TIMESTEPS],
                     entry["calibration_seconds"]])
    headers = ["model", "images", "calibration", "ANN",
               *[f"T={t}" for t in RATE_TIMESTEPS], "calibration (s)"]
    return common.markdown_table(headers, rows)


def plot(results, name):
    """docs/<name>_<model>.png: accuracy vs T per K and mode (BSNN) and the rate rows."""
    for model in sorted({e["model"] for e in results.values()}):
        entries = [e for e in results.values() if e["model"] == model]
        images = max(e["images"] for e in entries if e["method"] == "bsnn")
        curves, ann_accuracy = {}, None
        for entry in sorted(entries, key=_order):
            if entry["method"] != "bsnn" or entry["images"] != images:
                continue
            curves[f"K={entry['phases']}, {entry['calibration']}"] = {
                int(t): a for t, a in entry["accuracy"].items()}
            ann_accuracy = entry["ann_accuracy"]
        title = f"BSNN calibration modes: {common.TITLES[model]}, {images} images"
        common.plot_accuracy_vs_t(curves, ann_accuracy, title,
                                  common.DOCS_DIR / f"{name}_{model}.png", log_scale=False)


def _order(entry):
    return (entry["model"], -entry["images"], entry["phases"] or 0,
            MODES.index(entry["calibration"]))


def report(output):
    results = json.loads(output.read_text())["results"]
    print(bsnn_table(results))
    print()
    print(rate_table(results))
    plot(results, output.stem)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "lenet5", "mnist_cnn"],
                        choices=["resnet20", "lenet5", "mnist_cnn", "resnet20_ours"])
    parser.add_argument("--limit", type=int, help="first N test images (default: all)")
    parser.add_argument("--calibration_size", type=int, default=1000,
                        help="calibration images drawn from the training split")
    parser.add_argument("--phases", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--periods", type=int, default=8,
                        help="periods read after the first readout (the grid's end)")
    parser.add_argument("--rate", action="store_true",
                        help="the rate baseline at T = 32, 64, 128, 256 instead of BSNN")
    common.add_output_arguments(parser, OUTPUT)  # --report also draws the plots
    common.run_or_report(parser.parse_args(), run, report)


if __name__ == "__main__":
    main()
