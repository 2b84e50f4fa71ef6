"""Simulation speed: period mode against step mode, and memory against T.

VGG16 (CIFAR shape, BatchNorm, random weights) converted to a BSNN on random
calibration data. Prints, measured in one run:
- step-mode and period-mode throughput (images/s) at T steps and their ratio
  (target on a CPU: >= 0.8 x K), with the ANN's forward throughput;
- peak memory of a period-mode simulation at two values of T (each in a
  fresh process), which chunking keeps flat.

Usage (from the repository root):
    python benchmarks/sim_speed.py                       # CPU, TensorFlow backend
    KERAS_BACKEND=jax python benchmarks/sim_speed.py --batch 512 --timesteps 256 --modes period
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bsnn_tf  # noqa: E402
from common import machine  # noqa: E402


def build_snn(phases, seed=0):
    keras.utils.set_random_seed(seed)
    ann = bsnn_tf.models.get("vgg16", num_classes=10, input_shape=(32, 32, 3))
    calibration = np.random.default_rng(seed).normal(size=(64, 32, 32, 3)).astype("float32")
    return ann, bsnn_tf.convert(ann, calibration, phases=phases, verbose=0, calibration="percentile")


def throughput(run, images, repeats):
    """Images per second of `run()`, after one warm-up call (compilation)."""
    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return images * repeats / (time.perf_counter() - start)


def speed(args):
    ann, snn = build_snn(args.phases)
    x = np.random.default_rng(1).normal(size=(args.batch, 32, 32, 3)).astype("float32")
    results = {"ann": throughput(lambda: ann.predict(x, batch_size=args.batch, verbose=0),
                                 args.batch, args.repeats)}
    for mode in args.modes:
        results[mode] = throughput(
            lambda: bsnn_tf.simulate(snn, x, timesteps=args.timesteps, mode=mode,
                                     batch_size=args.batch, verbose=0),
            args.batch, args.repeats)
    return results


def peak_memory(args, timesteps):
    """Peak memory (bytes) of a period-mode simulation, measured in a fresh process."""
    command = [sys.executable, __file__, "--probe_memory", str(timesteps),
               "--phases", str(args.phases), "--batch", str(args.batch)]
    env = dict(os.environ, MALLOC_ARENA_MAX=str(args.malloc_arenas)) if args.malloc_arenas \
        else None
    output = subprocess.run(command, check=True, capture_output=True, text=True,
                            env=env).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_bytes"]


def probe_memory(args):
    _, snn = build_snn(args.phases)
    x = np.random.default_rng(1).normal(size=(args.batch, 32, 32, 3)).astype("float32")
    bsnn_tf.simulate(snn, x, timesteps=args.probe_memory, batch_size=args.batch, verbose=0)
    print(json.dumps({"peak_bytes": _peak_bytes()}))


def _peak_bytes():
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["period", "step"])
    parser.add_argument("--memory_timesteps", type=int, nargs=2, default=[256, 1024])
    parser.add_argument("--memory_only", action="store_true", help="skip the throughput part")
    parser.add_argument("--malloc_arenas", type=int,
                        help="MALLOC_ARENA_MAX for the memory probes (glibc; default: unset)")
    parser.add_argument("--probe_memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_memory:
        return probe_memory(args)

    print(f"machine: {machine()}")
    print(f"VGG16-CIFAR BSNN, K={args.phases}, T={args.timesteps} "
          f"({args.timesteps // args.phases} periods), batch {args.batch}")
    results = {} if args.memory_only else speed(args)
    for name, value in results.items():
        print(f"  {name:>7}: {value:10.2f} images/s")
    if "step" in results and "period" in results:
        ratio = results["period"] / results["step"]
        print(f"  period/step throughput ratio: {ratio:.2f} (target >= 0.8 x K = "
              f"{0.8 * args.phases:.1f})")
    if "period" in results:
        periods = args.timesteps // args.phases
        print(f"  period-mode throughput x periods / ANN throughput: "
              f"{results['period'] * periods / results['ann']:.2f} (target >= 0.8)")
    low, high = args.memory_timesteps
    memory = {t: peak_memory(args, t) for t in (low, high)}
    print(f"  peak memory, period mode: T={low}: {memory[low] / 2**20:.0f} MiB, "
          f"T={high}: {memory[high] / 2**20:.0f} MiB (ratio {memory[high] / memory[low]:.3f}, "
          "target within 10%)")


if __name__ == "__main__":
    main()
