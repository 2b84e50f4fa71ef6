"""ResNet-34 on ImageNet: seconds per image of the conversion and of the simulation (issue 14).

What a user needs to plan a full validation run of the mission's command
(`python convert.py --model resnet34 --dataset imagenet`): random weights (the
time does not depend on them), the real 1,000-image sample, the calibration
images held out of it as convert.py does (`bsnn_tf.runs.load_images`).

- conversion: `bsnn_tf.convert` (default calibration, K = 4) on half of and
  on all `--calibration_size` images, after an untimed first conversion
  (one-time tracing and compilation): the time on all, and the seconds each
  further calibration image adds (the difference), since it is a fixed part
  (tracing, folding, building) plus one ANN pass per image with every
  spiking layer's output;
- simulation: the CLI's statistics pass (`bsnn_tf.simulate`: spikes counted,
  SIN against the ANN, checkpoints) at T = (D + 1) K, the first readout, and
  at 2 (D + 1) K, D = the SNN's spiking depth. The first batch is timed on
  its own (`first_batch_seconds`, with the compilation; the table's
  "compilation" is it minus a batch at the steady rate); the rest gives the
  steady seconds per image. `--images` should be at least two batches. Both
  T use the same chunk length, so the second reuses the first's compiled
  chunks.
  `--logits_only` times the CLI's accuracy pass instead (`bsnn_tf.evaluate`'s
  simulation: no spike counts, no SIN), where the schedule also stops each
  layer once its output can no longer reach the readout.

Each run is merged into benchmarks/results/imagenet_timing.json (folder:
$BSNN_RESULTS_DIR if set) under its device, K and batch, with its command
line, date and machine; `--report` prints the table.

Usage (from the repository root):
    python benchmarks/imagenet_timing.py --images 24 --batch 8
    KERAS_BACKEND=jax python benchmarks/imagenet_timing.py --images 256 --batch 64  # a GPU
    python benchmarks/imagenet_timing.py --smoke     # code paths only (T = 4, 8)
    python benchmarks/imagenet_timing.py --report
"""

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bsnn_tf  # noqa: E402
import common  # noqa: E402
from bsnn_tf import runs  # noqa: E402

OUTPUT = common.RESULTS_DIR / "imagenet_timing.json"
SMOKE = {"images": 4, "batch": 2, "calibration_size": 4}


def measure(args):
    config = runs.RunConfig(model="resnet34", dataset="imagenet", data_dir=args.data_dir,
                            random_weights=True, calibration_size=args.calibration_size,
                            calibration_split="test", limit=args.images,
                            batch_size=args.batch, phases=args.phases, output_dir=os.devnull)
    keras.utils.set_random_seed(0)
    ann = runs.load_ann(config)
    images = runs.load_images(config)
    (x_test, y_test), x_calibration = images.decoded(), images.x_calibration
    print(f"machine: {common.machine()}")
    print(f"ResNet-34 (random weights), {len(x_test)} test images, "
          f"{len(x_calibration)} calibration images, batch {args.batch}, K={args.phases}")

    start = time.perf_counter()
    ann.predict(x_test[:args.batch], batch_size=args.batch, verbose=0)
    ann_first = time.perf_counter() - start
    start = time.perf_counter()
    ann.predict(x_test, batch_size=args.batch, verbose=0)
    ann_seconds = time.perf_counter() - start

    conversion = {}
    # The first conversion also pays one-time costs (tracing, compilation): not timed.
    sizes = sorted({max(1, len(x_calibration) // 2), len(x_calibration)})
    for size in sizes[:1] + sizes:
        start = time.perf_counter()
        snn = bsnn_tf.convert(ann, x_calibration[:size], phases=args.phases,
                              batch_size=args.batch, verbose=0)
        conversion[size] = time.perf_counter() - start
    (half, fewer), (full, more) = min(conversion.items()), max(conversion.items())
    per_image = (more - fewer) / (full - half) if full > half else more / full
    depth = snn.depth
    print(f"ANN: {ann_seconds / len(x_test):.3f} s/image; conversion: "
          + ", ".join(f"{t:.1f} s on {n} images" for n, t in conversion.items())
          + f" ({per_image:.2f} s per further image); D = {depth}")
    entry = {
        "model": "resnet34", "weights": "random", "phases": args.phases, "depth": depth,
        "batch": args.batch, "images": len(x_test), "calibration_images": len(x_calibration),
        "calibration": bsnn_tf.conversion.DEFAULT_CALIBRATION,
        "ann_seconds_per_image": ann_seconds / len(x_test),
        "ann_first_batch_seconds": ann_first,
        "conversion_seconds": {str(n): t for n, t in conversion.items()},
        "conversion_seconds_per_calibration_image": per_image,
        "simulation": {}, "logits_only": args.logits_only, "device": common.device_label(),
        "smoke": args.smoke,
        **common.run_header(),
    }
    periods = [(depth + 1) * multiple for multiple in args.multiples]
    if args.smoke:
        periods = [1, 2]
    for timesteps in (p * args.phases for p in periods):
        entry["simulation"][str(timesteps)] = row = simulate(snn, ann, x_test, timesteps, args)
        print(f"T={timesteps}: first batch {row['first_batch_seconds']:.1f} s (with any "
              f"compilation), then {row['seconds_per_image']:.2f} s/image "
              f"over {row['timed_images']} images")
    entry["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Other processes on the machine make the times upper bounds.
    entry["load_average"] = os.getloadavg()
    return entry


def simulate(snn, ann, x, timesteps, args):
    """Seconds of the CLI's simulation at `timesteps` (or a logits-only one): the first
    batch, then the rest."""
    checkpoints = runs.default_checkpoints(timesteps, args.phases)
    if args.logits_only:
        run = lambda images: bsnn_tf.simulate(snn, images, timesteps=timesteps,
                                              checkpoints=checkpoints, count_spikes=False,
                                              batch_size=args.batch, verbose=0)
    else:
        run = lambda images: bsnn_tf.simulate(snn, images, timesteps=timesteps,
                                              checkpoints=checkpoints, batch_size=args.batch,
                                              ann=ann, verbose=0)
    start = time.perf_counter()
    run(x[:args.batch])
    first = time.perf_counter() - start
    rest = x[args.batch:]
    seconds = None
    if len(rest):
        start = time.perf_counter()
        run(rest)
        seconds = (time.perf_counter() - start) / len(rest)
    return {"timesteps": timesteps, "periods": timesteps // args.phases,
            "first_batch_seconds": first, "timed_images": len(rest),
            "seconds_per_image": seconds if seconds is not None else first / args.batch}


def table(results):
    """Markdown: one row per stored run and T."""
    rows = []
    for key in sorted(results):
        entry = results[key]
        for timesteps, row in entry["simulation"].items():
            multiple = row["periods"] / (entry["depth"] + 1)
            compilation = row["first_batch_seconds"] - entry["batch"] * row["seconds_per_image"]
            rows.append([
                entry["device"] + (" (smoke)" if entry.get("smoke") else "")
                + (" logits only" if entry.get("logits_only") else "")
                + (" (earlier run)" if key.endswith("(earlier run)") else ""),
                f"{timesteps} = {multiple:.3g} (D+1) K", entry["batch"],
                f"{entry['conversion_seconds'][str(entry['calibration_images'])]:.0f} s / "
                f"{entry['calibration_images']} images, "
                f"{entry['conversion_seconds_per_calibration_image']:.2f} s per further image",
                f"{row['seconds_per_image']:.2f} ({row['timed_images']} images)",
                f"{max(0.0, compilation):.0f}",
                f"{entry['ann_seconds_per_image']:.3f}",
                f"{entry.get('peak_rss_bytes', 0) / 2**30:.1f}", entry["date"][:10]])
    headers = ["device", "T", "batch", "conversion (calibration images)",
               "simulation s/image", "compilation s", "ANN s/image",
               "peak RSS GiB", "date"]
    return common.markdown_table(headers, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="test images simulated")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calibration_size", type=int, default=64)
    parser.add_argument("--phases", type=int, default=bsnn_tf.DEFAULT_PHASES["bsnn"])
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 2],
                        help="T = m (D + 1) K for each m")
    parser.add_argument("--data_dir", default=common.DATA_DIR)
    parser.add_argument("--logits_only", action="store_true",
                        help="time a logits-only simulation (evaluate's) instead of the CLI's")
    parser.add_argument("--smoke", action="store_true",
                        help=f"code paths only, T = K and 2 K: {SMOKE}")
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if args.smoke:
        common.apply_smoke(parser, args, SMOKE)
    if not args.report:
        entry = measure(args)
        key = (f"resnet34 K={args.phases} batch={args.batch} {entry['device']}"
               + (" logits-only" if args.logits_only else "")
               + (" smoke" if args.smoke else ""))
        common.update_json(args.output, key, entry)
    print(table(json.loads(args.output.read_text())["results"]))


if __name__ == "__main__":
    main()
