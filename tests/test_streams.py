"""The library takes what `keras.Model.predict` takes: arrays, tf.data, PyDataset and
generators give the array path's results, image for image (the array path itself is
held to the numpy reference in test_simulation.py and test_reference.py)."""

import keras
import numpy as np
import pytest

import bsnn_tf
from conftest import conv_net, images

SHAPE = (8, 8, 2)
IMAGES = 7  # not a multiple of the batches below: the last batch is padded


@pytest.fixture(scope="module")
def snn():
    ann = conv_net(0)
    return ann, bsnn_tf.convert(ann, images(32, SHAPE, 1), verbose=0, calibration="percentile")


@pytest.fixture(scope="module")
def data():
    x = images(IMAGES, SHAPE, 2).astype("float32")
    y = np.arange(IMAGES) % 3  # conv_net has 3 classes
    return x, y


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y=None, size=3):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, index):
        part = slice(index * self.size, (index + 1) * self.size)
        return self.x[part] if self.y is None else (self.x[part], self.y[part])


def generator(x, y=None, size=3):
    for begin in range(0, len(x), size):
        yield x[begin:begin + size] if y is None else (x[begin:begin + size],
                                                        y[begin:begin + size])


def tf_dataset(x, y=None, batched=True):
    import tensorflow as tf
    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    return dataset.batch(3) if batched else dataset


STREAMS = {
    "generator": generator,
    "pydataset": Batches,
    "tf.data": tf_dataset,
    "tf.data unbatched": lambda x, y=None: tf_dataset(x, y, batched=False),
}
ON_JAX = {"generator", "pydataset"}
KINDS = [pytest.param(kind, marks=[pytest.mark.jax] if kind in ON_JAX else [])
         for kind in STREAMS]


@pytest.mark.parametrize("kind", KINDS)
def test_simulate_takes_a_stream(snn, data, kind):
    ann, snn = snn
    x, _ = data
    expected = bsnn_tf.simulate(snn, x, timesteps=32, checkpoints=[16], ann=ann, verbose=0)
    got = bsnn_tf.simulate(snn, STREAMS[kind](x), timesteps=32, checkpoints=[16], ann=ann,
                           verbose=0)
    for t in (16, 32):
        np.testing.assert_allclose(got.outputs_at[t], expected.outputs_at[t], rtol=1e-5,
                                   atol=1e-5)
    for name in expected.spike_counts:
        np.testing.assert_array_equal(got.spike_counts[name], expected.spike_counts[name])
        np.testing.assert_array_equal(got.unit_spike_counts[name],
                                      expected.unit_spike_counts[name])
    assert got.sin == expected.sin


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_takes_labels_from_the_stream(snn, data, kind):
    _, snn = snn
    x, y = data
    expected = bsnn_tf.evaluate(snn, x, y, timesteps=[16, 32], verbose=0)
    assert bsnn_tf.evaluate(snn, STREAMS[kind](x, y), timesteps=[16, 32],
                            verbose=0) == expected
    # Against the logits themselves, independently of evaluate's counting.
    logits = bsnn_tf.simulate(snn, x, timesteps=32, verbose=0).outputs
    assert expected[32] == np.mean(np.argmax(logits, -1) == y)


@pytest.mark.parametrize("kind", KINDS)
def test_verify_and_predict_take_a_stream(snn, data, kind):
    ann, snn = snn
    x, _ = data
    expected = bsnn_tf.verify(ann, snn, x, timesteps=32)
    got = bsnn_tf.verify(ann, snn, STREAMS[kind](x), timesteps=32)
    assert got.output_error == pytest.approx(expected.output_error, abs=1e-5)
    assert got.agreement == expected.agreement
    snn.timesteps = 32
    np.testing.assert_allclose(snn.predict(STREAMS[kind](x), verbose=0),
                               snn.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_convert_calibrates_on_a_stream(data, kind):
    ann = conv_net(0)
    x = images(32, SHAPE, 1).astype("float32")
    labels = np.zeros(32, "int64")
    expected = bsnn_tf.convert(ann, x, verbose=0)
    got = bsnn_tf.convert(ann, STREAMS[kind](x, labels), verbose=0)
    assert expected.scales.keys() == got.scales.keys()
    for name in expected.scales:
        np.testing.assert_allclose(got.scales[name], expected.scales[name], rtol=1e-6)


@pytest.mark.jax
def test_simulator_fed_batch_by_batch_equals_one_simulation(snn, data):
    _, snn = snn
    x, _ = data
    expected = bsnn_tf.simulate(snn, x, timesteps=32, checkpoints=[16], verbose=0)
    simulator = bsnn_tf.Simulator(snn, timesteps=32, checkpoints=[16], keep_outputs=False)
    parts = [simulator.update(x[:2]), simulator.update(x[2:])]
    for t in (16, 32):
        np.testing.assert_allclose(np.concatenate([p[t] for p in parts]),
                                   expected.outputs_at[t], rtol=1e-5, atol=1e-5)
    result = simulator.result()
    assert result.outputs is None
    for name in expected.spike_counts:
        np.testing.assert_array_equal(result.spike_counts[name], expected.spike_counts[name])
    with pytest.raises(ValueError, match="kept no logits"):
        result.accuracy(np.zeros(IMAGES))


@pytest.mark.jax
def test_a_simulator_keeping_the_final_logits_returns_every_checkpoint(snn, data):
    """keep_outputs="final" (the run's statistics simulator): `update` still gives the
    logits at every checkpoint, `result()` keeps those after T alone."""
    _, snn = snn
    x, _ = data
    expected = bsnn_tf.simulate(snn, x, timesteps=32, checkpoints=[16], verbose=0)
    simulator = bsnn_tf.Simulator(snn, timesteps=32, checkpoints=[16], keep_outputs="final")
    parts = [simulator.update(x[:2]), simulator.update(x[2:])]
    for t in (16, 32):
        np.testing.assert_allclose(np.concatenate([p[t] for p in parts]),
                                   expected.outputs_at[t], rtol=1e-5, atol=1e-5)
    result = simulator.result()
    assert list(result.outputs_at) == [32]
    np.testing.assert_allclose(result.outputs, expected.outputs, rtol=1e-5, atol=1e-5)
    for name in expected.spike_counts:
        np.testing.assert_array_equal(result.spike_counts[name], expected.spike_counts[name])
    with pytest.raises(ValueError, match='keep_outputs must be True, "final" or False'):
        bsnn_tf.Simulator(snn, timesteps=32, keep_outputs="last")


@pytest.mark.jax
def test_stream_errors_say_what_to_do(snn, data):
    _, snn = snn
    x, y = data
    with pytest.raises(ValueError, match="Labels were given beside a stream"):
        bsnn_tf.evaluate(snn, generator(x, y), y, timesteps=32, verbose=0)
    with pytest.raises(ValueError, match="have no labels"):
        bsnn_tf.evaluate(snn, generator(x), timesteps=32, verbose=0)
    with pytest.raises(ValueError, match="empty stream"):
        bsnn_tf.simulate(snn, iter([]), timesteps=32, verbose=0)
    with pytest.raises(ValueError, match="shape"):
        bsnn_tf.simulate(snn, generator(x[:, :4]), timesteps=32, verbose=0)
