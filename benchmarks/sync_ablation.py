"""Paper Table 2: a residual network converted with and without synchronous layers.

Converts the third-party ResNet-20 (CIFAR-10, lossless test images) to a BSNN
twice, with `synchronous=True` and `False`, and reports accuracy against T
(every period from the first readout), T* and the curves as a plot.

Usage (from the repository root):
    python benchmarks/sync_ablation.py --phases 8 --initial_membrane 0 --timesteps 512
"""

import argparse

from common import (DOCS_DIR, RESULTS_DIR, ann_accuracy, load_task,
                    plot_accuracy_vs_t, save_json, simulate_accuracies, t_star)

import bsnn_tf  # noqa: E402  (after common, which puts the repository on sys.path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=8)
    parser.add_argument("--initial_membrane", type=float, default=None)
    parser.add_argument("--timesteps", type=int, default=512)
    parser.add_argument("--limit", type=int, default=None, help="test images (default all)")
    args = parser.parse_args()
    task = load_task("resnet20", limit=args.limit)
    reference = ann_accuracy(task)
    curves, rows = {}, {}
    for synchronous in (True, False):
        snn = bsnn_tf.convert(task.ann, task.calibration, phases=args.phases,
                              synchronous=synchronous, initial_membrane=args.initial_membrane,
                              verbose=0, calibration="percentile")
        grid = range(args.phases * (snn.readout_start + 1), args.timesteps + 1, args.phases)
        accuracies, seconds = simulate_accuracies(snn, task, grid)
        label = "with synchronous layers" if synchronous else "without"
        curves[label] = accuracies
        rows[label] = {"accuracy": accuracies, "t_star": t_star(accuracies, reference),
                       "first_readout": min(grid), "seconds": seconds}
        shown = list(accuracies)[:: max(1, len(grid) // 8)]
        print(f"{label:>24}: T* = {rows[label]['t_star']}, "
              + ", ".join(f"T={t}: {100 * accuracies[t]:.2f}" for t in shown))
    membrane = "default" if args.initial_membrane is None else args.initial_membrane
    name = f"sync_ablation_k{args.phases}_m{membrane}"
    plot_accuracy_vs_t(curves, reference, f"ResNet-20 BSNN, K={args.phases}, "
                       f"initial membrane {membrane}", DOCS_DIR / f"{name}.png")
    save_json({"ann_accuracy": reference, "images": len(task.y_test),
               "phases": args.phases, "initial_membrane": membrane, "runs": rows},
              RESULTS_DIR / f"{name}.json")


if __name__ == "__main__":
    main()
