"""Simulation speed: period mode against step mode, and memory against T.

VGG16 (CIFAR shape, BatchNorm, random weights) converted to a BSNN on random
calibration data. Prints, measured in one run:
- step-mode and period-mode throughput (images/s) at T steps and their ratio
  (target on a CPU: >= 0.9 x K), with the ANN's throughput twice: Keras
  `predict` on the batch (the issue's reference, per-call overhead included)
  and its compiled forward pass alone; and period throughput x periods / ANN
  throughput against each (above 1 where the schedule skips the layers still
  at rest or no longer needed; `--timesteps first` takes T = (D + 1) K, the
  first readout);
- peak memory of a period-mode simulation at two values of T (each in a
  fresh process), which chunking keeps flat.

Each run is merged into benchmarks/results/sim_speed.json (folder:
$BSNN_RESULTS_DIR if set) under its K, T, batch and device, with its command
line, date and machine; `--report` prints the table.

Usage (from the repository root):
    python benchmarks/sim_speed.py                       # CPU, TensorFlow backend
    python benchmarks/sim_speed.py --timesteps first --no_memory   # T = (D + 1) K
    KERAS_BACKEND=jax python benchmarks/sim_speed.py --batch 512 --timesteps 256
    KERAS_BACKEND=jax python benchmarks/sim_speed.py --smoke   # seconds: code paths only
    python benchmarks/sim_speed.py --report
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bsnn_tf  # noqa: E402
import common  # noqa: E402

OUTPUT = common.RESULTS_DIR / "sim_speed.json"
SMOKE = {"batch": 2, "timesteps": 16, "repeats": 1, "memory_timesteps": [8, 16]}


def build_snn(phases, seed=0):
    keras.utils.set_random_seed(seed)
    ann = bsnn_tf.models.get("vgg16", num_classes=10, input_shape=(32, 32, 3))
    calibration = np.random.default_rng(seed).normal(size=(64, 32, 32, 3)).astype("float32")
    return ann, bsnn_tf.convert(ann, calibration, phases=phases, verbose=0, calibration="percentile")


def speed(args):
    ann, snn = build_snn(args.phases)
    if args.timesteps == "first":
        args.timesteps = (snn.depth + 1) * args.phases
    x = np.random.default_rng(1).normal(size=(args.batch, 32, 32, 3)).astype("float32")
    forward = bsnn_tf.backend.compile_function(lambda images: ann(images, training=False),
                                               ann.variables)
    results = {"ann": common.throughput(
        lambda: ann.predict(x, batch_size=args.batch, verbose=0), args.batch, args.repeats),
        "ann_forward": common.throughput(
            lambda: keras.ops.convert_to_numpy(forward(x)), args.batch, 5 * args.repeats)}
    for name in args.modes:
        mode, _, variant = name.partition("_")
        with _simulator(variant):
            results[name] = common.throughput(
                lambda: bsnn_tf.simulate(snn, x, timesteps=args.timesteps, mode=mode,
                                         batch_size=args.batch, count_spikes=variant == "before",
                                         verbose=0),
                args.batch, args.repeats)
    return results


@contextlib.contextmanager
def _simulator(variant):
    """'before': the simulator before issue 10 (every layer from period 0, spikes counted)."""
    skewed = bsnn_tf.schedule.MAX_SKEWED_CHUNKS
    if variant == "before":
        bsnn_tf.schedule.MAX_SKEWED_CHUNKS = 0
    try:
        yield
    finally:
        bsnn_tf.schedule.MAX_SKEWED_CHUNKS = skewed


def peak_memory(args, timesteps):
    """Peak memory (bytes) of a period-mode simulation, measured in a fresh process."""
    command = [sys.executable, __file__, "--probe_memory", str(timesteps),
               "--phases", str(args.phases), "--batch", str(args.batch)]
    env = dict(os.environ, MALLOC_ARENA_MAX=str(args.malloc_arenas)) if args.malloc_arenas \
        else None
    probe = subprocess.run(command, capture_output=True, text=True, env=env)
    if probe.returncode:
        sys.stderr.write(probe.stderr)
        raise RuntimeError(f"memory probe at T={timesteps} exited with {probe.returncode}")
    return json.loads(probe.stdout.strip().splitlines()[-1])["peak_bytes"]


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


def measure(args):
    """Throughputs, ratios and peak memory of one run; the entry stored in the JSON."""
    print(f"machine: {common.machine()}")
    results = {} if args.memory_only else speed(args)
    print(f"VGG16-CIFAR BSNN, K={args.phases}, T={args.timesteps} "
          f"({args.timesteps // args.phases} periods), batch {args.batch}")
    entry = {"model": "vgg16-cifar", "phases": args.phases, "timesteps": args.timesteps,
             "batch": args.batch, "repeats": args.repeats, "images_per_second": results,
             "device": common.device_label(), "smoke": args.smoke,
             "jax_default_matmul_precision": os.environ.get("JAX_DEFAULT_MATMUL_PRECISION"),
             **common.run_header()}
    for name, value in results.items():
        print(f"  {name:>7}: {value:10.2f} images/s")
    if "step" in results and "period" in results:
        entry["period_over_step"] = ratio = results["period"] / results["step"]
        print(f"  period/step throughput ratio: {ratio:.2f} (target >= 0.9 x K = "
              f"{0.9 * args.phases:.1f})")
    for name in ("period", "period_before"):
        if name in results:
            periods = args.timesteps // args.phases
            ratio = results[name] * periods / results["ann"]
            entry[f"periods_x_{name}_over_ann"] = ratio
            forward = results[name] * periods / results["ann_forward"]
            entry[f"periods_x_{name}_over_ann_forward"] = forward
            print(f"  {name} throughput x periods / ANN throughput: {ratio:.2f} "
                  f"(against the compiled forward pass: {forward:.2f})")
    if args.memory_timesteps:
        low, high = args.memory_timesteps
        try:
            memory = {t: peak_memory(args, t) for t in (low, high)}
        except (RuntimeError, ValueError) as error:  # the throughputs are still stored
            entry["memory_error"] = str(error)
            return entry
        entry.update({"peak_memory_bytes": memory, "memory_ratio": memory[high] / memory[low],
                      "malloc_arenas": args.malloc_arenas})
        print(f"  peak memory, period mode: T={low}: {memory[low] / 2**20:.0f} MiB, "
              f"T={high}: {memory[high] / 2**20:.0f} MiB (ratio {memory[high] / memory[low]:.3f}, "
              "target within 10%)")
    return entry


def table(results):
    """Markdown: one row per stored run."""
    rows = []
    for key in sorted(results):
        entry = results[key]
        speed_, memory = entry["images_per_second"], entry.get("peak_memory_bytes", {})
        rows.append([entry["device"] + (" (smoke)" if entry.get("smoke") else "")
                     + (f" [{entry['tag']}]" if entry.get("tag") else ""),
                     entry["phases"], entry["timesteps"], entry["batch"],
                     *[_number(speed_.get(name)) for name in ("ann", "period", "step")],
                     _number(entry.get("period_over_step")),
                     _number(entry.get("periods_x_period_over_ann")),
                     _number(entry.get("periods_x_period_before_over_ann")),
                     _number(speed_.get("ann_forward")),
                     _number(entry.get("periods_x_period_over_ann_forward")),
                     " / ".join(f"{t}: {b / 2**20:.0f}" for t, b in memory.items()) or "-",
                     _number(entry.get("memory_ratio"), 3), entry["date"][:10]])
    headers = ["device", "K", "T", "batch", "ANN images/s", "period images/s", "step images/s",
               "period / step", "period x periods / ANN", "before issue 10",
               "ANN forward images/s", "period x periods / ANN forward", "peak MiB (T: MiB)",
               "memory ratio", "date"]
    return common.markdown_table(headers, rows)


def _timesteps(value):
    return value if value == "first" else int(value)


def _number(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=8)
    parser.add_argument("--timesteps", type=_timesteps, default=64,
                        help="T, or 'first' for the first readout (D + 1) K")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["period", "step"],
                        help="period, step, period_before (the simulator before issue 10)")
    parser.add_argument("--memory_timesteps", type=int, nargs=2, default=[256, 1024])
    parser.add_argument("--no_memory", dest="memory_timesteps", action="store_const",
                        const=None, help="skip the peak-memory part")
    parser.add_argument("--memory_only", action="store_true", help="skip the throughput part")
    parser.add_argument("--malloc_arenas", type=int,
                        help="MALLOC_ARENA_MAX for the memory probes (glibc; default: unset)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"code paths only, in seconds: {SMOKE}")
    parser.add_argument("--tag", help="a label for this run, in its key and its table row")
    parser.add_argument("--probe_memory", type=int, help=argparse.SUPPRESS)
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if args.probe_memory:
        return probe_memory(args)
    if args.smoke:
        common.apply_smoke(parser, args, SMOKE)
    if not args.report:
        entry = measure(args)
        entry["tag"] = args.tag
        key = (f"vgg16-cifar K={args.phases} T={args.timesteps} batch={args.batch} "
               f"{entry['device']}" + (" smoke" if args.smoke else "")
               + (f" [{args.tag}]" if args.tag else ""))
        common.update_json(args.output, key, entry)
        if "memory_error" in entry:
            sys.exit(entry["memory_error"])
    if args.output.exists():
        print(table(json.loads(args.output.read_text())["results"]))


if __name__ == "__main__":
    main()
