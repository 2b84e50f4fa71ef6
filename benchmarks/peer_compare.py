"""Head-to-head on two third-party checkpoints: bsnn_tf (bsnn, phase, rate) against SpikingJelly.

For akamaster's ResNet-20 (CIFAR-10, 1,900 lossless test images) and
snn_toolbox's LeNet-5 (MNIST test set), loaded into Keras from
pretrained/thirdparty, the script checks the ANN accuracy (90.89% and 99.14%
on the full sets), converts with bsnn_tf and simulates each SNN once, reading
the accuracy at T = 8, 16, ..., 1024. Methods:
- bsnn: the library's defaults (period mode), or --phases etc. to override;
- phase (Kim et al. 2018, K = 8) and rate (Rueckauer et al. 2017), step mode;
- spikingjelly:<mode>: SpikingJelly 2.0's rate-coding conversion,
  `ann2snn.FXConverter(recipe=RateCodingRecipe(dataloader, mode))`, soft-reset
  IF neurons, constant input, on torch copies of the same weights (ResNet-20's
  option-A shortcuts as a fixed 1x1 stride-2 convolution, which SpikingJelly's
  FX tracer accepts where it refuses F.pad). The torch ANN must score exactly
  what the Keras ANN scores. Needs torch and spikingjelly (benchmark extras only).

T* is the smallest T of the grid from which accuracy stays within 0.1 pp of the
ANN (on the images used). Each (model, method) is merged into
benchmarks/results/peer_compare.json with its command line, date, machine and
image count, so methods can run as separate commands on different subsets; the
table is printed and docs/peer_compare_<model>.png redrawn from the whole file.

Usage (from the repository root):
    python benchmarks/peer_compare.py --limit 100                   # CPU smoke run
    python benchmarks/peer_compare.py                               # everything (GPU)
    python benchmarks/peer_compare.py --models lenet5 --limit 2000 \
        --methods bsnn rate spikingjelly:99.99%
    python benchmarks/peer_compare.py --report                      # table and plots only
"""

import argparse
import copy
import json
import time

import numpy as np

import common

import bsnn_tf
from bsnn_tf.models import thirdparty

OUTPUT = common.RESULTS_DIR / "peer_compare.json"
FULL_SIZE = {"resnet20": 1900, "lenet5": 10000}
BATCH_SIZE = {"resnet20": 128, "lenet5": 1000}
METHODS = ["bsnn", "phase", "rate", "spikingjelly:99.99%", "spikingjelly:Max"]
PHASE_BASELINE_PHASES = 8
SPIKINGJELLY_CALIBRATION_BATCH = 100


def bsnn_tf_accuracies(task, method, timesteps, args):
    """({T: accuracy}, settings, seconds of the simulation) of a bsnn_tf conversion."""
    overrides = {name: getattr(args, name) for name in
                 ("phases", "percentile", "initial_membrane", "readout_delay")
                 if getattr(args, name) is not None}
    runner = BsnnTf(task, method, overrides, xla=args.xla)
    mode = "step" if any(t % runner.snn.phases for t in timesteps) else runner.snn.mode
    start = time.perf_counter()
    accuracies = runner.accuracies(task.x_test, task.y_test, timesteps, mode)
    return accuracies, {**runner.settings, "mode": mode}, time.perf_counter() - start


def spikingjelly_accuracies(task, norm_mode, timesteps, keras_accuracy):
    """({T: accuracy}, settings, seconds of conversion and simulation) of SpikingJelly's rate
    coding on the same weights."""
    start = time.perf_counter()
    runner = SpikingJelly(task, norm_mode, keras_accuracy)
    accuracies = runner.accuracies(task.x_test, task.y_test, timesteps)
    return accuracies, runner.settings, time.perf_counter() - start


class BsnnTf:
    """A bsnn_tf conversion of `task.ann` ("bsnn", "phase" or "rate"), evaluated through the
    public API: `bsnn_tf.evaluate`, or `bsnn_tf.simulate(jit_compile=True)` with `xla`.

    `overrides` (bsnn only): convert's phases, percentile, initial_membrane, readout_delay.
    """

    def __init__(self, task, method, overrides=None, xla=False, batch_size=None):
        self.settings = {"method": method}
        if method == "phase":
            self.settings["phases"] = PHASE_BASELINE_PHASES
        if method == "bsnn":
            self.settings.update(overrides or {})
        self.snn = bsnn_tf.convert(task.ann, task.calibration, verbose=0,
                                   **{"calibration": "percentile", **self.settings})
        self.settings.update({"phases": self.snn.phases, "depth": self.snn.depth})
        self.xla = xla
        self.batch_size = batch_size or BATCH_SIZE[task.name]

    def accuracies(self, x, y, timesteps, mode=None):
        """{T: top-1 accuracy} on (x, y) at every T of `timesteps`, from one simulation."""
        batch_size = min(self.batch_size, len(y))
        if not self.xla:
            return bsnn_tf.evaluate(self.snn, x, y, timesteps, mode=mode, batch_size=batch_size,
                                    verbose=0)
        result = bsnn_tf.simulate(self.snn, x, timesteps=max(timesteps), mode=mode,
                                  checkpoints=timesteps, batch_size=batch_size,
                                  jit_compile=True, verbose=0)
        return {t: result.accuracy(y, t) for t in timesteps}


class SpikingJelly:
    """SpikingJelly 2.0's rate-coding conversion of the torch copy of `task.ann`:
    `ann2snn.FXConverter(recipe=RateCodingRecipe(loader, norm_mode))`, on CUDA when torch
    sees a GPU. Refuses a torch copy that scores other than `keras_accuracy`."""

    def __init__(self, task, norm_mode, keras_accuracy, batch_size=None):
        import torch
        from spikingjelly.activation_based import ann2snn

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda":  # float32 convolutions, not TF32: the ANN check is exact
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.batch_size = batch_size or BATCH_SIZE[task.name]
        ann = TORCH_ANNS[task.name](task).to(self.device).eval()
        torch_accuracy = _torch_ann_accuracy(ann, _nchw(task.x_test), task.y_test, self.device)
        if torch_accuracy != keras_accuracy:
            raise RuntimeError(f"{task.name}: torch ANN {torch_accuracy:.4%} != Keras ANN "
                               f"{keras_accuracy:.4%}; the torch copy is not the same network.")
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(_nchw(task.calibration)),
            batch_size=SPIKINGJELLY_CALIBRATION_BATCH)
        recipe = ann2snn.RateCodingRecipe(dataloader=loader, mode=norm_mode)
        self.snn = ann2snn.FXConverter(recipe=recipe, device=self.device).convert(
            copy.deepcopy(ann))
        self.settings = {"method": "spikingjelly", "mode": norm_mode, "device": self.device,
                         "torch_ann_accuracy": torch_accuracy,
                         "calibration_batch": SPIKINGJELLY_CALIBRATION_BATCH}

    def accuracies(self, x, y, timesteps, mode=None):
        """{T: top-1 accuracy} on (x, y) at every T of `timesteps`: per batch, what
        SpikingJelly's ann2snn examples run (reset, then the outputs of T single-step
        passes summed)."""
        import torch
        from spikingjelly.activation_based import functional

        del mode  # one mode: every time step
        x = _nchw(x)
        correct = dict.fromkeys(timesteps, 0)
        with torch.no_grad():
            for begin in range(0, len(x), self.batch_size):
                images = x[begin:begin + self.batch_size].to(self.device)
                labels = torch.from_numpy(np.asarray(y[begin:begin + len(images)])).to(
                    self.device)
                functional.reset_net(self.snn)
                summed = 0
                for step in range(1, max(timesteps) + 1):
                    summed = summed + self.snn(images)
                    if step in correct:
                        correct[step] += int((summed.argmax(dim=1) == labels).sum())
        return {t: c / len(x) for t, c in correct.items()}


def _nchw(images):
    """A torch tensor of channels-last numpy images, channels first."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _torch_ann_accuracy(ann, x_test, y_test, device):
    import torch

    with torch.no_grad():
        logits = torch.cat([ann(x_test[i:i + 500].to(device)).cpu()
                            for i in range(0, len(x_test), 500)])
    return float(np.mean(logits.argmax(dim=1).numpy() == y_test))


def torch_resnet20(task):
    """akamaster's ResNet-20 in torch from the same .npz, option-A shortcuts as fixed convs."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, in_planes, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Identity()
            if stride != 1 or in_planes != planes:
                self.shortcut = _channel_embedding(in_planes, planes, stride)
            self.relu2 = nn.ReLU()

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            return self.relu2(out + self.shortcut(x))

    def _channel_embedding(in_planes, planes, stride):
        """x[:, :, ::2, ::2] zero-padded with (planes - in_planes) // 2 channels each side."""
        conv = nn.Conv2d(in_planes, planes, 1, stride, bias=False)
        weight = torch.zeros(planes, in_planes, 1, 1)
        pad = (planes - in_planes) // 2
        weight[torch.arange(in_planes) + pad, torch.arange(in_planes)] = 1.0
        conv.weight = nn.Parameter(weight, requires_grad=False)
        return conv

    def stage(in_planes, planes, stride):
        return nn.Sequential(BasicBlock(in_planes, planes, stride),
                             BasicBlock(planes, planes, 1), BasicBlock(planes, planes, 1))

    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 16, 3, 1, 1, bias=False))
    model.add_module("bn1", nn.BatchNorm2d(16))
    model.add_module("relu", nn.ReLU())
    model.add_module("layer1", stage(16, 16, 1))
    model.add_module("layer2", stage(16, 32, 2))
    model.add_module("layer3", stage(32, 64, 2))
    model.add_module("avgpool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    model.add_module("linear", nn.Linear(64, 10))
    with np.load(thirdparty.AKAMASTER_RESNET20) as arrays:
        state_dict = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    fixed = {"layer2.0.shortcut.weight", "layer3.0.shortcut.weight"}
    if unexpected or {key for key in missing if "num_batches_tracked" not in key} != fixed:
        raise RuntimeError(f"ResNet-20 state dict mismatch: missing {missing}, "
                           f"unexpected {unexpected}")
    return model


def torch_lenet5(task):
    """snn_toolbox's LeNet-5 in torch (NCHW) with the Keras model's weights.

    The Keras model flattens (H, W, C); torch flattens (C, H, W), so the first
    Dense kernel's rows are permuted to match: same function, NCHW layout.
    """
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5, padding=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(1920, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    keras_layers = ["conv2d_1", "conv2d_2", "conv2d_3", "dense_1", "dense_2"]
    torch_layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    for name, layer in zip(keras_layers, torch_layers):
        kernel, bias = task.ann.get_layer(name).get_weights()
        if kernel.ndim == 4:
            kernel = kernel.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
        elif name == "dense_1":
            height, width, channels = task.ann.get_layer("conv2d_3").output.shape[1:]
            kernel = kernel.reshape(height, width, channels, -1).transpose(3, 2, 0, 1)
            kernel = kernel.reshape(kernel.shape[0], -1)  # rows in (C, H, W) order
        else:
            kernel = kernel.T
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(kernel))
        layer.bias.data = torch.from_numpy(bias)
    return model


TORCH_ANNS = {"resnet20": torch_resnet20, "lenet5": torch_lenet5}


def run(args):
    timesteps = [t for t in common.POWER_OF_TWO_GRID if t <= args.max_timesteps]
    for model in args.models:
        task = common.load_task(model, args.limit, calibration_size=args.calibration_size)
        ann_accuracy = common.ann_accuracy(task)
        common.check_ann_accuracy(task, ann_accuracy, FULL_SIZE[model])
        print(f"{model}: Keras ANN {common.percent(ann_accuracy)}% on {len(task.y_test)} "
              "images", flush=True)
        for method in args.methods:
            if method.startswith("spikingjelly:"):
                accuracies, settings, seconds = spikingjelly_accuracies(
                    task, method.split(":", 1)[1], timesteps, ann_accuracy)
            else:
                accuracies, settings, seconds = bsnn_tf_accuracies(task, method, timesteps, args)
            entry = {"model": model, "images": len(task.y_test), "ann_accuracy": ann_accuracy,
                     "calibration_images": len(task.calibration),
                     "settings": settings, "accuracy": accuracies,
                     "t_star": common.t_star(accuracies, ann_accuracy),
                     "seconds": round(seconds, 1), **common.run_header()}
            key = f"{model} {method}" + (f" K={settings['phases']}" if method == "bsnn" else "")
            common.update_json(args.output, key, entry)
            print(f"  {key}: T*={entry['t_star']} ({seconds:.0f} s)", flush=True)


def table(results):
    """Markdown: model, method, images, ANN accuracy, accuracy per T, T*."""
    grid = common.POWER_OF_TWO_GRID
    rows = []
    for key in sorted(results, key=_order):
        entry = results[key]
        accuracy = {int(t): a for t, a in entry["accuracy"].items()}
        rows.append([entry["model"], _label(key, entry), entry["images"],
                     common.percent(entry["ann_accuracy"]),
                     *[common.percent(accuracy.get(t)) for t in grid],
                     entry["t_star"] or f"none <= {max(accuracy)}"])
    headers = ["model", "method", "images", "ANN", *[f"T={t}" for t in grid], "T*"]
    return common.markdown_table(headers, rows)


def plot(results, name):
    """docs/<name>_<model>.png (name: the JSON file's): accuracy vs T of every method."""
    for model in sorted({entry["model"] for entry in results.values()}):
        entries = {key: e for key, e in results.items() if e["model"] == model}
        curves = {f"{_label(key, e)} ({e['images']} images)":
                  {int(t): a for t, a in e["accuracy"].items()}
                  for key, e in sorted(entries.items(), key=lambda item: _order(item[0]))}
        reference = max(entries.values(), key=lambda e: e["images"])
        title = (f"{common.TITLES[model]}: ANN {common.percent(reference['ann_accuracy'])}%"
                 f" on {reference['images']} images")
        common.plot_accuracy_vs_t(curves, reference["ann_accuracy"], title,
                                  common.DOCS_DIR / f"{name}_{model}.png")


def _label(key, entry):
    settings = entry["settings"]
    if settings["method"] == "spikingjelly":
        return f"SpikingJelly rate, {settings['mode']}"
    if settings["method"] == "bsnn":
        return f"bsnn_tf BSNN, K={settings['phases']}"
    if settings["method"] == "phase":
        return f"bsnn_tf phase, K={settings['phases']}"
    return "bsnn_tf rate"


def _order(key):
    """Sorts by model, then as METHODS lists the methods."""
    model, method = key.split(" ", 1)
    return model, METHODS.index(method.split(" ")[0]), method


def report(output):
    results = json.loads(output.read_text())["results"]
    print(table(results))
    plot(results, output.stem)


def add_task_arguments(parser, methods):
    """The options this script shares with time_to_accuracy.py: models, methods, images, grid."""
    parser.add_argument("--models", nargs="+", default=["resnet20", "lenet5"],
                        choices=["resnet20", "lenet5"])
    parser.add_argument("--methods", nargs="+", default=methods,
                        help="bsnn, phase, rate, spikingjelly:<Max|99.9%%|99.99%%>")
    parser.add_argument("--limit", type=int, help="first N test images (default: all)")
    parser.add_argument("--calibration_size", type=int,
                        help="calibration images (default: the task's own count)")
    parser.add_argument("--max_timesteps", type=int, default=max(common.POWER_OF_TWO_GRID),
                        help="end of the T grid 8, 16, ...")
    parser.add_argument("--xla", action="store_true",
                        help="XLA-compile bsnn_tf simulations (faster for these nets on a CPU)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_task_arguments(parser, METHODS)
    parser.add_argument("--phases", type=int, help="bsnn: K (default: the library's)")
    parser.add_argument("--percentile", type=float, help="bsnn: data-norm percentile")
    parser.add_argument("--initial_membrane", type=float, help="bsnn: membrane at rest")
    parser.add_argument("--readout_delay", type=int, help="bsnn: extra readout periods")
    common.add_output_arguments(parser, OUTPUT)  # plots are named after --output
    common.run_or_report(parser.parse_args(), run, report)


if __name__ == "__main__":
    main()
