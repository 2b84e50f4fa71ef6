"""Synaptic operations and energy per image on the run's schedule and over the whole run.

Converts a task's ANN (default: akamaster's ResNet-20, CIFAR-10, K = 4, percentile
calibration on --calibration training images), simulates --limit test images to T
(default: the first readout, (D + 1) K) three times: logits only, counting spikes on
the schedule the logits-only run simulates (`count_window="schedule"`) and over all T
(`count_window="whole"`), and records synaptic operations per ANN MAC, the energy
estimate (`bsnn_tf.metrics.energy`) and each run's seconds (compilation excluded).
Writes benchmarks/results/energy.json.

    python benchmarks/energy.py                       # about 3 min on 2 cores
    python benchmarks/energy.py --task resnet20_ours --phases 3 --limit 64
"""

import argparse
import json
import time

import common

import bsnn_tf  # noqa: E402  (common puts the repository first on sys.path)
from bsnn_tf import metrics  # noqa: E402


def measure(snn, task, timesteps, batch_size):
    """{run: (SimulationResult, seconds)} of the logits-only and the two counting runs."""
    runs = {"logits_only": dict(count_spikes=False), "schedule": dict(count_window="schedule"),
            "whole": dict(count_window="whole")}
    measured = {}
    for label, kwargs in runs.items():
        simulate = lambda x: bsnn_tf.simulate(snn, x, timesteps=timesteps, verbose=0,
                                              batch_size=batch_size, **kwargs)
        simulate(task.x_test[:batch_size])  # compiles
        start = time.perf_counter()
        measured[label] = (simulate(task.x_test), time.perf_counter() - start)
    return measured


def entry(snn, task, timesteps, measured):
    macs = sum(metrics.ann_macs(snn).values())
    row = {"task": task.name, "phases": snn.phases, "depth": snn.depth, "timesteps": timesteps,
           "images": len(task.x_test), "ann_macs": macs, "device": common.device_label(),
           "seconds": {label: round(s, 2) for label, (_, s) in measured.items()},
           "accuracy": measured["logits_only"][0].accuracy(task.y_test),
           "energy_source": metrics.ENERGY_SOURCE, **common.run_header()}
    for window in ("schedule", "whole"):
        result = measured[window][0]
        operations = sum(metrics.synaptic_operations(snn, result).values())
        estimate = metrics.energy(snn, result)
        row[window] = {"synaptic_operations": operations, "synops_per_mac": operations / macs,
                       "snn_pj": estimate["snn_pj"], "ann_pj": estimate["ann_pj"],
                       "snn_per_ann": estimate["snn_per_ann"]}
        metrics.summary(snn, result)
    return row


def report(path):
    results = json.loads(path.read_text())["results"] if path.exists() else {}
    rows = [[r["task"], r["phases"], r["timesteps"], r["images"],
             f"{r['schedule']['synops_per_mac']:.2f}", f"{r['whole']['synops_per_mac']:.2f}",
             f"{r['schedule']['snn_per_ann']:.3f}", f"{r['whole']['snn_per_ann']:.3f}",
             " / ".join(f"{r['seconds'][k]:.1f}" for k in ("logits_only", "schedule", "whole")),
             r["device"]] for r in results.values()]
    print(common.markdown_table(
        ["net", "K", "T", "images", "synops/MAC schedule", "synops/MAC whole",
         "energy SNN/ANN schedule", "energy SNN/ANN whole",
         "seconds: logits / schedule / whole", "device"], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="resnet20", choices=sorted(common.TITLES))
    parser.add_argument("--phases", type=int, default=4)
    parser.add_argument("--timesteps", type=int, default=None,
                        help="T (default: the first readout, (D + 1) K)")
    parser.add_argument("--limit", type=int, default=32, help="test images")
    parser.add_argument("--calibration", type=int, default=100, help="calibration images")
    parser.add_argument("--batch_size", type=int, default=32)
    common.add_output_arguments(parser, common.RESULTS_DIR / "energy.json")
    args = parser.parse_args()

    def run(args):
        task = common.load_task(args.task, limit=args.limit, calibration_size=args.calibration)
        snn = bsnn_tf.convert(task.ann, task.calibration, phases=args.phases, verbose=0)
        timesteps = args.timesteps or snn.first_readout
        row = entry(snn, task, timesteps, measure(snn, task, timesteps, args.batch_size))
        common.update_json(args.output, f"{args.task}_K{args.phases}_T{timesteps}_"
                                        f"{row['device']}", row)

    common.run_or_report(args, run, report)


if __name__ == "__main__":
    main()
