"""Memory bounded by the model and the batch, not by the number of images or periods (issue 23).

`bsnn_tf.simulate` reduces spike counts and SIN batch by batch and keeps only
per-image totals; the default batch keeps the simulation state within
`simulator.STATE_BYTES`; a chunk holds a few copies of the largest layer's
output over its periods, up to `schedule.CHUNK_BYTES`. convert.py, run in a
fresh process under benchmarks/peak_rss.py, must then peak at the same memory
for 200 or 3,000 images and for 256 or 1,024 time steps. (The code before issue 23 kept every
image's spike count and ANN activation per unit until a block of images was
done: about 0.5 GB more for the 3,000 images here.)
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf import data, runs, simulator
from bsnn_tf.conversion import ActivationStatistics
from bsnn_tf.schedule import MAX_CHUNK_PERIODS
from conftest import REPO

# Peak resident memory may differ by this much between runs that hold the same arrays
# (allocator pools, the images and logits themselves).
SLACK_BYTES = 150 << 20


@pytest.fixture(scope="module")
def demo():
    ann = keras.models.load_model(runs.DEMO_CHECKPOINT, compile=False)
    x, _ = data.load("mnist", "test", data.DEMO_DIR, limit=40)
    snn = bsnn_tf.convert(ann, x[:20], phases=4, timesteps=16, verbose=0)
    return ann, snn, x


def peak_rss(tmp_path, shared_data, name, *args):
    """Peak RSS in bytes of `python convert.py ARGS` (MNIST demo CNN, shared data)."""
    out = tmp_path / f"{name}.json"
    command = [sys.executable, str(REPO / "benchmarks" / "peak_rss.py"), str(out),
               str(REPO / "convert.py"), f"--data_dir={shared_data}", "--calibration_size=100",
               f"--output_dir={tmp_path / name}", *args]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text())["peak_rss_bytes"]


def test_convert_py_memory_does_not_grow_with_images_or_periods(tmp_path, shared_data):
    base = peak_rss(tmp_path, shared_data, "base", "--limit=200", "--timesteps=16")
    images = peak_rss(tmp_path, shared_data, "images", "--limit=3000", "--timesteps=16",
                      "--statistics_images=0")
    mb = lambda b: f"{b / 2**20:.0f} MB"
    assert images - base < SLACK_BYTES, f"200 images: {mb(base)}, 3,000: {mb(images)}"
    # A chunk grows with T up to its budget (schedule.CHUNK_BYTES), reached here by T = 256.
    short = peak_rss(tmp_path, shared_data, "short", "--limit=100", "--timesteps=256",
                     "--statistics_images=50")
    long = peak_rss(tmp_path, shared_data, "long", "--limit=100", "--timesteps=1024",
                    "--statistics_images=50")
    assert long - short < SLACK_BYTES, f"T = 256: {mb(short)}, T = 1,024: {mb(long)}"
    assert long - base < bsnn_tf.schedule.CHUNK_BYTES + SLACK_BYTES


def test_statistics_reduced_batch_by_batch_match_the_trace_and_the_ann(demo):
    ann, snn, x = demo
    kwargs = dict(timesteps=16, ann=ann, trace=True, count_window="whole", verbose=0)
    whole = bsnn_tf.simulate(snn, x, batch_size=40, **kwargs)
    batched = bsnn_tf.simulate(snn, x, batch_size=8, **kwargs)
    for name in whole.spike_counts:
        np.testing.assert_array_equal(batched.spike_counts[name], whole.spike_counts[name])
        np.testing.assert_array_equal(batched.unit_spike_counts[name],
                                      whole.unit_spike_counts[name])
    # SIN from the trace and the ANN's own activations, independently of the totals.
    activations = keras.Model(ann.inputs, [ann.get_layer(snn.ann_layers[n]).output
                                           for n in batched.sin]).predict(x, verbose=0)
    for (name, (spiked, inactive)), activation in zip(batched.sin.items(), activations):
        fired = np.any(whole.trace[name] > 0, axis=1)
        assert inactive == np.sum(activation <= 0) > 0
        assert spiked == np.sum((activation <= 0) & fired), name


def test_the_default_batch_keeps_the_state_within_its_budget(demo):
    _, snn, _ = demo
    # The state by hand (conv1 reads the image, so its output is a constant current): two
    # membranes and a spike counter per BIF unit, each gate's running totals of its
    # input, the readout's totals.
    units = lambda name: int(np.prod(snn.unit_shapes[name]))
    inputs = dict((name, sources) for name, sources in snn.topology)
    floats = units("conv1") + snn.readout.bias.shape[0]
    floats += sum(3 * units(layer.name) for layer in snn.spiking_layers())
    floats += sum(units(inputs[name][0]) for name in ("pool1", "pool2"))
    assert snn.state_bytes() == 4 * floats
    per_image = snn.state_bytes()
    assert simulator.default_batch_size(snn, budget=10 * per_image) == 10
    assert simulator.default_batch_size(snn, budget=10 * per_image - 1) == 9
    assert simulator.default_batch_size(snn, budget=1) == 1
    assert simulator.default_batch_size(snn) == simulator.MAX_BATCH  # a small net


def test_a_logits_only_run_to_the_first_readout_is_one_compiled_chunk(demo):
    _, snn, _ = demo
    periods = snn.first_readout // snn.phases
    length = snn.chunk_length(64, periods, period_mode=True, logits_only=True)
    assert length == periods
    assert len(snn.chunk_starts(periods, length, True, logits_only=True)) == 1
    # Counting spikes, every layer runs to the end: chunks are sized by the budget.
    largest = max(int(np.prod(s)) for s in snn.unit_shapes.values())
    one_period = bsnn_tf.schedule.LIVE_OUTPUTS * 64 * largest * 4
    assert snn.chunk_length(64, 40, True, budget=4 * one_period) == 4
    assert snn.chunk_length(64, 40, True, budget=3 * one_period) == 3  # 40 in 14 chunks of 3


@pytest.mark.parametrize("percentile, channelwise", [(99.99, False), (100.0, False),
                                                     (99.0, True)])
def test_calibration_statistics_keep_only_the_top_values(percentile, channelwise):
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((10, 20, 20, 4)).astype("float32") for _ in range(50)]
    totals = [50 * 10 * 20 * 20 * (1 if channelwise else 4)]
    stats = ActivationStatistics(["relu"], totals, percentile, channelwise)
    kept = []
    for index, batch in enumerate(batches):
        stats.on_predict_batch_end(index, {"outputs": [np.maximum(batch, 0)]})
        kept.append(len(stats.top[0]))

    # 800,000 values (200,000 per channel): the top 81 (p = 99.99), 1 (the maximum), or
    # 2,001 per channel (p = 99), whatever the number of batches.
    assert max(kept) == stats.keep[0] == {99.99: 81, 100.0: 1, 99.0: 2001}[percentile]
    values = np.maximum(np.stack(batches), 0).reshape(-1, 4)
    expected = np.percentile(values, percentile, axis=0) if channelwise else np.percentile(
        values, percentile)
    np.testing.assert_allclose(stats.result()["relu"], expected, rtol=1e-6)
    largest = values.max(axis=0) if channelwise else values.max()
    np.testing.assert_array_equal(stats.maxima()["relu"], largest)


@pytest.mark.parametrize("percentile", [100.0, 90.0])
def test_calibration_statistics_show_a_nan_of_a_late_batch(percentile):
    """Values at or below the kept ones are passed over, but a NaN is not: the maximum
    still shows it, so calibration stops with its NaN error."""
    stats = ActivationStatistics(["relu"], totals=[2000], percentile=percentile)
    stats.on_predict_batch_end(0, {"outputs": [np.arange(1000, dtype="float32")]})
    late = np.zeros(1000, "float32")
    late[5] = np.nan
    stats.on_predict_batch_end(1, {"outputs": [late]})
    assert np.isnan(stats.maxima()["relu"])
    assert np.isnan(stats.result()["relu"]) == (percentile == 100.0)


def dense_stack(blocks=12, growth=2):
    """A DenseNet-like stack, deeper in BIF layers than two chunks have periods: dense
    blocks of two units, each concatenating a Conv + BN + ReLU branch to what came before,
    with a Conv + ReLU transition after each block (so few synchronous layers)."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.ReLU()(L.Conv2D(4, 3, padding="same")(inputs))
    for _ in range(blocks):
        for _ in range(2):
            y = L.ReLU()(L.BatchNormalization()(L.Conv2D(growth, 3, padding="same")(x)))
            x = L.Concatenate()([x, y])
        x = L.ReLU()(L.Conv2D(4, 1)(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(10)(x))


def simulation_peak_rss(*timesteps):
    """[{"peak": bytes, "depth": D}] per T: the peak RSS of a fresh process (run side by side)
    that converts `dense_stack` and simulates it (K = 8, 4 images, spikes counted) T steps."""
    processes = [subprocess.Popen([sys.executable, __file__, str(t)], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=dict(os.environ, PYTHONPATH=str(REPO)))
                 for t in timesteps]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.splitlines()[-1]))
    return results


def test_memory_is_flat_in_t_on_a_deep_concatenating_net():
    # Before, the chunks at the head (up to 8) were compiled each on its own, about 1 MB
    # of memory per layer each: T = 2,048 compiled four programs here, DenseNet-121 nine
    # (over 11 GB). Now any T from 512 on compiles the same two: the head chunk and the
    # shared one. T = 256 is not the baseline: its whole run is one static chunk, which
    # spares it the shared program's one-time compile (0.35 GB here on a CPU with AMX,
    # where T = 2,048 peaks at 1.43x T = 256; 1.2x on the CPUs before it).
    short, long = simulation_peak_rss(512, 4096)
    assert short["depth"] > 2 * MAX_CHUNK_PERIODS  # the shared program runs at the head too
    mb = lambda b: f"{b / 2**20:.0f} MB"
    assert long["peak"] <= 1.2 * short["peak"], (f"T = 512: {mb(short['peak'])}, "
                                                 f"T = 4,096: {mb(long['peak'])}")


@pytest.mark.jax
@pytest.mark.parametrize("count_spikes, count_window", [(False, "schedule"), (True, "schedule"),
                                                        (True, "whole")])
def test_a_simulation_compiles_the_same_two_programs_for_any_t(count_spikes, count_window):
    keras.utils.set_random_seed(0)
    ann = keras.Sequential([keras.Input((4, 4, 1))] + [
        keras.layers.Conv2D(2, 3, padding="same", activation="relu") for _ in range(10)] + [
        keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(0).uniform(0, 1, (8, 4, 4, 1)).astype("float32")
    snn = bsnn_tf.convert(ann, x, phases=2, verbose=0)
    compiled = []
    for periods in (3, 2 * snn.depth):  # ending inside the head, and long after it
        simulator._COMPILED.pop(snn, None)
        bsnn_tf.simulate(snn, x[:2], timesteps=2 * periods, chunk=1, count_spikes=count_spikes,
                         count_window=count_window, verbose=0)
        (run_chunks, _), = simulator._COMPILED[snn].values()
        compiled.append(set(run_chunks))
    # Before, every chunk that skips a layer was compiled on its own, up to 8 at each end:
    # 3 programs, then 9 (17 in the logits-only run).
    assert snn.depth > 8
    assert [len(programs) for programs in compiled] == [2, 2], compiled
    # The light cone's trailing edge too, unless spikes are counted over the whole run.
    dynamic = bsnn_tf.schedule.DYNAMIC
    whole = count_spikes and count_window == "whole"
    assert (dynamic, None if whole else dynamic) in compiled[0] & compiled[1]


if __name__ == "__main__":  # the measured process of simulation_peak_rss
    import resource

    timesteps = int(sys.argv[1])
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 3)).astype("float32")
    snn = bsnn_tf.convert(dense_stack(), x, phases=8, timesteps=timesteps, verbose=0)
    bsnn_tf.simulate(snn, x[:4], timesteps=timesteps, verbose=0)
    print(json.dumps({"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "depth": snn.depth}))
