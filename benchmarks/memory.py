"""Peak memory of the mission's command: ResNet-34 on ImageNet at 224 x 224 (issue 23).

Runs `convert.py --model resnet34 --dataset imagenet --random_weights` in a fresh
process per row (benchmarks/peak_rss.py reads the kernel's peak RSS) with 16,
64 and all of the 1,000-image sample (500 calibrate, 500 are evaluated), at
T = 8 and at the default T (the first readout plus runs.EXTRA_PERIODS
periods), next to the ANN's own peak (`--ann_only`: load the model and the
images, predict). Memory must not grow with the images or the periods: it is
bounded by the model and the batch (simulator.STATE_BYTES, schedule.CHUNK_BYTES).
Each row is merged into benchmarks/results/memory.json with its wall time.

Usage (from the repository root, nothing else running):
    python benchmarks/memory.py                      # every row (about 45 minutes here)
    python benchmarks/memory.py --rows 16:8 64:8     # images:T (T "default" or a number)
    python benchmarks/memory.py --report
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import common

OUTPUT = common.RESULTS_DIR / "memory.json"
ROWS = ("ann:all", "16:8", "64:8", "all:8", "16:default", "64:default", "all:default")
COMMAND = ["--model=resnet34", "--dataset=imagenet", "--random_weights"]


def measure(row, data_dir):
    """{peak_rss_bytes, seconds, ...} of one row, run in a fresh process."""
    images, timesteps = row.split(":")
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "peak.json")
        if images == "ann":
            script, args = __file__, ["--ann_only", f"--data_dir={data_dir}"]
        else:
            script = str(common.ROOT / "convert.py")
            args = [*COMMAND, f"--data_dir={data_dir}", f"--output_dir={scratch}/run"]
            args += [] if images == "all" else [f"--limit={images}",
                                                f"--calibration_size={images}"]
            args += [] if timesteps == "default" else [f"--timesteps={timesteps}"]
        command = [sys.executable, str(common.ROOT / "benchmarks" / "peak_rss.py"), out,
                   script, *args]
        completed = subprocess.run(command, cwd=common.ROOT, capture_output=True, text=True)
        if completed.returncode:
            sys.exit(f"{row} failed:\n{completed.stderr[-3000:]}")
        measured = json.loads(open(out).read())
        results = os.path.join(scratch, "run", "results.json")
        if os.path.exists(results):
            run = json.loads(open(results).read())
            measured.update(test_images=run["test_images"], timesteps=run["timesteps"][-1],
                            calibration_images=run["calibration_images"])
    return {**measured, "command": " ".join(["python", "convert.py", *args])
            if images != "ann" else "python benchmarks/memory.py --ann_only",
            **{k: v for k, v in common.run_header().items() if k != "command"}}


def ann_only(data_dir):
    """What the ANN alone needs: the model, the 1,000 images, one prediction pass."""
    from bsnn_tf import models, runs

    config = runs.RunConfig(model="resnet34", dataset="imagenet", random_weights=True,
                            data_dir=data_dir, output_dir=os.devnull)
    ann = models.get("resnet34", 1000, (224, 224, 3))
    images = runs.load_images(config)
    runs.predict(ann, images.decoded()[0], runs.ANN_BATCH)


def table(results):
    rows = []
    for row in ROWS:
        entry = results.get(row)
        if entry is None:
            continue
        images, timesteps = row.split(":")
        rows.append([
            "ANN alone (predict)" if images == "ann" else
            f"{entry.get('test_images', images)} evaluated + "
            f"{entry.get('calibration_images', '?')} calibration",
            "-" if images == "ann" else entry.get("timesteps", timesteps),
            f"{entry['peak_rss_bytes'] / 2**30:.2f}", f"{entry['seconds'] / 60:.1f}",
            entry["date"][:10]])
    return common.markdown_table(["images", "T", "peak RSS GiB", "minutes", "date"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS),
                        help="images:T pairs (images: a number, all, or ann)")
    parser.add_argument("--data_dir", default=common.DATA_DIR)
    parser.add_argument("--ann_only", action="store_true", help=argparse.SUPPRESS)
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if args.ann_only:
        return ann_only(args.data_dir)
    if not args.report:
        for row in args.rows:
            entry = measure(row, args.data_dir)
            print(f"{row}: peak {entry['peak_rss_bytes'] / 2**30:.2f} GiB, "
                  f"{entry['seconds'] / 60:.1f} min", flush=True)
            common.update_json(args.output, row, entry)
    print(table(json.loads(args.output.read_text())["results"]))


if __name__ == "__main__":
    main()
