"""A converted SNN is a keras.Model that saves as .keras and loads back identical."""

import keras
import numpy as np
import pytest

import bsnn_tf
from conftest import images, residual_net

pytestmark = pytest.mark.jax


@pytest.mark.parametrize("method", ["bsnn", "phase", "rate"])
def test_saved_and_loaded_snn_simulates_identically(tmp_path, method):
    model = residual_net(0, concat=True)
    snn = bsnn_tf.convert(model, images(16, (8, 8, 2)), method=method, phases=4,
                          timesteps=48, verbose=0, calibration="percentile")
    x = images(4, (8, 8, 2), seed=1)
    before = bsnn_tf.simulate(snn, x, timesteps=48, checkpoints=[24], verbose=0)
    path = tmp_path / "snn.keras"
    snn.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, bsnn_tf.SpikingNetwork)
    assert (loaded.method, loaded.phases, loaded.timesteps, loaded.depth) == (
        snn.method, snn.phases, snn.timesteps, snn.depth)
    after = bsnn_tf.simulate(loaded, x, timesteps=48, checkpoints=[24], verbose=0)
    for t in (24, 48):
        np.testing.assert_array_equal(after.outputs_at[t], before.outputs_at[t])
    for name, counts in before.spike_counts.items():
        np.testing.assert_array_equal(after.spike_counts[name], counts)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), snn.predict(x, verbose=0))
