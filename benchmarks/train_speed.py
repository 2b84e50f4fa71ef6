"""Seconds per training epoch of ResNet-20 on CIFAR-10 under several recipes (issue 13).

Each variant runs in its own process (the Keras backend is chosen at start):
a warm-up epoch of `--steps` batches, then a timed one. The epoch time is
the timed seconds per batch times the batches of the 50,000 training images.

    python benchmarks/train_speed.py                # all variants, ~13 min on 2 cores
    python benchmarks/train_speed.py --variants baseline bf16 --steps 20
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import common

# name: (backend, TrainConfig overrides)
VARIANTS = {
    "baseline": ("tensorflow", {}),
    "no_randaugment": ("tensorflow", {"rand_augment": False}),
    "no_randaugment_bf16": ("tensorflow", {"rand_augment": False, "precision": "mixed_bfloat16"}),
    "no_randaugment_b256": ("tensorflow", {"rand_augment": False, "batch_size": 256}),
    "jax_b128": ("jax", {}),  # RandAugment runs on TensorFlow only
}
TRAIN_IMAGES = 50_000


def time_variant(overrides, steps):
    """Seconds per batch of the second of two `steps`-batch epochs."""
    import keras

    from bsnn_tf import data
    from bsnn_tf.runs import recipe, training

    config = training.TrainConfig("resnet20", "cifar10", "/tmp/unused", epochs=20, **overrides)
    batches = data.train_dataset("cifar10", config.batch_size, common.DATA_DIR,
                                 augment=True, seed=0, rand_augment=config.rand_augment)
    model = recipe.compiled_model(config, steps_per_epoch=len(batches))
    starts = []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: starts.append(time.time()))
    model.fit(batches, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    per_batch = (time.time() - starts[1]) / steps
    return {"seconds_per_batch": per_batch, "batch_size": config.batch_size,
            "epoch_seconds": per_batch * math.ceil(TRAIN_IMAGES / config.batch_size),
            "backend": keras.backend.backend(), "overrides": overrides}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=40, help="Batches timed per variant.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    common.add_output_arguments(parser, common.RESULTS_DIR / "train_speed.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_variant(VARIANTS[args.child][1], args.steps)))
        return
    for name in args.variants:
        environment = {**os.environ, "KERAS_BACKEND": VARIANTS[name][0]}
        command = [sys.executable, __file__, "--child", name, "--steps", str(args.steps)]
        finished = subprocess.run(command, env=environment, capture_output=True, text=True)
        if finished.returncode:
            sys.exit(f"{name} failed:\n{finished.stderr[-3000:]}")
        entry = json.loads(finished.stdout.strip().splitlines()[-1])
        print(f"{name:28s} {entry['epoch_seconds'] / 60:6.2f} min/epoch "
              f"({entry['seconds_per_batch']:.3f} s per batch of {entry['batch_size']})", flush=True)
        common.update_json(args.output, name, {**entry, **common.run_header()})


if __name__ == "__main__":
    main()
