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
@pytest.mark.parametrize("net, extra_periods", [(NETS[0], 0), (NETS[1], 0), (NETS[2], 3)])
def test_schedule_counts_match_the_reference_on_its_schedule(net, extra_periods, monkeypatch):
    """At the first readout (three periods later on the residual net), in period mode (one chunk per
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
    monkeypatch.setattr(bsnn_tf.schedule, "MAX_SKEWED_CHUNKS", 0)
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
        bsnn_tf.simulate(snn, x, timesteps=snn.first_readout + 8, chunk=2,
                         count_spikes=count_spikes, verbose=0)
        schedules[count_spikes] = sorted(set(seen), key=str)
    assert schedules[True] == schedules[False]
    assert any(stop is not None for _, _, stop in schedules[True])


def test_count_window_is_checked():
    snn, x = converted("dense", "bsnn", phases=4)
    with pytest.raises(ValueError, match="count_window"):
        bsnn_tf.simulate(snn, x, timesteps=16, count_window="light", verbose=0)


@pytest.mark.jax
def test_synaptic_operations_and_energy_on_the_schedule():
    """Dense net 6-12-10-8-4: each synapse's operations are its fan-in x fan-out times the
    reference's spikes per source unit on the schedule; the first one's MACs multiply
    the real-valued input once. Energy: 0.9 pJ an operation, 4.6 pJ a MAC (Horowitz 2014)."""
    snn, x = converted("dense", "bsnn", phases=4)
    counts, _, _ = reference_counts(snn, x, snn.first_readout)
    result = bsnn_tf.simulate(snn, x, timesteps=snn.first_readout, verbose=0)
    neurons = [layer.name for layer in snn.spiking_layers()]
    widths = [6, 12, 10, 8, 4]
    macs = [a * b for a, b in zip(widths, widths[1:])]
    spikes_per_unit = [np.mean(counts[n]) / w for n, w in zip(neurons, widths[1:])]
    operations = [macs[0]] + [m * s for m, s in zip(macs[1:], spikes_per_unit)]
    measured = bsnn_tf.metrics.synaptic_operations(snn, result)
    np.testing.assert_allclose(list(measured.values()), operations, rtol=1e-9)
    estimate = bsnn_tf.metrics.energy(snn, result)
    snn_pj = macs[0] * 4.6 + sum(operations[1:]) * 0.9
    np.testing.assert_allclose([estimate["snn_pj"], estimate["ann_pj"]],
                               [snn_pj, sum(macs) * 4.6], rtol=1e-9)
    np.testing.assert_allclose(estimate["snn_per_ann"], snn_pj / (sum(macs) * 4.6), rtol=1e-9)
    lines = []
    bsnn_tf.metrics.summary(snn, result, print_fn=lines.append)
    assert "spikes counted on the schedule" in lines[0]
    assert any(line.startswith("Energy per image") and "4.6 pJ" in line for line in lines)
