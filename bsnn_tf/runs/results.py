"""What a run keeps: each method's `MethodRun`, its results.json entry, the accuracy table,
and the run directory, written whole (`rundir.replace_directory`)."""

import dataclasses
import json
import os

import keras

import bsnn_tf
from bsnn_tf import metrics
from bsnn_tf.runs import plots, rundir
from bsnn_tf.runs.timesteps import TOLERANCE, has_first_readout

VERIFY_IMAGES = 32


@dataclasses.dataclass
class MethodRun:
    """One method's SNN and what simulating and verifying it gave."""

    snn: bsnn_tf.SpikingNetwork
    result: bsnn_tf.SimulationResult  # the spike statistics, on `result.outputs`' images
    verification: bsnn_tf.Verification
    accuracy: dict  # {T: accuracy on every evaluated image}
    converged_at: int


def run_results(config, state, calibration_images, calibration, ann_accuracy, checkpoints,
                runs, command, seconds):
    """results.json of a run: what was run on which images (`state`, the one pass's
    `partial.PassState`), and each method's results."""
    results = {
        "model": config.model,
        "dataset": config.dataset,
        "test_images": state.images,
        "calibration_images": calibration_images,
        "calibration": calibration,
        "ann_accuracy": ann_accuracy,
        "timesteps": checkpoints,
        "tolerance": TOLERANCE,
        "methods": {method: method_results(r) for method, r in runs.items()},
        "backend": keras.backend.backend(),
        "seconds": round(seconds, 1),
        "flags": dataclasses.asdict(config),
        "command": command,
    }
    if config.skip_unreadable:
        results["unreadable_images"] = {"count": len(state.unreadable), "files": state.unreadable}
    return results


def accuracy_figure(config, runs, ann_accuracy, images):
    """Accuracy against T, per method, with the ANN's as a line."""
    curves = {method: {t: a for t, a in run.accuracy.items() if a is not None}
              for method, run in runs.items()}
    return plots.accuracy_figure(
        curves, ann_accuracy, f"{config.model} on {images} {config.dataset} test images")


def accuracy_table(results):
    """Accuracy per T (rows) and method (columns), then T* per method, as text, from a
    run's results.json (README's demo table is this, from benchmarks/results/demo.json)."""
    methods = results["methods"]
    rows = [f"Top-1 accuracy (ANN {results['ann_accuracy']:.2%})",
            f"{'T':>8}" + "".join(f"{m:>10}" for m in methods)]
    for i, t in enumerate(results["timesteps"]):
        rows.append(f"{t:>8}" + "".join(_percent(run["accuracy"][i]) for run in methods.values()))
    rows.append(f"{'T*':>8}" + "".join(f"{str(run['converged_at']):>10}"
                                        for run in methods.values()))
    rows.append(f"T*: the smallest T from which accuracy stays within "
                f"{100 * results['tolerance']:g} percentage points of the ANN's (None: never); "
                "-: before the first readout.")
    statistics = {run["statistics"]["images"] for run in methods.values()}
    rows.append(f"Accuracy on every evaluated image (logits only); spike statistics on the "
                f"first {', '.join(map(str, sorted(statistics)))} of them.")
    return "\n".join(rows)


def _percent(value):
    return f"{'-':>10}" if value is None else f"{value:>10.2%}"


def method_results(method_run):
    """The results.json entry of one method."""
    snn, result, verification = method_run.snn, method_run.result, method_run.verification
    layer_macs, layer_operations = metrics.ann_macs(snn), metrics.synaptic_operations(snn, result)
    macs, operations = sum(layer_macs.values()), sum(layer_operations.values())
    estimate = metrics.energy(snn, result)
    return {
        "accuracy": list(method_run.accuracy.values()),
        "converged_at": method_run.converged_at,
        "depth": snn.depth,
        "first_readout": snn.first_readout if has_first_readout(snn) else None,
        "finetuning": getattr(snn, "calibration_record", None),
        "latency_search": snn.latency_search,  # convert(phases="auto")'s, else None
        "mode": snn.mode,
        "statistics": {"images": len(next(iter(result.spike_counts.values()))),
                       "timesteps": result.timesteps,
                       "note": "firing rates, SIN and synaptic operations are from these "
                               "images; accuracy is from every evaluated image",
                       "count_window": result.count_window,
                       "count_window_note": metrics.count_window_note(result)},
        "firing_rates": result.firing_rates(),
        "sin_rates": result.sin_rates(),
        "synaptic_operations": operations,
        "ann_macs": macs,
        "synops_per_mac": operations / max(macs, 1),
        "synaptic_operations_per_layer": layer_operations,
        "ann_macs_per_layer": layer_macs,
        "energy": {"snn_pj": estimate["snn_pj"], "ann_pj": estimate["ann_pj"],
                   "snn_per_ann": estimate["snn_per_ann"],
                   "real_input_macs": sum(metrics.real_input_macs(snn).values()),
                   "pj_per_ac": estimate["pj_per_ac"], "pj_per_mac": estimate["pj_per_mac"],
                   "source": estimate["source"],
                   "note": "per image: SNN = synaptic operations x pJ per AC (the synapses "
                           "on a real-valued input: their MACs x pJ per MAC); ANN = MACs x "
                           "pJ per MAC"},
        "verification": {
            "images": VERIFY_IMAGES,
            "timesteps": verification.timesteps,
            "output_error": verification.output_error,
            "agreement": verification.agreement,
            "layer_max_errors": {e.layer: e.max_error for e in verification.layers},
        },
    }


def write_run(output_dir, results, runs, figure, overwrite=False):
    """Writes the run's files into a staging directory beside `output_dir`, then swaps it in.

    See `replace_directory`: an interruption leaves `output_dir` holding the
    earlier run or this one, whole.
    """
    rundir.replace_directory(
        output_dir, lambda staging: _write_outputs(staging, results, runs, figure), overwrite)


def _write_outputs(directory, results, runs, figure):
    """Every output file of a run (`rundir.RUN_OUTPUTS`), written into `directory`."""
    for method, method_run in runs.items():
        method_run.snn.save(os.path.join(directory, f"snn_{method}.keras"))
        metrics.write_tensorboard(
            os.path.join(directory, "tensorboard", method), method_run.snn, method_run.result,
            method_run.verification,
            accuracy={t: a for t, a in method_run.accuracy.items() if a is not None},
            step=method_run.result.timesteps,
        )
    figure.savefig(os.path.join(directory, "accuracy_vs_timesteps.png"), dpi=120)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
