"""The mission's command on an ImageNet folder of N images: wall time, images per second
and peak RSS, for the 50,000-image validation set's estimate.

Builds `imagenet/val/<wnid>/*.JPEG` from the 1,000-image sample's original JPEG bytes
(`imagenet_sample_*.npz`, or gpu_prepare.sh's subset; image i is sample image i mod 1,000, under its own class, as
hard links to one file per sample image, so 50,000 images take the sample's disk), then
runs `convert.py --model M --dataset imagenet --data_dir <it>` (held-out calibration
images, since the folder has no train split) as a child process, and records its wall
time and peak RSS (`ru_maxrss` of the child) in benchmarks/results/imagenet_folder.json
(or $BSNN_RESULTS_DIR), one row per (device, model, images, T).

    python benchmarks/imagenet_folder.py --images 1000 --model resnet34 --timesteps 136
    python benchmarks/imagenet_folder.py --images 10000 --model resnet34 --timesteps 136
    python benchmarks/imagenet_folder.py --smoke     # 12 images, resnet18, T 8, 2 statistics

Extra arguments after `--` go to convert.py (e.g. `-- --weights resnet34.pth`); without
--weights the zoo model runs with random weights, which costs the same per image.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DATA_DIR, RESULTS_DIR, ROOT, device_label, run_header, update_json  # noqa: E402


def sample_jpegs(data_dir):
    """[(wnid, JPEG bytes)] of the ImageNet sample's images, in shard order (or of the
    subset `benchmarks/gpu_prepare.sh` carries, imagenet_jpegs.npz)."""
    images = []
    for shard in sorted(f for f in os.listdir(data_dir)
                        if f.startswith(("imagenet_sample_", "imagenet_jpegs"))):
        archive = np.load(os.path.join(data_dir, shard))
        if "test_jpeg" not in archive.files:
            continue  # gpu_prepare.sh's decoded images
        blob, offsets, wnids = archive["test_jpeg"], archive["test_offsets"], archive["test_wnids"]
        images += [(str(wnids[i]), blob[offsets[i]:offsets[i + 1]].tobytes())
                   for i in range(len(wnids))]
    if not images:
        sys.exit(f"No imagenet_sample_*.npz in {data_dir}: set BSNN_DATA_DIR or --data_dir.")
    return images


def build_folder(root, count, jpegs):
    """`root`/imagenet/val/<wnid>/<k>.JPEG for k < count, hard links to the sample's files."""
    originals = os.path.join(root, "originals")
    os.makedirs(originals)
    for index, (_, encoded) in enumerate(jpegs):
        with open(os.path.join(originals, f"{index}.JPEG"), "wb") as f:
            f.write(encoded)
    for k in range(count):
        wnid = jpegs[k % len(jpegs)][0]
        folder = os.path.join(root, "imagenet", "val", wnid)
        os.makedirs(folder, exist_ok=True)
        os.link(os.path.join(originals, f"{k % len(jpegs)}.JPEG"),
                os.path.join(folder, f"ILSVRC2012_val_{k:08d}.JPEG"))
    return root


def run(args, extra):
    jpegs = sample_jpegs(args.data_dir or DATA_DIR)
    with tempfile.TemporaryDirectory() as scratch:
        build_folder(scratch, args.images + args.calibration_size, jpegs)
        command = [sys.executable, str(ROOT / "convert.py"), "--model", args.model,
                   "--dataset", "imagenet", "--data_dir", scratch,
                   "--calibration_split", "test",
                   "--calibration_size", str(args.calibration_size),
                   "--statistics_images", str(args.statistics_images),
                   "--output_dir", os.path.join(scratch, "run")]
        command += ["--timesteps", str(args.timesteps)] if args.timesteps else []
        command += ["--batch_size", str(args.batch_size)] if args.batch_size else []
        command += [] if "--weights" in extra else ["--random_weights"]
        start = time.time()
        completed = subprocess.run(command + extra, cwd=scratch)
        seconds = time.time() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        results = {}
        if completed.returncode == 0:
            with open(os.path.join(scratch, "run", "results.json")) as f:
                results = json.load(f)
    return completed.returncode, seconds, peak, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="evaluated images")
    parser.add_argument("--calibration_size", type=int, default=500)
    parser.add_argument("--model", default="resnet34")
    parser.add_argument("--timesteps", type=int, default=None)
    parser.add_argument("--statistics_images", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="12 images, resnet18, T = 8 (a check that the step runs)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if args.smoke:
        args.images, args.calibration_size, args.model = 12, 4, "resnet18"
        args.timesteps, args.statistics_images, args.batch_size = args.timesteps or 8, 2, 4
    code, seconds, peak, results = run(args, extra)
    row = {**run_header(), "model": args.model, "images": args.images,
           "calibration_images": args.calibration_size,
           "timesteps": results.get("timesteps", [args.timesteps])[-1] if results else
           args.timesteps, "statistics_images": args.statistics_images,
           "exit_code": code, "seconds": round(seconds, 1),
           "seconds_per_image": round(seconds / args.images, 4),
           "estimated_seconds_50000": round(seconds / args.images * 50000),
           "peak_rss_gib": round(peak / 2**30, 3)}
    print(json.dumps(row, indent=1))
    key = (f"{device_label()}, {args.model}, {args.images} images, T {row['timesteps']}"
           + (" (smoke)" if args.smoke else ""))
    update_json(RESULTS_DIR / "imagenet_folder.json", key, row)
    sys.exit(code)


if __name__ == "__main__":
    main()
