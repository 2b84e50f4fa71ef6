"""Time to accuracy: wall time to evaluate the same test images at each method's own T*.

On akamaster's ResNet-20 (CIFAR-10, 1,900 lossless test images) and
snn_toolbox's LeNet-5 (MNIST test set), in one process, on the same threads
and the same images, with the same batch size:
- the ANN (`ann.predict`), the reference for the ratio below;
- bsnn_tf BSNN (library defaults, period mode) through `bsnn_tf.evaluate`;
- bsnn_tf's rate and phase baselines (step mode), the same way;
- SpikingJelly 2.0's rate-coding conversion (`ann2snn.FXConverter` with
  `RateCodingRecipe`, 99.99% norm; torch, CUDA when torch sees a GPU), where
  spikingjelly is importable, run as its ann2snn examples run it: T single-step
  forward passes per batch, summed.
The conversions and networks are peer_compare.py's (`BsnnTf`, `SpikingJelly`).

T* of a method is the smallest T of the power-of-two grid 8, 16, ..., 1024 from
which accuracy stays within 0.1 pp of the ANN (the peer comparison's grid, the
same for every method). By default it is read from peer_compare.py's results
(`--t_star_from`: the first file that holds the method); a method stored there
with no T* ("none <= 1024") is timed at --max_timesteps, a lower bound of its
time to accuracy; a method stored nowhere, or
every method with `--t_star measure`, gets T* measured in this run on the same
images (untimed). The output says which for each row.

Each method is converted (timed apart), warmed up on one batch at its T
(compilation), then timed over all images in one call. Reported: images per
second, the speed-up over SpikingJelly (target on a CPU: BSNN >= 10 x), and
for the BSNN (throughput x periods) / ANN throughput with periods = T / K, the
periods a T-step period-mode evaluation simulates.

Results are merged into benchmarks/results/time_to_accuracy.json (folder:
$BSNN_RESULTS_DIR if set), one entry per model, image count and device, with the
command line, date, machine and thread counts; `--report` prints the table.

Usage (from the repository root):
    python benchmarks/time_to_accuracy.py --limit 200                # CPU, a subset
    python benchmarks/time_to_accuracy.py                            # everything (GPU)
    KERAS_BACKEND=jax python benchmarks/time_to_accuracy.py --smoke  # seconds: code paths only
    python benchmarks/time_to_accuracy.py --report                   # table only
"""

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time
import traceback

import common

import bsnn_tf
import peer_compare

OUTPUT = common.RESULTS_DIR / "time_to_accuracy.json"
PEER_RESULTS = list(dict.fromkeys([common.RESULTS_DIR / "peer_compare.json",
                                   common.STORED_RESULTS_DIR / "peer_compare.json"]))
METHODS = ["bsnn", "phase", "rate", "spikingjelly:99.99%"]
SMOKE = {"limit": 4, "calibration_size": 32, "max_timesteps": 8, "batch_size": 4}
ANN_REPEATS = 3


def stored_t_star(model, method, paths):
    """(T* or None, where it comes from) as peer_compare.py stored it, from the first of `paths`
    that holds the method; (None, None) if none does."""
    key = f"{model} {method}"
    if method == "bsnn":
        key += f" K={bsnn_tf.DEFAULT_PHASES['bsnn']}"
    for path in paths:
        if path.exists():
            entry = json.loads(path.read_text())["results"].get(key)
            if entry:
                end = max(map(int, entry["accuracy"]))
                return entry["t_star"], f"{path.stem}, {entry['images']} images, grid end {end}"
    return None, None


def runner(task, method, ann_accuracy, args):
    """peer_compare's network for `method`, converted from `task.ann`."""
    if method.startswith("spikingjelly:"):
        return peer_compare.SpikingJelly(task, method.split(":", 1)[1], ann_accuracy,
                                         batch_size=args.batch_size)
    return peer_compare.BsnnTf(task, method, xla=args.xla, batch_size=args.batch_size)


def timesteps_to_time(net, model, method, task, ann_accuracy, args):
    """(T to time, T*, where T* comes from), with T* measured here where not stored."""
    t_star, source = (None, None) if args.t_star == "measure" else \
        stored_t_star(model, method, args.t_star_from)
    if source is None:
        grid = [t for t in common.POWER_OF_TWO_GRID if t <= args.max_timesteps]
        t_star = common.t_star(net.accuracies(task.x_test, task.y_test, grid), ann_accuracy)
        source = f"measured here, {len(task.y_test)} images, grid end {grid[-1]}"
    if t_star is None:
        return args.max_timesteps, None, f"no T*: {source}"
    if t_star > args.max_timesteps:
        return args.max_timesteps, t_star, f"T* {t_star} capped: {source}"
    return t_star, t_star, f"T*: {source}"


def time_method(task, method, ann_accuracy, args):
    """The result of one method: T, T* and its source, accuracy, seconds, images/s."""
    start = time.perf_counter()
    net = runner(task, method, ann_accuracy, args)
    convert_seconds = time.perf_counter() - start
    timesteps, t_star, source = timesteps_to_time(net, task.name, method, task, ann_accuracy,
                                                  args)
    if method == "bsnn":
        phases = net.snn.phases
        timesteps = -(-timesteps // phases) * phases  # period mode runs whole periods
    batch = slice(0, min(args.batch_size, len(task.y_test)))
    accuracies = {}
    load_before = os.getloadavg()[0]
    images_per_second = common.throughput(
        lambda: accuracies.update(net.accuracies(task.x_test, task.y_test, [timesteps])),
        len(task.y_test),
        warm_up=lambda: net.accuracies(task.x_test[batch], task.y_test[batch], [timesteps]))
    result = {"timesteps": timesteps, "t_star": t_star, "t_star_source": source,
              "accuracy": accuracies[timesteps], "settings": net.settings,
              "convert_seconds": round(convert_seconds, 2),
              "seconds": round(len(task.y_test) / images_per_second, 3),
              "images_per_second": images_per_second,
              "load_average": [load_before, os.getloadavg()[0]]}  # 1-minute, around the timing
    if isinstance(net, peer_compare.BsnnTf):
        result["mode"] = net.snn.mode
    if method == "bsnn":
        result["periods"] = timesteps // phases
    return result


def run_model(model, args):
    """Times every method on one model; the entry stored in the JSON, and the errors."""
    task = common.load_task(model, args.limit, calibration_size=args.calibration_size)
    ann_accuracy = common.ann_accuracy(task)
    common.check_ann_accuracy(task, ann_accuracy, peer_compare.FULL_SIZE[model])
    images = len(task.y_test)
    ann_images_per_second = common.throughput(
        lambda: task.ann.predict(task.x_test, batch_size=args.batch_size, verbose=0),
        images, repeats=ANN_REPEATS)
    print(f"{model}: ANN {common.percent(ann_accuracy)}% on {images} images, "
          f"{ann_images_per_second:.1f} images/s", flush=True)
    methods, errors = {}, []
    for method in args.methods:
        if method.startswith("spikingjelly:") and not importlib.util.find_spec("spikingjelly"):
            print(f"  {method}: spikingjelly is not importable; skipped", flush=True)
            continue
        try:
            methods[method] = result = time_method(task, method, ann_accuracy, args)
        except Exception:  # noqa: BLE001  (the other methods still run and are stored)
            traceback.print_exc()
            errors.append(f"{model} {method}")
            continue
        if "periods" in result:
            result["periods_x_throughput_over_ann"] = (
                result["images_per_second"] * result["periods"] / ann_images_per_second)
        print(f"  {method}: T={result['timesteps']} ({result['t_star_source']}), "
              f"{common.percent(result['accuracy'])}%, {result['seconds']:.2f} s, "
              f"{result['images_per_second']:.1f} images/s", flush=True)
    reference = next((r for m, r in methods.items() if m.startswith("spikingjelly:")), None)
    for result in methods.values():
        if reference:
            result["x_spikingjelly"] = result["images_per_second"] / reference["images_per_second"]
    entry = {"model": model, "images": images, "batch_size": args.batch_size,
             "calibration_images": len(task.calibration),
             "ann_accuracy": ann_accuracy, "ann_images_per_second": ann_images_per_second,
             "methods": methods, "smoke": args.smoke, "runtime": runtime(),
             "device": common.device_label(), **common.run_header()}
    return entry, errors


def runtime():
    """The thread pools the methods ran on, and the float32 convolution precision of JAX."""
    pools = {"cpu_count": os.cpu_count(), "keras_backend": common.keras.backend.backend(),
             "jax_default_matmul_precision": os.environ.get("JAX_DEFAULT_MATMUL_PRECISION")}
    if "torch" in sys.modules:
        pools["torch_threads"] = sys.modules["torch"].get_num_threads()
    if common.keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        pools["tensorflow_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        pools["tensorflow_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    return pools


def run(args):
    failed = []
    for model in args.models:
        args.batch_size = args.batch or peer_compare.BATCH_SIZE[model]
        if args.smoke:
            args.batch_size = min(args.batch_size, SMOKE["batch_size"])
        entry, errors = run_model(model, args)
        key = f"{model} n={entry['images']} {entry['device']}" + (" smoke" if args.smoke else "")
        if args.tag:
            entry["tag"] = args.tag
            key += f" [{args.tag}]"
        common.update_json(args.output, key, entry)
        failed += errors
    return failed


def table(results):
    """Markdown: one row per model, device and method, with the ANN first."""
    rows = []
    for key in sorted(results):
        entry = results[key]
        label = entry["device"] + (" (smoke)" if entry.get("smoke") else "") + (
            f" [{entry['tag']}]" if entry.get("tag") else "")
        rows.append([entry["model"], entry["images"], label, "ANN (`predict`)", "-",
                     common.percent(entry["ann_accuracy"]), "-",
                     _rate(entry["ann_images_per_second"]), "-", "-"])
        for method, result in entry["methods"].items():
            ratio = result.get("periods_x_throughput_over_ann")
            rows.append([entry["model"], entry["images"], label, _label(method, result),
                         f"{result['timesteps']} ({result['t_star_source']})",
                         common.percent(result["accuracy"]), f"{result['seconds']:.2f}",
                         _rate(result["images_per_second"]),
                         f"{result['x_spikingjelly']:.2f}" if "x_spikingjelly" in result
                         else "-", "-" if ratio is None else f"{ratio:.2f}"])
    headers = ["model", "images", "device", "method", "T timed (T* from)", "accuracy there",
               "seconds", "images/s", "x SpikingJelly", "throughput x periods / ANN"]
    return common.markdown_table(headers, rows)


def _rate(images_per_second):
    return f"{images_per_second:.{1 if images_per_second >= 10 else 2}f}"


def _label(method, result):
    settings = result["settings"]
    mode = result.get("mode", "period" if method == "bsnn" else "step")
    if method.startswith("spikingjelly:"):
        return f"SpikingJelly rate, {settings['mode']} ({settings['device']})"
    if method == "bsnn":
        return f"bsnn_tf BSNN, K={settings['phases']}, {mode} mode"
    if method == "phase":
        return f"bsnn_tf phase, K={settings['phases']}, {mode} mode"
    return f"bsnn_tf rate, {mode} mode"


def report(output):
    print(table(json.loads(output.read_text())["results"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peer_compare.add_task_arguments(parser, METHODS)  # --max_timesteps: no method runs past it
    parser.add_argument("--batch", type=int,
                        help="batch size of every method (default: peer_compare's per model)")
    parser.add_argument("--t_star", choices=["stored", "measure"], default="stored",
                        help="read T* from --t_star_from (measuring what is missing), or "
                             "measure every T* in this run")
    parser.add_argument("--t_star_from", nargs="+", type=pathlib.Path, default=PEER_RESULTS,
                        help="peer_compare.py results, first match wins")
    parser.add_argument("--tag", help="a label for this run, in its key and its table rows")
    parser.add_argument("--smoke", action="store_true",
                        help=f"code paths only, in seconds: {SMOKE} unless given")
    common.add_output_arguments(parser, OUTPUT)
    args = parser.parse_args()
    if args.smoke:
        common.apply_smoke(parser, args, SMOKE, keep=("batch_size",))
    failed = [] if args.report else run(args)
    report(args.output)
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (the other methods are stored)")


if __name__ == "__main__":
    main()
