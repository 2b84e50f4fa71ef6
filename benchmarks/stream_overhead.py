"""Does decoding hold the compute up? convert.py's pass fed by the stream against the same
stages fed pre-decoded arrays, and the decoding stream alone (issue 34).

On the ImageNet sample's evaluated images (as convert.py holds the calibration images
out), with a zoo model at 224 px (random weights; the time does not depend on them):

- stream alone: `data.image_batches` (decode, resize, crop, preprocess; tf.data
  parallel map and prefetch, or a thread pool without TensorFlow), images per second;
- streamed pass: each batch from the stream goes through the ANN and the BSNN's
  logits-only simulation at the first readout plus `--periods` periods (a
  `bsnn_tf.Simulator`), as `runs.one_pass` does;
- pre-decoded pass: the same batches decoded beforehand (not timed), then the same
  ANN and simulation calls;
- logits-only simulation alone, images per second (from the pre-decoded pass).

The two passes run in turn (streamed, pre-decoded, streamed, pre-decoded) after an
untimed warm-up batch that compiles everything, and the ratio is of the medians.
Results are merged into benchmarks/results/stream_overhead.json.

    python benchmarks/stream_overhead.py --images 1000 --model resnet18
    python benchmarks/stream_overhead.py --smoke
    python benchmarks/stream_overhead.py --report
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bsnn_tf  # noqa: E402
import common  # noqa: E402
from bsnn_tf import data, runs  # noqa: E402

OUTPUT = common.RESULTS_DIR / "stream_overhead.json"


def measure(args):
    config = runs.RunConfig(model=args.model, dataset="imagenet",
                            data_dir=args.data_dir, random_weights=True,
                            calibration_size=args.calibration_size, limit=args.images,
                            calibration_split="test")
    ann = runs.load_ann(config)
    images = runs.load_images(config)
    snn = bsnn_tf.convert(ann, images.x_calibration, verbose=0)
    timesteps = snn.first_readout + args.periods * snn.phases
    checkpoints = list(range(snn.first_readout, timesteps + 1, snn.phases))
    simulator = bsnn_tf.Simulator(snn, timesteps=timesteps, checkpoints=checkpoints,
                                  batch_size=args.batch, count_spikes=False,
                                  keep_outputs=False)

    def stage(x):
        ann.predict_on_batch(x)
        simulator.update(x)

    stream = lambda: data.image_batches("imagenet", images.test, images.evaluated, args.batch)
    stage(next(iter(stream())).x)  # compiles the ANN and the simulation
    start = time.perf_counter()
    decoded = [batch.x for batch in stream()]
    stream_seconds = time.perf_counter() - start
    streamed, predecoded = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for batch in stream():
            stage(batch.x)
        streamed.append(time.perf_counter() - start)
        start = time.perf_counter()
        for x in decoded:
            stage(x)
        predecoded.append(time.perf_counter() - start)
    count = len(images.evaluated)
    return {
        **common.run_header(), "model": args.model, "images": count, "batch": args.batch,
        "timesteps": timesteps, "first_readout": snn.first_readout,
        "stream_images_per_second": round(count / stream_seconds, 1),
        "streamed_seconds": [round(s, 2) for s in streamed],
        "predecoded_seconds": [round(s, 2) for s in predecoded],
        "streamed_over_predecoded": round(float(np.median(streamed) / np.median(predecoded)), 3),
        "pass_images_per_second": round(count / float(np.median(predecoded)), 2),
    }


def report(path):
    rows = [[key, r["images"], r["batch"], r["timesteps"], r["stream_images_per_second"],
             r["pass_images_per_second"], r["streamed_over_predecoded"]]
            for key, r in common.stored_results(path).items()]
    print(common.markdown_table(
        ["device, model", "images", "batch", "T", "stream alone (images/s)",
         "ANN + logits-only pass, pre-decoded (images/s)", "streamed / pre-decoded"], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--calibration_size", type=int, default=64)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--periods", type=int, default=0,
                        help="periods simulated beyond the first readout")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data_dir", default=common.DATA_DIR)
    parser.add_argument("--smoke", action="store_true", help="8 images, batch 4, once")
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if args.smoke:
        args.images, args.batch, args.calibration_size, args.repeats = 8, 4, 8, 1

    def run(args):
        row = measure(args)
        print(json.dumps(row, indent=1))
        key = f"{common.device_label()}, {args.model}" + (" (smoke)" if args.smoke else "")
        common.update_json(args.output, key, row)

    common.run_or_report(args, run, report)


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    main()
