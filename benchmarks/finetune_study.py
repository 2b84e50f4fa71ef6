"""Fine-tuning the first readout (calibration="finetune", issue 22), across models and K.

For each model and K: the ANN's accuracy; then for "percentile" (the default
post-training calibration) and "finetune": the accuracy at the first readout
T = (D + 1) K and at every period after it for `--periods` periods (one
logits-only simulation), T* (the first T from which accuracy stays within
0.1 pp of the ANN), the seconds the conversion took, and the synaptic
operations per image at T* (a second simulation that counts spikes, on
`--statistics_images` images).

Models (not all in this repository; see docs/RESULTS.md):
- akamaster20/32/44/56: akamaster/pytorch_resnet_cifar10's CIFAR-10 ResNets
  (option-A shortcuts): resnet20 from ../shared/data/weights (.npz), the others
  from their .th files in $BSNN_AKAMASTER_DIR (fetched from the repository);
- ours20: the ResNet-20 trained here (pretrained/cifar10_resnet20.keras);
- lenet5: SNN Toolbox's MNIST LeNet-5 (../shared/data/weights).
CIFAR models are tested on the 1,900 lossless test images and fine-tuned on
`--images` JPEG training images (seed 0), from the ANN's logits (and their
labels as well with --labels).

Usage (from the repository root, nothing else running):
    python benchmarks/finetune_study.py --models akamaster20 --phases 3 4
    python benchmarks/finetune_study.py --report
"""

import argparse
import dataclasses
import json
import os
import pathlib
import time

import common
import numpy as np

import bsnn_tf
from bsnn_tf import data, metrics, models, runs
from bsnn_tf.conversion import FineTuning
from bsnn_tf.conversion.finetune import STARTS
from bsnn_tf.models import thirdparty

OUTPUT = common.RESULTS_DIR / "finetune_study.json"
AKAMASTER_FILES = {32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
                   56: "resnet56-4bfd9763.th"}


def model(name):
    """(the ANN of model `name`, the preprocessing of its images' pixels)."""
    if name == "lenet5":
        return thirdparty.snntoolbox_lenet5(), lambda pixels: data.preprocess("mnist", pixels)
    if name == "ours20":
        return (models.load_keras(common.OUR_RESNET20),
                lambda pixels: data.preprocess("cifar10", pixels))
    depth = int(name.removeprefix("akamaster"))
    directory = pathlib.Path(os.environ.get("BSNN_AKAMASTER_DIR", "/tmp/akamaster"))
    ann = (thirdparty.akamaster_resnet20() if depth == 20
           else thirdparty.akamaster_resnet(depth, directory / AKAMASTER_FILES[depth]))
    return ann, thirdparty.cifar10_akamaster_preprocess


def load(name, images, data_dir):
    """(ann, x_test, y_test, x_train, y_train) of model `name`."""
    ann, preprocess = model(name)
    if name == "lenet5":
        x_test, y_test = data.load("mnist", "test", data_dir)
        x_train, y_train = data.load("mnist", "train", data_dir)
        rows = _rows(len(x_train), images)
        return ann, x_test, y_test, x_train[rows], y_train[rows]
    test = data.find("cifar10", "test_lossless", data_dir)
    train = data.find("cifar10", "train", data_dir)
    rows = _rows(len(train), images)
    return (ann, preprocess(test.pixels(range(len(test)))), test.labels,
            preprocess(train.pixels(rows)), train.labels[rows])


def _rows(population, count):
    return np.sort(np.random.default_rng(common.SEED).choice(population, count, replace=False))


def study(name, phases, args):
    ann, x_test, y_test, x_train, y_train = load(name, args.images, args.data_dir)
    x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    ann_logits = ann.predict(x_test, batch_size=256, verbose=0)
    ann_accuracy = float(np.mean(np.argmax(ann_logits, -1) == y_test))
    entry = {"model": name, "phases": phases, "ann_accuracy": ann_accuracy,
             "test_images": len(x_test), "finetune_images": len(x_train),
             "channelwise": args.channelwise, **common.run_header()}
    print(f"{name} K={phases}: ANN {ann_accuracy:.2%} on {len(x_test)} images", flush=True)
    for mode in ("percentile", "finetune"):
        start = time.time()
        kwargs = {}
        if mode == "finetune":
            settings = FineTuning(epochs=args.epochs, learning_rate=args.learning_rate,
                                  threshold_rate=args.threshold_rate, start=args.start,
                                  seed=args.seed,
                                  label_weight=args.label_weight,
                                  temperature=args.temperature, image_budget=args.image_budget)
            entry["finetuning"] = {**dataclasses.asdict(settings), "labels": args.labels}
            kwargs = dict(calibration_labels=y_train if args.labels else None,
                          finetuning=settings)
        calibration = x_train if mode == "finetune" else x_train[:args.calibration_size]
        snn = bsnn_tf.convert(ann, calibration, phases=phases, calibration=mode, verbose=0,
                              channelwise=args.channelwise, **kwargs)
        seconds = time.time() - start
        entry[mode] = row = evaluate(snn, x_test, y_test, ann_accuracy, args)
        row["seconds"] = round(seconds, 1)
        row["record"] = snn.calibration_record
        print(f"  {mode}: first readout T={row['first_readout']} {row['first_accuracy']:.2%}, "
              f"T* {row['t_star']}, {seconds:.0f} s", flush=True)
    return entry


def evaluate(snn, x_test, y_test, ann_accuracy, args):
    """Accuracy at every period from the first readout; T*; synaptic operations at T*."""
    first, K = snn.first_readout, snn.phases
    grid = list(range(first, first + (args.periods + 1) * K, K))
    result = bsnn_tf.simulate(snn, x_test, timesteps=grid[-1], checkpoints=grid,
                              count_spikes=False, verbose=0)
    accuracy = {t: result.accuracy(y_test, t) for t in grid}
    t_star = common.t_star(accuracy, ann_accuracy)
    row = {"depth": snn.depth, "first_readout": first, "first_accuracy": accuracy[first],
           "accuracy": accuracy, "t_star": t_star}
    if t_star is not None and args.statistics_images:
        counted = bsnn_tf.simulate(snn, x_test[:args.statistics_images], timesteps=t_star,
                                   verbose=0)
        row["synops_per_image_at_t_star"] = float(
            sum(metrics.synaptic_operations(snn, counted).values()))
    return row


def table(results):
    rows = []
    for key in sorted(results):
        entry = results[key]
        p, f = entry["percentile"], entry["finetune"]
        synops = lambda r: (f"{r['synops_per_image_at_t_star'] / 1e6:.1f}"
                            if "synops_per_image_at_t_star" in r else "-")
        rows.append([key, common.percent(entry["ann_accuracy"]),
                     f"{p['first_readout']}", common.percent(p["first_accuracy"]),
                     common.percent(f["first_accuracy"]), p["t_star"], f["t_star"],
                     synops(p), synops(f), f"{f['seconds'] / 60:.1f}", entry["date"][:10]])
    headers = ["run", "ANN %", "first readout T", "percentile %", "finetune %",
               "T* percentile", "T* finetune", "M synops/img at T* (pct)",
               "M synops/img at T* (ft)", "finetune minutes", "date"]
    return common.markdown_table(headers, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["akamaster20"])
    parser.add_argument("--phases", type=int, nargs="+", default=[4])
    parser.add_argument("--images", type=int, default=runs.FINETUNE_IMAGES,
                        help="training images fine-tuned on (seed 0)")
    parser.add_argument("--calibration_size", type=int, default=500,
                        help="of them, for the percentile calibration")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--learning_rate", type=float, default=FineTuning().learning_rate)
    parser.add_argument("--threshold_rate", type=float, default=FineTuning().threshold_rate)
    parser.add_argument("--start", choices=STARTS, default=FineTuning().start,
                        help="where the lambdas start (FineTuning.start)")
    parser.add_argument("--seed", type=int, default=FineTuning().seed,
                        help="FineTuning.seed: the held-out slice, the order and the augmentation "
                             "(the images drawn stay those of seed 0)")
    parser.add_argument("--labels", action="store_true",
                        help="fine-tune on the training labels as well as the ANN's logits")
    parser.add_argument("--label_weight", type=float, default=FineTuning().label_weight)
    parser.add_argument("--temperature", type=float, default=FineTuning().temperature)
    parser.add_argument("--image_budget", type=int, default=FineTuning().image_budget)
    parser.add_argument("--channelwise", action="store_true",
                        help="convert(channelwise=True): per-channel lambda for percentile too")
    parser.add_argument("--periods", type=int, default=24,
                        help="periods after the first readout at which accuracy is measured")
    parser.add_argument("--statistics_images", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None,
                        help="the first N test images only (smoke runs)")
    parser.add_argument("--data_dir", default=common.DATA_DIR)
    parser.add_argument("--tag", default="", help="appended to the result keys")
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if not args.report:
        for name in args.models:
            for phases in args.phases:
                entry = study(name, phases, args)
                common.update_json(args.output, f"{name} K={phases}{args.tag}", entry)
    print(table(json.loads(args.output.read_text())["results"]))


if __name__ == "__main__":
    main()
