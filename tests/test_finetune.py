"""calibration="finetune" and QuantizedReLU: the first readout trained against the ANN.

The demo CNN at K = 1 (one bit per activation) loses much at its first
readout; fine-tuning must bring that readout's logits closer to the ANN's on
test images it never saw, and what it trained must be what is simulated. A
network trained with QuantizedReLU layers converts to a BSNN whose first
readout is that network.
"""

import keras
import numpy as np
import pytest

import bsnn_tf
from bsnn_tf import data, quantized, runs
from bsnn_tf.conversion import FineTuning
from bsnn_tf.verification import logits_tensor
from conftest import images, mobile_net, residual_net


@pytest.fixture(scope="module")
def mnist():
    ann = keras.models.load_model(runs.DEMO_CHECKPOINT, compile=False)
    x, y = data.load("mnist", "train", data.DEMO_DIR, limit=1000)
    x_test, y_test = data.load("mnist", "test", data.DEMO_DIR, limit=300)
    return ann, x, y, x_test, y_test


def first_readout(snn, x):
    return bsnn_tf.simulate(snn, x, timesteps=snn.first_readout, count_spikes=False,
                            verbose=0).outputs


def divergence(ann_logits, snn_logits):
    """Mean KL(softmax(ANN) || softmax(SNN)) per image."""
    log_p = ann_logits - np.log(np.exp(ann_logits).sum(-1, keepdims=True))
    log_q = snn_logits - np.log(np.exp(snn_logits).sum(-1, keepdims=True))
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))


@pytest.fixture(scope="module")
def finetuned(mnist):
    ann, x, y, _, _ = mnist
    settings = FineTuning(epochs=5, learning_rate=3e-4, seed=0)
    percentile = bsnn_tf.convert(ann, x, phases=1, verbose=0)
    tuned = bsnn_tf.convert(ann, x, phases=1, calibration="finetune", finetuning=settings,
                            verbose=0)
    return percentile, tuned


def test_finetuning_brings_the_first_readout_closer_to_the_ann(mnist, finetuned):
    """On the images it trained on (how well it generalises is measured in
    benchmarks/finetune_study.py, on 1,900 test images after 10,000 training images;
    900 images at K = 1 are too few to generalise)."""
    ann, x, _, _, _ = mnist
    percentile, tuned = finetuned
    reference = keras.Model(ann.inputs, logits_tensor(ann)).predict(x, verbose=0)
    before = divergence(reference, first_readout(percentile, x))
    after = divergence(reference, first_readout(tuned, x))
    assert after < 0.85 * before, (before, after)


def test_what_is_trained_is_what_is_simulated(mnist, finetuned):
    _, _, _, x_test, _ = mnist
    _, tuned = finetuned
    record = tuned.calibration_record
    assert record["epochs"] == 5 and len(record["held_out_loss"]) == 6  # epoch 0 included
    assert record["held_out_loss"][record["best_epoch"]] == min(record["held_out_loss"])
    twin = tuned.first_readout_model().predict(x_test, verbose=0)
    np.testing.assert_allclose(twin, first_readout(tuned, x_test), atol=1e-4)


def test_a_finetuned_snn_saves_and_loads(finetuned, tmp_path, mnist):
    _, tuned = finetuned
    path = str(tmp_path / "tuned.keras")
    tuned.save(path)
    loaded = keras.models.load_model(path)
    x_test = mnist[3][:20]
    np.testing.assert_array_equal(first_readout(loaded, x_test), first_readout(tuned, x_test))


def test_labels_are_used_when_given(mnist):
    ann, x, y, _, _ = mnist
    settings = FineTuning(epochs=1, seed=0)
    with_labels = bsnn_tf.convert(ann, x, phases=2, calibration="finetune", verbose=0,
                                  calibration_labels=y, finetuning=settings)
    assert with_labels.calibration_record["labels"] is True


def test_start_mse_starts_from_the_scales_of_calibration_mse(mnist):
    """A fine-tune that barely moves (a tiny learning rate) keeps its start: the first
    readout of calibration="mse", not that of the percentile start."""
    ann, x, _, x_test, _ = mnist
    searched = first_readout(bsnn_tf.convert(ann, x, phases=2, calibration="mse",
                                             channelwise=True, verbose=0), x_test)
    readouts = {}
    for start in ("mse", "percentile"):
        settings = FineTuning(epochs=1, learning_rate=1e-12, start=start)
        readouts[start] = first_readout(bsnn_tf.convert(
            ann, x, phases=2, calibration="finetune", finetuning=settings, verbose=0), x_test)
    np.testing.assert_allclose(readouts["mse"], searched, atol=1e-4)
    assert np.abs(readouts["percentile"] - searched).max() > 0.1


@pytest.mark.parametrize("case, message", [
    ("few", "at least 256 calibration images"),
    ("label_shape", "one integer class per calibration image"),
    ("wrong_labels", "labels do not match the images"),
    ("wrong_range", "do not look like its inputs"),
    ("diverges", "diverged"),
    ("rate", "does not have"),
    ("labels_without_finetune", "calibration='finetune' only"),
    ("bad_setting", "finetuning.epochs must be"),
    ("bad_start", "finetuning.start must be 'percentile' or 'mse'"),
])
def test_bad_fine_tuning_input_stops_with_a_clear_error(mnist, case, message):
    ann, x, y, _, _ = mnist
    kwargs = dict(calibration="finetune", finetuning=FineTuning(epochs=1), verbose=0)
    images_, labels = x, None
    if case == "few":
        images_ = x[:100]
    elif case == "label_shape":
        labels = y[:10]
    elif case == "wrong_labels":
        labels = (y + 1) % 10
    elif case == "wrong_range":
        images_ = x - 1000.0  # every ReLU off: one class for every image
    elif case == "diverges":
        kwargs["finetuning"] = FineTuning(epochs=1, learning_rate=1e12)
    elif case == "rate":
        kwargs["method"] = "rate"
    elif case == "labels_without_finetune":
        kwargs["calibration"], labels = "percentile", y
    elif case == "bad_setting":
        kwargs["finetuning"] = FineTuning(epochs=0)
    elif case == "bad_start":
        kwargs["finetuning"] = FineTuning(epochs=1, start="light")
    with pytest.raises(ValueError, match=message):
        bsnn_tf.convert(ann, images_, calibration_labels=labels, **kwargs)


def _trained_with_quantizers(net=residual_net, phases=3, channelwise=False):
    """A test net (BN, shortcuts, max pooling; MobileNet's ReLU6) whose ReLUs are
    QuantizedReLU with thresholds fitted to images."""
    model = quantized.quantize_relus(net(0), phases, channelwise=channelwise)
    x = images(64, (8, 8, 2), seed=3)
    quantized.set_thresholds(model, x)
    return model, x


@pytest.mark.jax
@pytest.mark.parametrize("net, channelwise", [(residual_net, False), (mobile_net, True)])
def test_a_network_trained_with_quantizers_is_its_bsnn_at_the_first_readout(net, channelwise):
    model, x = _trained_with_quantizers(net, channelwise=channelwise)
    snn = bsnn_tf.convert(model, x, dtype="float64", verbose=0)
    assert snn.phases == 3  # the phases it was trained for
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(first_readout(snn, x), expected, atol=1e-5)


def test_converting_for_other_phases_than_trained_is_refused():
    model, x = _trained_with_quantizers()
    with pytest.raises(ValueError, match="was trained for phases=3"):
        bsnn_tf.convert(model, x, phases=4, verbose=0)


def test_quantized_relu_rounds_to_k_bits_of_its_threshold_and_saves(tmp_path):
    layer = quantized.QuantizedReLU(phases=2, threshold=2.0, max_value=None)
    z = np.array([[-1.0, 0.2, 0.3, 0.8, 1.2, 1.9, 5.0]], "float32")
    # 2 bits of [0, 2]: levels 0, 0.5, 1, 1.5, rounded (membrane at rest half a level).
    expected = 2.0 * np.clip(np.floor(z / 2.0 * 4 + 0.5) / 4, 0, 0.75)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(z)), expected)
    model = keras.Sequential([keras.Input((7,)), layer])
    model.save(tmp_path / "q.keras")
    loaded = keras.models.load_model(tmp_path / "q.keras")
    np.testing.assert_array_equal(loaded.predict(z, verbose=0), model.predict(z, verbose=0))


@pytest.mark.parametrize("rate", [1.0, 10.0])
def test_threshold_rate_scales_lambdas_steps_not_the_output(rate, tmp_path):
    """Adam's first step moves each variable by its learning rate (whatever the
    gradient's size), so log lambda moves by rate x learning rate."""
    layer = quantized.QuantizedReLU(phases=2, threshold=2.0, threshold_rate=rate)
    z = np.array([[0.3, 0.8, 1.2, 1.9, 5.0]], "float32")
    plain = quantized.QuantizedReLU(phases=2, threshold=2.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(z)),
                               keras.ops.convert_to_numpy(plain(z)))
    model = keras.Sequential([keras.Input((5,)), layer])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(z, np.full_like(z, 4.0), epochs=1, verbose=0)  # wants lambda larger
    moved = np.log(keras.ops.convert_to_numpy(layer.threshold) / 2.0)
    np.testing.assert_allclose(moved, rate * 1e-3, rtol=1e-3)
    model.save(tmp_path / "q.keras")
    loaded = keras.models.load_model(tmp_path / "q.keras")
    assert loaded.layers[0].threshold_rate == rate
    np.testing.assert_array_equal(loaded.predict(z, verbose=0), model.predict(z, verbose=0))
