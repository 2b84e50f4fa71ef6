"""Paper Fig. 5: how far each coding's output is from the ANN's, image by image.

For the first 100 lossless CIFAR-10 test images and the third-party ResNet-20,
converts the ANN with rate coding, phase coding and BSNN, simulates all three
for the same T, and plots the distribution of |SNN output - ANN output| over
every (image, class) pair, with outputs divided by the largest ANN output so
the three share one scale (the paper's "multiple" of the output layer).
The paper reports BSNN within 0.005.

Usage (from the repository root):
    python benchmarks/output_error.py --timesteps 256 --images 100
"""

import argparse

import numpy as np

from common import DOCS_DIR, RESULTS_DIR, load_task, save_json

import bsnn_tf  # noqa: E402  (after common, which puts the repository on sys.path)

METHODS = ("rate", "phase", "bsnn")


def output_errors(task, method, phases, timesteps):
    """|SNN - ANN| output per (image, class), divided by the largest |ANN output|."""
    snn = bsnn_tf.convert(task.ann, task.calibration, method=method, phases=phases, verbose=0, calibration="percentile")
    snn_outputs = bsnn_tf.simulate(snn, task.x_test, timesteps=timesteps, verbose=0).outputs
    ann_outputs = task.ann.predict(task.x_test, verbose=0)
    return np.abs(snn_outputs - ann_outputs).reshape(-1) / np.abs(ann_outputs).max()


def plot(errors, phases, timesteps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(errors), figsize=(10, 3.2), sharey=True)
    for axis, (method, error) in zip(axes, errors.items()):
        axis.hist(error, bins=40, color="tab:blue")
        name = method if method == "rate" else f"{method}, K={phases[method]}"
        axis.set_title(f"{name}: median {np.median(error):.4f}, max {error.max():.4f}",
                       fontsize=9)
        axis.set_xlabel("|SNN - ANN| / max |ANN| output")
    axes[0].set_ylabel("outputs (image x class)")
    figure.suptitle(f"ResNet-20, {len(error) // 10} CIFAR-10 test images, T = {timesteps}",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=256)
    parser.add_argument("--phases", type=int,
                        help="K for bsnn and phase (default: each method's, bsnn_tf.DEFAULT_PHASES)")
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    task = load_task("resnet20", limit=args.images)
    errors = {m: output_errors(task, m, args.phases, args.timesteps) for m in METHODS}
    summary = {m: {"median": float(np.median(e)), "p99": float(np.percentile(e, 99)),
                   "max": float(e.max()), "within_0.005": float(np.mean(e <= 0.005))}
               for m, e in errors.items()}
    phases = {m: args.phases or bsnn_tf.DEFAULT_PHASES[m] for m in METHODS}
    plot(errors, phases, args.timesteps, DOCS_DIR / "output_error.png")
    save_json({"timesteps": args.timesteps, "phases": phases, "images": args.images,
               "errors": summary}, RESULTS_DIR / "output_error.json")
    for method, stats in summary.items():
        print(f"{method:>6}: median {stats['median']:.4f}  99th pct {stats['p99']:.4f}  "
              f"max {stats['max']:.4f}  within 0.005: {stats['within_0.005']:.1%}")


if __name__ == "__main__":
    main()
