"""Time-step study for BSNN on the third-party checkpoints: which settings give the smallest T*.

Every combination of the listed phases K, initial membranes, percentiles,
channel-wise flags and readout delays is converted and simulated once in
period mode, with the accuracy read at every multiple of K up to
--max_timesteps. For each it records T* on that grid (the smallest T from
which accuracy stays within 0.1 pp of the ANN), the first readout time
(readout start + 1) * K, with readout start = D + readout_delay, and the
conversion and simulation times.

Results are merged into benchmarks/results/timestep_study.json (one entry per
model and setting, each with its own command line, date and image count), so
sweeps can run as separate commands. Then the script prints the study table of
everything in the file, ranks the settings run on both models by the geometric
mean of their two T* (scale-free: neither model dominates), and redraws
docs/timestep_study_<model>.png.

Usage (from the repository root):
    # the main sweep: K x initial membrane, 99.99th percentile, layer-wise
    python benchmarks/timestep_study.py --models lenet5 --phases 2 3 4 5 6 8 \
        --initial_membrane 0 0.5
    # one setting changed at a time
    python benchmarks/timestep_study.py --models resnet20 --limit 500 --phases 4 \
        --percentiles 99.9 100
    python benchmarks/timestep_study.py --report    # tables and plots only
"""

import argparse
import itertools
import json
import time

import numpy as np

import common

import bsnn_tf

OUTPUT = common.RESULTS_DIR / "timestep_study.json"
MAX_TIMESTEPS = {"resnet20": 256, "lenet5": 128, "resnet20_ours": 256}
FULL_SIZE = {"resnet20": 1900, "lenet5": 10000, "resnet20_ours": 1900}
BATCH_SIZE = {"resnet20": 128, "lenet5": 1000, "resnet20_ours": 128}


def setting_key(model, images, phases, initial_membrane, percentile, channelwise, readout_delay):
    """'resnet20 n=1900 K=4 m0=0.5 p=99.99 layer d=0': the JSON key of one run."""
    scope = "channel" if channelwise else "layer"
    return (f"{model} n={images} K={phases} m0={initial_membrane:g} p={percentile:g} {scope} "
            f"d={readout_delay}")


def run_setting(task, ann_accuracy, phases, initial_membrane, percentile, channelwise,
                readout_delay, max_timesteps, xla):
    """Converts and simulates one setting; the entry stored in the JSON."""
    start = time.perf_counter()
    snn = bsnn_tf.convert(task.ann, task.calibration, method="bsnn", phases=phases,
                          percentile=percentile, channelwise=channelwise,
                          initial_membrane=initial_membrane, readout_delay=readout_delay,
                          verbose=0, calibration="percentile")
    convert_seconds = time.perf_counter() - start
    grid = range(phases, max_timesteps + 1, phases)
    accuracies, simulate_seconds = common.simulate_accuracies(
        snn, task, grid, batch_size=BATCH_SIZE[task.name], jit_compile=True if xla else "auto")
    return {
        "model": task.name, "phases": phases, "initial_membrane": initial_membrane,
        "percentile": percentile, "channelwise": channelwise, "readout_delay": readout_delay,
        "depth": snn.depth, "first_readout": (snn.readout_start + 1) * phases,
        "images": len(task.y_test), "ann_accuracy": ann_accuracy,
        "accuracy": accuracies, "t_star": common.t_star(accuracies, ann_accuracy),
        "convert_seconds": round(convert_seconds, 1),
        "simulate_seconds": round(simulate_seconds, 1),
        **common.run_header(),
    }


def run(args):
    for model in args.models:
        task = common.load_task(model, args.limit)
        ann_accuracy = common.ann_accuracy(task)
        common.check_ann_accuracy(task, ann_accuracy, FULL_SIZE[model])
        print(f"{model}: ANN {common.percent(ann_accuracy)}% on {len(task.y_test)} images",
              flush=True)
        max_timesteps = args.max_timesteps or MAX_TIMESTEPS[model]
        for setting in itertools.product(args.phases, args.initial_membrane, args.percentiles,
                                         args.channelwise, args.readout_delays):
            entry = run_setting(task, ann_accuracy, *setting, max_timesteps, args.xla)
            key = setting_key(model, len(task.y_test), *setting)
            common.update_json(args.output, key, entry)
            print(f"  {key}: T*={entry['t_star']} first readout {entry['first_readout']} "
                  f"({entry['simulate_seconds']:.0f} s)", flush=True)


def study_table(results):
    """Markdown: one row per run, accuracy at the first readout, T=128, T=256, and T*."""
    rows = []
    for key, entry in sorted(results.items(), key=lambda item: _sort_key(item[1])):
        accuracy = {int(t): a for t, a in entry["accuracy"].items()}
        rows.append([
            entry["model"], entry["images"], entry["phases"], f"{entry['initial_membrane']:g}",
            f"{entry['percentile']:g}", "channel" if entry["channelwise"] else "layer",
            entry["readout_delay"], entry["first_readout"],
            common.percent(accuracy.get(entry["first_readout"])),
            common.percent(_at_or_before(accuracy, 128, entry["phases"])),
            common.percent(_at_or_before(accuracy, 256, entry["phases"])),
            entry["t_star"] or f"none <= {max(accuracy)}",
        ])
    headers = ["model", "images", "K", "m0", "pct", "norm", "delay", "first readout",
               "acc. there", "T=128", "T=256", "T*"]
    return common.markdown_table(headers, rows)


def ranking(results):
    """Settings run on every model, best first by the geometric mean of their T*.

    Per model, only the runs on its most used image count are compared, so
    every T* of a model comes from the same images.
    """
    images = _compared_images(results)
    models = sorted(images)
    by_setting = {}
    for entry in results.values():
        if entry["images"] != images[entry["model"]]:
            continue
        setting = (entry["phases"], entry["initial_membrane"], entry["percentile"],
                   entry["channelwise"], entry["readout_delay"])
        by_setting.setdefault(setting, {})[entry["model"]] = entry["t_star"]
    complete = {s: t for s, t in by_setting.items()
                if set(t) == set(models) and None not in t.values()}
    score = lambda s: float(np.exp(np.mean(np.log([complete[s][m] for m in models]))))
    rows = [[*_describe(s), *[complete[s][m] for m in models], f"{score(s):.1f}"]
            for s in sorted(complete, key=score)]
    headers = ["K", "m0", "pct", "norm", "delay",
               *[f"T* {m} ({images[m]} images)" for m in models], "geo. mean"]
    return common.markdown_table(headers, rows)


def plot(results, name):
    """docs/<name>_<model>.png (name: the JSON file's): accuracy vs T per K and initial
    membrane, 99.99th percentile, layer-wise, no readout delay, on the compared images."""
    for model, images in _compared_images(results).items():
        curves, ann_accuracy = {}, None
        for entry in results.values():
            if (entry["model"] != model or entry["images"] != images
                    or entry["percentile"] != 99.99 or entry["channelwise"]
                    or entry["readout_delay"]):
                continue
            label = f"K={entry['phases']}, m0={entry['initial_membrane']:g}"
            curves[label] = {int(t): a for t, a in entry["accuracy"].items()
                             if int(t) >= entry["first_readout"]}
            ann_accuracy = entry["ann_accuracy"]
        title = f"BSNN time-step study: {common.TITLES[model]}, {images} images"
        common.plot_accuracy_vs_t(dict(sorted(curves.items())), ann_accuracy, title,
                                  common.DOCS_DIR / f"{name}_{model}.png",
                                  log_scale=False)


def _compared_images(results):
    """{model: the image count most of its runs used} (ties: the larger count)."""
    counts = {}
    for entry in results.values():
        key = (entry["model"], entry["images"])
        counts[key] = counts.get(key, 0) + 1
    best = {}
    for (model, images), count in sorted(counts.items(), key=lambda item: (item[1], item[0][1])):
        best[model] = images
    return best


def _at_or_before(accuracy, timesteps, phases):
    """Accuracy at the last multiple of K <= `timesteps` (126 for K=6, T=128); None past the grid."""
    point = timesteps // phases * phases
    return accuracy.get(point)


def _describe(setting):
    phases, initial_membrane, percentile, channelwise, readout_delay = setting
    return [phases, f"{initial_membrane:g}", f"{percentile:g}",
            "channel" if channelwise else "layer", readout_delay]


def _sort_key(entry):
    return (entry["model"], -entry["images"], entry["percentile"] != 99.99, entry["channelwise"],
            entry["readout_delay"], entry["initial_membrane"], entry["phases"])


def report(output):
    results = json.loads(output.read_text())["results"]
    print(study_table(results))
    print()
    print(ranking(results))
    plot(results, output.stem)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "lenet5"],
                        choices=["resnet20", "lenet5", "resnet20_ours"])
    parser.add_argument("--limit", type=int, help="first N test images (default: all)")
    parser.add_argument("--phases", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    parser.add_argument("--initial_membrane", type=float, nargs="+", default=[0.5])
    parser.add_argument("--percentiles", type=float, nargs="+", default=[99.99])
    parser.add_argument("--channelwise", type=_boolean, nargs="+", default=[False])
    parser.add_argument("--readout_delays", type=int, nargs="+", default=[0])
    parser.add_argument("--max_timesteps", type=int,
                        help="grid end (default: 256 for resnet20, 128 for lenet5)")
    parser.add_argument("--xla", action="store_true",
                        help="XLA-compile the simulation (faster for these small nets on a CPU)")
    common.add_output_arguments(parser, OUTPUT)  # plots are named after --output
    common.run_or_report(parser.parse_args(), run, report)


def _boolean(text):
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


if __name__ == "__main__":
    main()
