"""Spike counts on the light-cone schedule (`simulate(count_window="schedule")`) and over
the whole run, against the numpy reference simulator run on the same schedule."""

import numpy as np
import pytest

import bsnn_tf
from conftest import reference_net
from reference import schedule_windows, simulate_reference, spikes_in_windows
from test_simulation import converted

# A plain net with max pooling, a residual net with synchronous layers and max pooling.
NETS = ("dense", "conv_maxpool", "residual_maxpool")


def reference_counts(snn, x, timesteps, window="schedule"):
    """{neuron layer: (N,) spikes} and {layer: steps} of the reference on `window`."""
    net = reference_net(snn)
    reference = simulate_reference(net, x, timesteps)
    windows = (schedule_windows(net, timesteps) if window == "schedule"
               else dict.fromkeys(reference["outputs"], (0, timesteps)))
    steps = {name: end - first for name, (first, end) in windows.items()}
    return spikes_in_windows(reference["outputs"], windows), steps, reference


def assert_counts_equal(result, counts, steps):
    assert set(result.spike_counts) == set(counts)
    for name, expected in counts.items():
        np.testing.assert_array_equal(result.spike_counts[name], expected, err_msg=name)
    assert result.counted_steps == steps
    for name, rate in result.firing_rates().items():
        expected = np.mean(counts[name]) / (result.neurons[name] * steps[name])
        np.testing.assert_allclose(rate, expected, rtol=1e-12, err_msg=name)


@pytest.mark.jax
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("extra_periods", [0, 3])
def test_schedule_counts_match_the_reference_on_its_schedule(net, extra_periods, monkeypatch):
    """At the first readout and three periods later, in period mode (one chunk per
    period, so the layers stop in skewed chunks, and with no skewed chunk at all, so
    only the count window stops the counting) and in step mode."""
    snn, x = converted(net, "bsnn", phases=4)
    timesteps = snn.first_readout + 4 * extra_periods
    counts, steps, reference = reference_counts(snn, x, timesteps)
    assert any(counts[n].sum() < reference["spikes"][n].sum() for n in counts)  # it cuts
    runs = {"period": dict(mode="period"), "period, chunk 1": dict(mode="period", chunk=1),
            "step": dict(mode="step")}
    for label, kwargs in runs.items():
        result = bsnn_tf.simulate(snn, x, timesteps=timesteps, verbose=0, **kwargs)
        assert result.count_window == "schedule"
        assert_counts_equal(result, counts, steps)
        np.testing.assert_allclose(result.outputs, reference["logits"][:, -1], rtol=1e-9,
                                   err_msg=label)
    monkeypatch.setattr(bsnn_tf.network, "MAX_SKEWED_CHUNKS", 0)
    plain = bsnn_tf.simulate(snn, x, timesteps=timesteps, chunk=1, verbose=0)
    assert_counts_equal(plain, counts, steps)


@pytest.mark.jax
@pytest.mark.parametrize("net", NETS)
def test_whole_window_counts_match_the_reference(net):
    snn, x = converted(net, "bsnn", phases=4)
    timesteps = snn.first_readout + 8
    counts, steps, _ = reference_counts(snn, x, timesteps, window="whole")
    result = bsnn_tf.simulate(snn, x, timesteps=timesteps, count_window="whole", verbose=0)
    assert result.count_window == "whole"
    assert_counts_equal(result, counts, steps)


@pytest.mark.jax
def test_baseline_schedule_is_the_whole_run():
    snn, x = converted("conv_maxpool", "phase", phases=4)
    counts, steps, _ = reference_counts(snn, x, 24)
    assert set(steps.values()) == {24}
    assert_counts_equal(bsnn_tf.simulate(snn, x, timesteps=24, mode="step", verbose=0),
                        counts, steps)


@pytest.mark.jax
def test_counting_on_the_schedule_simulates_the_logits_only_schedule(monkeypatch):
    """The counting run compiles the same chunks (skews and stops) as the logits-only run."""
    snn, x = converted("residual_maxpool", "bsnn", phases=4)
    seen = []
    run_chunk = snn.run_chunk
    monkeypatch.setattr(snn, "run_chunk", lambda x, state, chunk: (
        seen.append((chunk.length, chunk.skew, chunk.stop)), run_chunk(x, state, chunk))[1])
    schedules = {}
    for count_spikes in (False, True):
        seen.clear()
        bsnn_tf.simulate(snn, x, timesteps=snn.first_readout + 12, chunk=2,
                         count_spikes=count_spikes, verbose=0)
        schedules[count_spikes] = sorted(set(seen), key=str)
    assert schedules[True] == schedules[False]
    assert any(stop is not None for _, _, stop in schedules[True])


def test_count_window_is_checked():
    snn, x = converted("dense", "bsnn", phases=4)
    with pytest.raises(ValueError, match="count_window"):
        bsnn_tf.simulate(snn, x, timesteps=16, count_window="light", verbose=0)
