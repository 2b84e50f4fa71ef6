"""Whether `phases="auto"` may hold out training images (issue 35): the SNN's loss
against the ANN on training images it did not calibrate on, against its loss on
test images of the same kind.

`convert.py --phases auto` holds its images out of the calibration split: the
training images, where there are any. A net fitted to them is surer of them, so
its SNN may follow it more closely there than on images it never saw, and the
search would choose too early a T. Per model and K: calibrate on `--calibration`
training images (percentile, as the CLI does); simulate `--images` other training
images and `--images` test images over the period grid, from the first readout to
`--periods` periods past it; at each T, the SNN's accuracy minus the ANN's (pp) on
each set. Reported: that difference averaged over the grid from the fourth period
on (where the searches place T*), on training and on test images, train minus
test, and one standard error of that gap at the last T (each set's paired
difference, sqrt(losses + gains) / images, combined).

Models: lenet5 (MNIST: both sets lossless), ours20 (our ResNet-20, trained here on
the JPEG copy's training images; JPEG test images), akamaster20 (trained on the
original CIFAR-10: both sets are JPEG copies of its images).

Usage (from the repository root):
    python benchmarks/held_out_source.py
    python benchmarks/held_out_source.py --smoke
    python benchmarks/held_out_source.py --report
"""

import argparse

import common
import finetune_study
import numpy as np

import bsnn_tf
from bsnn_tf import data

OUTPUT = common.RESULTS_DIR / "held_out_source.json"
PHASES = {"lenet5": (2, 3, 4), "ours20": (3, 4, 5), "akamaster20": (3, 4, 5)}


def images(name, count, calibration, data_dir):
    """(ann, calibration images, {"train": (x, y), "test": (x, y)}), drawn at random."""
    rng = np.random.default_rng(common.SEED)
    dataset = "mnist" if name == "lenet5" else "cifar10"
    train = data.find(dataset, "train", data_dir)
    test = data.find(dataset, "test", data_dir)
    ann, preprocess = finetune_study.model(name)
    rows = rng.choice(len(train), calibration + count, replace=False)
    fit, held = rows[:calibration], rows[calibration:]
    unseen = rng.choice(len(test), count, replace=False)

    def pick(split, at):
        at = np.sort(at)
        return preprocess(split.pixels(at)), split.labels[at]

    return ann, pick(train, fit)[0], {"train": pick(train, held), "test": pick(test, unseen)}


def curve(ann, snn, x, y, grid):
    """Per grid T, the SNN's accuracy minus the ANN's (pp), and (losses, gains) at the last."""
    ann_right = np.argmax(ann.predict(x, batch_size=256, verbose=0), -1) == y
    result = bsnn_tf.simulate(snn, x, timesteps=grid[-1], checkpoints=grid,
                              count_spikes=False, verbose=0)
    right = {t: np.argmax(result.outputs_at[t], -1) == y for t in grid}
    last = right[grid[-1]]
    return ([round(100 * float(np.mean(right[t]) - np.mean(ann_right)), 3) for t in grid],
            (int(np.sum(ann_right & ~last)), int(np.sum(last & ~ann_right))),
            float(np.mean(ann_right)))


def study(name, args):
    ann, x_fit, sets = images(name, args.images, args.calibration, args.data_dir)
    rows = {}
    for phases in args.phases or PHASES[name]:
        snn = bsnn_tf.convert(ann, x_fit, phases=phases, verbose=0)
        grid = list(range(snn.first_readout, snn.first_readout + (args.periods + 1) * phases,
                          phases))
        entry = {"grid": grid}
        for label, (x, y) in sets.items():
            pp, (losses, gains), ann_accuracy = curve(ann, snn, x, y, grid)
            entry[label] = {"pp": pp, "mean_pp_from_period_4": round(float(np.mean(pp[4:])), 3),
                            "losses_gains_last": [losses, gains], "ann_accuracy": ann_accuracy,
                            "standard_error_pp_last": round(
                                100 * np.sqrt(losses + gains) / len(y), 3)}
        entry["gap_pp"] = round(entry["train"]["mean_pp_from_period_4"]
                                - entry["test"]["mean_pp_from_period_4"], 3)
        entry["gap_standard_error_pp"] = round(float(np.hypot(
            entry["train"]["standard_error_pp_last"], entry["test"]["standard_error_pp_last"])), 3)
        rows[str(phases)] = entry
        print(f"{name} K={phases}: train {entry['train']['mean_pp_from_period_4']:+.2f} pp, "
              f"test {entry['test']['mean_pp_from_period_4']:+.2f} pp", flush=True)
    return {"model": name, "images": args.images, "calibration_images": args.calibration,
            "periods": args.periods, "phases": rows, **common.run_header()}


def report(path):
    rows = []
    for key, entry in common.stored_results(path).items():
        for phases, r in entry["phases"].items():
            rows.append([key, phases, f"{r['train']['ann_accuracy']:.2%} / "
                         f"{r['test']['ann_accuracy']:.2%}",
                         f"{r['train']['mean_pp_from_period_4']:+.2f}",
                         f"{r['test']['mean_pp_from_period_4']:+.2f}",
                         f"{r['gap_pp']:+.2f} +- {r['gap_standard_error_pp']:.2f}"])
    print(common.markdown_table(
        ["model", "K", "ANN train / test", "SNN - ANN, training images (pp)",
         "SNN - ANN, test images (pp)", "train - test"], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PHASES), choices=list(PHASES))
    parser.add_argument("--phases", type=int, nargs="+",
                        help="K (default per model: " + "; ".join(
                            f"{m} {' '.join(map(str, k))}" for m, k in PHASES.items()) + ")")
    parser.add_argument("--images", type=int, default=3000, help="per set")
    parser.add_argument("--calibration", type=int, default=500)
    parser.add_argument("--periods", type=int, default=12)
    parser.add_argument("--data_dir", default=common.DATA_DIR)
    parser.add_argument("--smoke", action="store_true", help="lenet5, K 3, 100 images")
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if args.smoke:
        common.apply_smoke(parser, args, dict(models=["lenet5"], phases=[3], images=100,
                                              calibration=50, periods=5))

    def run(args):
        for name in args.models:
            key = (f"{common.device_label()}, {name}, {args.images} images"
                   + (" (smoke)" if args.smoke else ""))
            common.update_json(args.output, key, study(name, args))

    common.run_or_report(args, run, report)


if __name__ == "__main__":
    main()
