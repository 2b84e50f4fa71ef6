"""Memory that does not grow with the number of images: convert.py's simulation and calibration.

`bsnn_tf.simulate` keeps every image's spike count per neuron unit (and the
ANN's activations, for SIN) until it returns: about 72 MB an image for ResNet-34
on ImageNet, so one call over the 500 evaluated images of the 1,000-image sample
needs about 36 GB (issue 14). `pipeline.simulate_in_blocks` calls it on blocks of
whole batches and merges the results. The calibration statistics
(`ActivationStatistics`) stream: they keep the values above the percentile
only, a fraction 1 - p/100 of them (one value at the maximum).
"""

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf import data, pipeline
from bsnn_tf.conversion import ActivationStatistics

TIMESTEPS = 16
BATCH = 8


@pytest.fixture(scope="module")
def demo():
    ann = keras.models.load_model(pipeline.DEMO_CHECKPOINT, compile=False)
    x, _ = data.load("mnist", "test", data.DEMO_DIR, limit=40)
    snn = bsnn_tf.convert(ann, x[:20], phases=4, timesteps=TIMESTEPS, verbose=0)
    return ann, snn, x


def counting_simulate(monkeypatch):
    """Replaces `bsnn_tf.simulate` by a wrapper; returns the list of image counts it got."""
    calls, simulate = [], bsnn_tf.simulate

    def wrapper(snn, x, **kwargs):
        calls.append(len(x))
        return simulate(snn, x, **kwargs)

    monkeypatch.setattr(bsnn_tf, "simulate", wrapper)
    return calls


def test_blocks_give_the_result_of_one_call(demo, monkeypatch):
    ann, snn, x = demo
    whole = bsnn_tf.simulate(snn, x, timesteps=TIMESTEPS, checkpoints=[8], batch_size=BATCH,
                             ann=ann, verbose=0)
    calls = counting_simulate(monkeypatch)

    blocks = pipeline.simulate_in_blocks(snn, x, timesteps=TIMESTEPS, checkpoints=[8],
                                    batch_size=BATCH, ann=ann, block=2 * BATCH)

    assert calls == [16, 16, 8]
    assert blocks.timesteps == TIMESTEPS and blocks.neurons == whole.neurons
    # Every image is simulated in the batch it has in one call: the same arithmetic.
    assert set(blocks.outputs_at) == {8, TIMESTEPS}
    for t in (8, TIMESTEPS):
        np.testing.assert_array_equal(blocks.outputs_at[t], whole.outputs_at[t])
    np.testing.assert_array_equal(blocks.outputs, whole.outputs)
    for name in whole.spike_counts:
        np.testing.assert_array_equal(blocks.spike_counts[name], whole.spike_counts[name])
        np.testing.assert_array_equal(blocks.unit_spike_counts[name],
                                      whole.unit_spike_counts[name])
    # SIN compares with the ANN's activations, predicted in other batches here: an
    # activation within float rounding of 0 may differ, nothing more.
    for name, (spiked, inactive) in whole.sin.items():
        assert blocks.sin[name][0] == pytest.approx(spiked, abs=2)
        assert blocks.sin[name][1] == pytest.approx(inactive, abs=2)
    assert blocks.firing_rates() == pytest.approx(whole.firing_rates())


def test_one_block_is_one_call(demo, monkeypatch):
    ann, snn, x = demo
    calls = counting_simulate(monkeypatch)
    result = pipeline.simulate_in_blocks(snn, x, timesteps=TIMESTEPS, checkpoints=[TIMESTEPS],
                                    batch_size=BATCH)
    assert calls == [len(x)] and result.sin is None and len(result.outputs) == len(x)


def test_block_size_is_whole_batches_within_the_budget(demo):
    _, snn, _ = demo
    units = sum(int(np.prod(snn.unit_shapes[layer.name])) for layer in snn.spiking_layers())
    per_batch = units * pipeline.SIMULATION_BYTES_PER_UNIT * BATCH
    assert pipeline.simulation_block(snn, BATCH, budget=3 * per_batch) == 3 * BATCH
    assert pipeline.simulation_block(snn, BATCH, budget=3 * per_batch - 1) == 2 * BATCH
    assert pipeline.simulation_block(snn, BATCH, budget=1) == BATCH  # at least one batch
    # The default budget holds one batch of ResNet-34 on ImageNet (5.1 M units an image).
    assert 5.1e6 * pipeline.SIMULATION_BYTES_PER_UNIT * BATCH <= pipeline.SIMULATION_BLOCK_BYTES


def test_convert_py_simulates_in_blocks(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "SIMULATION_BLOCK_BYTES", 1)  # one batch a block
    calls = counting_simulate(monkeypatch)
    config = pipeline.ConvertConfig(phases=4, timesteps=TIMESTEPS, limit=40, calibration_size=50,
                               batch_size=16, output_dir=str(tmp_path / "run"))
    results = pipeline.run(config)
    # The verification (its own 32 images) calls bsnn_tf.simulation.simulate directly.
    assert calls == [16, 16, 8]
    assert results["test_images"] == 40 and results["ann_accuracy"] > 0.9
    assert results["methods"]["bsnn"]["accuracy"][-1] > 0.9


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
