"""Step mode against the independent numpy reference, and period mode against step mode."""

import keras
import numpy as np
import pytest

import bsnn_tf
from conftest import conv_net, dense_net, images, mobile_net, reference_net, residual_net
from reference import period_values, simulate_reference

NETS = {
    "dense": (dense_net, (6,)),
    "conv_maxpool": (conv_net, (8, 8, 2)),
    "conv_avgpool": (lambda seed: conv_net(seed, pool="avg"), (8, 8, 2)),
    "residual_maxpool": (residual_net, (8, 8, 2)),
    "residual_concat": (lambda seed: residual_net(seed, concat=True, maxpool=False), (8, 8, 2)),
    "mobile": (mobile_net, (8, 8, 2)),
}


def converted(net, method, phases=4, seed=0, encoding="real", dtype="float64",
              initial_membrane=None):
    build, shape = NETS[net]
    low = 0.0 if encoding == "spike" else None
    calibration = images(32, shape, seed + 1, low=low)
    snn = bsnn_tf.convert(build(seed), calibration, method=method, phases=phases,
                          input_encoding=encoding, initial_membrane=initial_membrane,
                          dtype=dtype, verbose=0, calibration="percentile")
    return snn, images(3, shape, seed + 2, low=low)


# The JAX run (pytest -m jax) takes one net per kind of layer, not every combination.
ON_JAX = {"dense", "residual_concat"}


def cases(*arguments, on_jax=lambda args: True):
    """pytest params, marked for the JAX run where `on_jax(args)` holds."""
    return [pytest.param(*args, marks=[pytest.mark.jax] if on_jax(args) else [])
            for args in arguments]


REFERENCE_CASES = cases(
    *[(net, method, None) for net in sorted(NETS) for method in ("bsnn", "phase", "rate")],
    ("conv_maxpool", "bsnn", 0.0), ("residual_maxpool", "bsnn", 0.0),
    ("conv_maxpool", "rate", 0.5),
    on_jax=lambda args: args[0] in ON_JAX or args[2] is not None,
)


@pytest.mark.parametrize("net, method, initial_membrane", REFERENCE_CASES)
def test_step_mode_matches_reference_spike_for_spike(net, method, initial_membrane):
    snn, x = converted(net, method, initial_membrane=initial_membrane)
    timesteps = 40
    result = bsnn_tf.simulate(snn, x, timesteps=timesteps, mode="step", trace=True,
                              checkpoints=range(4, timesteps + 1, 4), count_window="whole",
                              verbose=0)
    reference = simulate_reference(reference_net(snn), x, timesteps)
    emitted = {**reference["outputs"], **reference["gates"]}
    assert set(emitted) == set(result.trace)
    for name, expected in emitted.items():
        np.testing.assert_array_equal(result.trace[name], expected, err_msg=name)
    for name, count in reference["spikes"].items():
        np.testing.assert_array_equal(result.spike_counts[name], count, err_msg=name)
    for t, logits in result.outputs_at.items():
        np.testing.assert_allclose(logits, reference["logits"][:, t - 1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("net", cases(("conv_maxpool",), ("residual_maxpool",)))
def test_spike_encoded_input_matches_reference(net):
    snn, x = converted(net, "bsnn", phases=3, encoding="spike")
    timesteps = 30
    result = bsnn_tf.simulate(snn, x, timesteps=timesteps, mode="step", trace=True, verbose=0)
    reference = simulate_reference(reference_net(snn), x / snn.encoder.scale, timesteps)
    for name, expected in reference["outputs"].items():
        np.testing.assert_array_equal(result.trace[name], expected, err_msg=name)
    np.testing.assert_allclose(result.outputs, reference["logits"][:, -1], rtol=1e-9)


@pytest.mark.parametrize("net, phases, encoding", cases(
    *[(net, phases, encoding) for net in sorted(NETS)
      for phases, encoding in ((1, "real"), (3, "spike"), (8, "real"))],
    on_jax=lambda args: args[0] in ON_JAX))
def test_period_mode_equals_step_mode(net, phases, encoding):
    snn, x = converted(net, "bsnn", phases=phases, encoding=encoding)
    timesteps = 12 * phases
    checkpoints = range(phases, timesteps + 1, phases)
    step = bsnn_tf.simulate(snn, x, timesteps=timesteps, mode="step", trace=True,
                            checkpoints=checkpoints, verbose=0)
    period = bsnn_tf.simulate(snn, x, timesteps=timesteps, mode="period", trace=True,
                              checkpoints=checkpoints, chunk=5, verbose=0)
    for name, per_period in period.trace.items():
        np.testing.assert_array_equal(per_period, period_values(step.trace[name], phases),
                                      err_msg=name)
    active = [name for name, per_period in period.trace.items() if per_period.any()]
    assert len(active) >= len(period.trace) / 2, f"only {active} emitted"
    for name in step.spike_counts:
        np.testing.assert_array_equal(period.spike_counts[name], step.spike_counts[name])
    for t in checkpoints:
        np.testing.assert_allclose(period.outputs_at[t], step.outputs_at[t], rtol=1e-12)


@pytest.mark.jax
def test_period_and_step_agree_in_float32():
    snn, x = converted("residual_maxpool", "bsnn", phases=8, dtype="float32")
    step = bsnn_tf.simulate(snn, x, timesteps=128, mode="step", verbose=0)
    period = bsnn_tf.simulate(snn, x, timesteps=128, mode="period", verbose=0)
    np.testing.assert_allclose(period.outputs, step.outputs, rtol=1e-4, atol=1e-4)


@pytest.mark.jax
def test_chunking_and_batching_do_not_change_results():
    snn, x = converted("residual_maxpool", "bsnn", phases=4)
    x = np.concatenate([x, x[::-1], x])
    whole = bsnn_tf.simulate(snn, x, timesteps=64, checkpoints=[16, 40], verbose=0)
    pieces = bsnn_tf.simulate(snn, x, timesteps=64, checkpoints=[16, 40], chunk=3,
                              batch_size=4, verbose=0)
    for t in (16, 40, 64):
        np.testing.assert_array_equal(whole.outputs_at[t], pieces.outputs_at[t])
    for name, counts in whole.spike_counts.items():
        np.testing.assert_array_equal(counts, pieces.spike_counts[name])


@pytest.mark.jax
def test_calling_the_model_equals_simulate():
    snn, x = converted("conv_maxpool", "bsnn", phases=4, dtype="float32")
    snn.timesteps = 48
    direct = np.asarray(snn.predict(x, verbose=0))
    simulated = bsnn_tf.simulate(snn, x, timesteps=48, verbose=0).outputs
    np.testing.assert_allclose(direct, simulated, rtol=1e-6, atol=1e-6)


@pytest.mark.jax
def test_changing_timesteps_after_predict_takes_effect():
    snn, x = converted("conv_maxpool", "bsnn", phases=4, dtype="float32")
    snn.timesteps = 8
    early = np.asarray(snn.predict(x, verbose=0))
    snn.timesteps = 64
    late = np.asarray(snn.predict(x, verbose=0))
    np.testing.assert_allclose(early, bsnn_tf.simulate(snn, x, timesteps=8, verbose=0).outputs,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(late, bsnn_tf.simulate(snn, x, timesteps=64, verbose=0).outputs,
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(early, late)  # the two T give different logits


@pytest.mark.jax
def test_xla_compiled_simulation_matches_graph_mode():
    snn, x = converted("residual_maxpool", "bsnn", phases=4)
    graph = bsnn_tf.simulate(snn, x, timesteps=32, jit_compile=False, trace=True, verbose=0)
    xla = bsnn_tf.simulate(snn, x, timesteps=32, jit_compile=True, trace=True, verbose=0)
    for name, emitted in graph.trace.items():
        np.testing.assert_array_equal(xla.trace[name], emitted)
    np.testing.assert_allclose(xla.outputs, graph.outputs, rtol=1e-12)


@pytest.mark.jax
def test_wavefront_schedule_skips_only_silent_layers(monkeypatch):
    snn, x = converted("residual_maxpool", "bsnn", phases=4)
    for layer in snn.spiking_layers():  # a BIF layer waits for its input: start_period
        assert snn.active_from[layer.name] == layer.start_period
    assert snn.active_from[snn.readout.name] == snn.depth == snn.readout_start
    dynamic = bsnn_tf.schedule.DYNAMIC
    chunks = snn.chunk_starts(snn.depth + 4, 1, period_mode=True)
    assert [skew for _, skew, _ in chunks] == [0] + [dynamic] * (snn.depth + 3)
    assert {stop for _, _, stop in chunks} == {None}  # counted runs simulate every layer
    monkeypatch.setattr(bsnn_tf.schedule, "MAX_SKEWED_CHUNKS", snn.depth + 4)
    chunks = snn.chunk_starts(snn.depth + 4, 1, period_mode=True)
    assert [skew for _, skew, _ in chunks] == list(range(snn.depth)) + [None] * 4

    kwargs = dict(timesteps=4 * (snn.depth + 3), checkpoints=[4 * snn.depth, 4 * snn.depth + 4],
                  trace=True, record_values=True, verbose=0)
    schedules = {}
    for skewed in (1, snn.depth + 4, 0):  # the default, every chunk its own, none
        monkeypatch.setattr(bsnn_tf.schedule, "MAX_SKEWED_CHUNKS", skewed)
        for chunk in (1, 3):
            schedules[skewed, chunk] = bsnn_tf.simulate(snn, x, chunk=chunk, **kwargs)
    plain = schedules.pop((0, 1))
    for key, result in schedules.items():
        for t, logits in plain.outputs_at.items():
            np.testing.assert_array_equal(result.outputs_at[t], logits, err_msg=str(key))
        for field in ("spike_counts", "values", "trace"):
            for name, expected in getattr(plain, field).items():
                np.testing.assert_array_equal(getattr(result, field)[name], expected,
                                              err_msg=f"{key} {name}")


@pytest.mark.jax
def test_logits_only_runs_stop_each_layer_once_it_can_no_longer_reach_the_readout(monkeypatch):
    snn, x = converted("conv_avgpool", "bsnn", phases=4)
    end = snn.depth + 3
    until = snn.needed_until(end)
    assert until[snn.readout.name] == end
    for layer in snn.spiking_layers():  # one period less per BIF layer above it
        assert until[layer.name] == end - (snn.depth - 1 - layer.start_period), layer.name
    chunks = snn.chunk_starts(end, 1, period_mode=True, logits_only=True)
    assert chunks[0] == (0, 0, None)
    dynamic = bsnn_tf.schedule.DYNAMIC
    assert {chunk[1:] for chunk in chunks[1:]} == {(dynamic, dynamic)}
    monkeypatch.setattr(bsnn_tf.schedule, "MAX_SKEWED_CHUNKS", end)
    chunks = snn.chunk_starts(end, 1, period_mode=True, logits_only=True)
    first_stop = end - (snn.depth - 1)  # where the first spiking layer stops
    assert [stop for _, _, stop in chunks] == [None] * first_stop + [end] * (end - first_stop)

    periods = [(4, "period"), (3, "period"), (1, "step")]
    kwargs = dict(timesteps=4 * end, checkpoints=[4 * snn.depth, 4 * snn.depth + 8],
                  count_spikes=False, verbose=0)
    cut = {}
    for skewed in (1, end):  # the default (one program for all chunks but the first), all own
        monkeypatch.setattr(bsnn_tf.schedule, "MAX_SKEWED_CHUNKS", skewed)
        cut.update({(skewed, chunk, mode): bsnn_tf.simulate(snn, x, chunk=chunk, mode=mode,
                                                            **kwargs)
                    for chunk, mode in periods})
    monkeypatch.setattr(bsnn_tf.schedule, "MAX_SKEWED_CHUNKS", 0)
    plain = bsnn_tf.simulate(snn, x, chunk=1, **kwargs)
    for key, result in cut.items():
        for t, logits in plain.outputs_at.items():
            np.testing.assert_array_equal(result.outputs_at[t], logits, err_msg=str(key))


@pytest.mark.jax
def test_logits_only_simulation_carries_no_counters():
    snn, x = converted("conv_maxpool", "bsnn", phases=4)
    assert not {"spikes", "emitted"} & set(snn.start_state(x, count_spikes=False))
    counted = bsnn_tf.simulate(snn, x, timesteps=32, checkpoints=[16], verbose=0)
    logits_only = bsnn_tf.simulate(snn, x, timesteps=32, checkpoints=[16], count_spikes=False,
                                   verbose=0)
    for t in (16, 32):
        np.testing.assert_array_equal(logits_only.outputs_at[t], counted.outputs_at[t])
    assert logits_only.spike_counts is None
    with pytest.raises(ValueError, match="count_spikes=True"):
        logits_only.firing_rates()
    with pytest.raises(ValueError, match="count_spikes=True"):
        bsnn_tf.simulate(snn, x, timesteps=32, count_spikes=False, ann=object(), verbose=0)


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_max_pooling_is_the_max_gate_spike_for_spike(keepdims):
    """GlobalMaxPooling2D, added as one converter (docs/DESIGN.md, "Adding a layer type"),
    simulates as the reference's max gate with one window, in step and period mode."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = keras.layers.GlobalMaxPooling2D(keepdims=keepdims)(h)
    h = keras.layers.Flatten()(h) if keepdims else h
    ann = keras.Model(inp, keras.layers.Dense(3, activation="relu")(h))
    x = images(3, (6, 6, 2), seed=2)
    snn = bsnn_tf.convert(ann, images(32, (6, 6, 2), seed=1), phases=3, dtype="float64",
                          verbose=0)
    assert sum(isinstance(l, bsnn_tf.layers.SpikingMaxPool) for l in snn.graph_layers) == 1
    step = bsnn_tf.simulate(snn, x, timesteps=24, mode="step", trace=True, verbose=0)
    reference = simulate_reference(reference_net(snn), x, 24)
    for name, expected in {**reference["outputs"], **reference["gates"]}.items():
        np.testing.assert_array_equal(step.trace[name], expected, err_msg=name)
    period = bsnn_tf.simulate(snn, x, timesteps=24, verbose=0)
    np.testing.assert_allclose(period.outputs, step.outputs, rtol=1e-12, atol=1e-12)
