"""Bad input gets a clear error that names what is wrong and what to do."""

import re
import warnings

import keras
import numpy as np
import pytest

import bsnn_tf
from conftest import conv_net, dense_net, images

L = keras.layers
pytestmark = pytest.mark.jax


@pytest.fixture(scope="module")
def snn():
    return bsnn_tf.convert(conv_net(0), images(8, (8, 8, 2)), phases=4, verbose=0, calibration="percentile")


@pytest.fixture(scope="module")
def rate_snn():
    return bsnn_tf.convert(dense_net(0), images(8, (6,)), method="rate", verbose=0, calibration="percentile")


def convert(model, data=None, **kwargs):
    data = images(4, model.inputs[0].shape[1:]) if data is None else data
    return bsnn_tf.convert(model, data, verbose=0, **{"calibration": "percentile", **kwargs})


def test_unsupported_layers_are_all_listed_with_class_and_reason():
    model = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(3, 3, name="c1"),
                              L.LayerNormalization(name="norm"), L.ReLU(),
                              L.Conv2D(3, 3, activation="tanh", name="c2"), L.Flatten(),
                              L.Dense(2)])
    with pytest.raises(ValueError) as error:
        convert(model)
    message = str(error.value)
    assert "'norm' (LayerNormalization)" in message and "no converter" in message
    assert "'c2' (Conv2D)" in message and "'tanh' is not ReLU" in message


def test_sigmoid_swish_and_lstm_are_refused_naming_each_layer():
    inp = keras.Input((6, 4))
    x = L.LSTM(5, return_sequences=True, name="recurrent")(inp)
    x = L.Dense(4, activation="sigmoid", name="gate")(L.Flatten()(x))
    x = L.Activation("swish", name="smooth")(L.Dense(4)(x))
    with pytest.raises(ValueError) as error:
        convert(keras.Model(inp, L.Dense(2)(x)))
    message = str(error.value)
    assert "'recurrent' (LSTM): no converter" in message
    assert "'gate' (Dense): activation 'sigmoid' is not ReLU" in message
    # Keras names swish by its other name, silu.
    assert re.search(r"'smooth' \(Activation\): activation '(swish|silu)' is not ReLU", message)


def test_bilinear_upsampling_is_refused():
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(2, 1, activation="relu"),
                              L.UpSampling2D(2, interpolation="bilinear", name="up"),
                              L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match="'up' .*only 'nearest'"):
        convert(model)


@pytest.mark.parametrize("layer, reason", [
    (L.ReLU(negative_slope=0.1), "negative_slope"),
    (L.ReLU(max_value=0.0), "constant"),
    (L.LeakyReLU(), "no converter"),
    (L.Activation("sigmoid"), "'sigmoid' is not ReLU"),
])
def test_non_relu_activations_are_refused(layer, reason):
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), layer, L.Dense(2)])
    with pytest.raises(ValueError, match=reason):
        convert(model)


def test_keras_ops_instead_of_layers_are_refused():
    inp = keras.Input((4,))
    out = L.Dense(2)(L.ReLU()(L.Dense(3)(inp)) * 2.0)
    with pytest.raises(ValueError, match="keras.ops operation, not a layer"):
        convert(keras.Model(inp, out))


def test_several_inputs_or_outputs_are_refused():
    a, b = keras.Input((4,)), keras.Input((4,))
    two_inputs = keras.Model([a, b], L.Dense(2)(L.ReLU()(L.Add()([a, b]))))
    with pytest.raises(ValueError, match="2 inputs and 1 outputs"):
        bsnn_tf.convert(two_inputs, np.zeros((2, 4)), verbose=0, calibration="percentile")
    hidden = L.ReLU()(L.Dense(3)(a))
    two_outputs = keras.Model(a, [L.Dense(2)(hidden), L.Dense(2)(hidden)])
    with pytest.raises(ValueError, match="1 inputs and 2 outputs"):
        convert(two_outputs)


def test_softmax_inside_the_network_and_maxpool_on_currents_are_refused():
    inner_softmax = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="softmax"),
                                      L.Dense(2)])
    with pytest.raises(ValueError, match="not on the output"):
        convert(inner_softmax)
    pool_on_current = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3),
                                        L.MaxPooling2D(name="pool"), L.Conv2D(2, 3),
                                        L.ReLU(), L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match="'pool' reads .* not a ReLU output"):
        convert(pool_on_current)


def test_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="no defined input"):
        bsnn_tf.convert(keras.Sequential([L.Dense(2)]), np.zeros((2, 4)), verbose=0, calibration="percentile")
    with pytest.raises(TypeError, match="keras.Model"):
        bsnn_tf.convert(object(), np.zeros((2, 4)), verbose=0, calibration="percentile")


@pytest.mark.parametrize("data, error, match", [
    (np.zeros((4, 5)), ValueError, r"shape \(4, 5\).*expects \(N, 6\)"),
    (np.full((4, 6), np.nan), ValueError, "NaN or infinite"),
    (np.array([[0, 1, 2, 3, 4, np.inf]]), ValueError, "NaN or infinite"),
    (np.zeros((0, 6)), ValueError, "empty"),
    (np.array([["a"] * 6]), TypeError, "numeric"),
    (images(4, (6,)).astype("complex128") + 1j, TypeError, "must be real, got dtype complex128"),
    (np.zeros((4, 6)), ValueError, r"holds a single value \(0\) in all 4 images.*real training"),
    (np.full((4, 6), 0.5, "float32"), ValueError, r"holds a single value \(0.5\)"),
])
def test_bad_calibration_data(data, error, match):
    with pytest.raises(error, match=match):
        convert(dense_net(0), data)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"phases": 0}, ValueError, r"phases=0 is out of range: use 1\.\.24"),
    ({"phases": 25}, ValueError, r"phases=25 is out of range"),
    ({"phases": 2.5}, TypeError, "phases must be an int"),
    ({"method": "ttfs"}, ValueError, "method must be one of"),
    ({"percentile": 0}, ValueError, "percentile=0 is out of range"),
    ({"percentile": 101}, ValueError, "percentile=101 is out of range"),
    ({"input_encoding": "poisson"}, ValueError, "input_encoding"),
    ({"timesteps": -1}, ValueError, "timesteps must be positive"),
    ({"timesteps": 2**32}, ValueError, r"timesteps=4294967296 is too large.*at most 2147483647"),
    ({"batch_size": 0}, ValueError, "batch_size must be a positive int .*got 0"),
    ({"batch_size": -4}, ValueError, "batch_size must be a positive int .*got -4"),
    ({"batch_size": 2.5}, ValueError, "batch_size must be a positive int .*got 2.5"),
    ({"percentile": "99"}, TypeError, r"percentile must be a number in \(0, 100\], got '99' "
                                      r"\(str\)"),
    ({"percentile": True}, TypeError, "percentile must be a number"),
    ({"percentile": float("nan")}, ValueError, "percentile=nan is out of range"),
])
def test_bad_conversion_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        convert(dense_net(0), **kwargs)


def test_spike_encoding_needs_unit_interval_inputs():
    with pytest.raises(ValueError, match=r"needs inputs in \[0, 1\]"):
        convert(dense_net(0), images(4, (6,)), input_encoding="spike")


@pytest.mark.parametrize("timesteps, error, match", [
    (0, ValueError, "timesteps must be positive, got 0"),
    (-8, ValueError, "timesteps must be positive"),
    (8.0, TypeError, "timesteps must be a positive int"),
    ("64", TypeError, "timesteps must be a positive int"),
    (True, TypeError, "timesteps must be a positive int"),
    (2**32, ValueError, "timesteps=4294967296 is too large"),
    (2**31, ValueError, "timesteps=2147483648 is too large"),
])
def test_bad_timesteps(snn, timesteps, error, match):
    with pytest.raises(error, match=match):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=timesteps, verbose=0)


def test_bad_simulation_inputs(snn, rate_snn):
    with pytest.raises(ValueError, match=r"input batch has shape \(2, 8, 8\)"):
        bsnn_tf.simulate(snn, np.zeros((2, 8, 8)), timesteps=8, verbose=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        bsnn_tf.simulate(snn, np.full((2, 8, 8, 2), np.nan), timesteps=8, verbose=0)
    with pytest.raises(ValueError, match="mode='period' is exact for BSNN only"):
        bsnn_tf.simulate(rate_snn, images(2, (6,)), timesteps=8, mode="period", verbose=0)
    with pytest.raises(ValueError, match="mode must be 'period' or 'step'"):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=8, mode="fast", verbose=0)
    with pytest.raises(ValueError, match=r"Time steps \[10\] are not multiples of phases=4"):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=10, verbose=0)
    with pytest.raises(ValueError, match=r"Time steps \[6\] are not multiples of phases=4"):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=8, checkpoints=[6], verbose=0)
    with pytest.raises(ValueError, match="beyond timesteps=8"):
        bsnn_tf.simulate(snn, images(2, (8, 8, 2)), timesteps=8, checkpoints=[16], verbose=0)


class OwnDense(L.Dense):
    def call(self, inputs):
        return super().call(inputs) * 2.0


class RenamedDense(L.Dense):
    pass


def test_subclass_that_overrides_call_is_refused():
    model = keras.Sequential([keras.Input((4,)), OwnDense(3, activation="relu", name="own"),
                              L.LayerNormalization(name="norm"), L.Dense(2)])
    with pytest.raises(ValueError) as error:
        convert(model)
    message = str(error.value)  # listed together with the other unsupported layer
    assert "'own' (OwnDense): subclass of Dense that overrides call()" in message
    assert "'norm' (LayerNormalization)" in message


def test_subclass_that_keeps_call_converts_as_its_base():
    plain = dense_net(0)
    renamed = keras.Sequential([keras.Input((6,))] + [
        RenamedDense(layer.units, activation=layer.activation) for layer in plain.layers])
    renamed.set_weights(plain.get_weights())
    x = images(4, (6,))
    expected = bsnn_tf.simulate(convert(plain, x), x, timesteps=32, verbose=0).outputs
    np.testing.assert_allclose(
        bsnn_tf.simulate(convert(renamed, x), x, timesteps=32, verbose=0).outputs, expected,
        rtol=1e-6, atol=1e-6)


def test_predict_and_call_check_their_input(snn):
    snn.timesteps = 8
    bad = images(2, (8, 8, 2))
    bad[0, 0, 0, 0], bad[1, 3, 3, 1] = np.nan, np.inf
    for run in (lambda x: snn.predict(x, verbose=0), snn):
        with pytest.raises(ValueError, match="input batch contains 2 NaN or infinite values"):
            run(bad)
        with pytest.raises(ValueError, match=r"input batch has shape \(2, 8, 8\), but the model "
                                             r"expects \(N, 8, 8, 2\)"):
            run(np.zeros((2, 8, 8)))


@pytest.mark.parametrize("labels, match", [
    (np.zeros((3,), int), r"labels have shape \(3,\), but there are 2 images"),
    (np.zeros((2, 1), int), r"labels have shape \(2, 1\), but there are 2 images"),
    (np.eye(3)[[0, 1]], r"shape \(2, 3\), .*\(one-hot labels: y.argmax\(axis=1\)\)"),
    (np.array([0.5, 1.0]), "labels must be integer classes"),
    (np.array(["a", "b"]), "labels must be integer classes"),
    (np.array([0, 99]), r"labels span 0..99, but the model has \d+ classes"),
    (np.array([-1, 0]), r"labels span -1..0, but the model has \d+ classes"),
])
def test_bad_labels(snn, labels, match):
    x = images(2, (8, 8, 2))
    with pytest.raises(ValueError, match=match):
        bsnn_tf.evaluate(snn, x, labels, timesteps=8, verbose=0)
    result = bsnn_tf.simulate(snn, x, timesteps=8, verbose=0)
    with pytest.raises(ValueError, match=match):
        result.accuracy(labels)
    assert result.accuracy(np.array([1.0, 2.0])) == np.mean(np.argmax(result.outputs, -1)
                                                           == [1, 2])


@pytest.mark.parametrize("batch_size", [0, -4, 2.5])
def test_bad_batch_size(snn, batch_size):
    x, y = images(2, (8, 8, 2)), np.zeros(2, int)
    with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
        bsnn_tf.simulate(snn, x, timesteps=8, batch_size=batch_size, verbose=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
        bsnn_tf.evaluate(snn, x, y, timesteps=8, batch_size=batch_size, verbose=0)


def test_evaluate_with_no_timesteps(snn):
    with pytest.raises(ValueError, match="timesteps is empty"):
        bsnn_tf.evaluate(snn, images(2, (8, 8, 2)), np.zeros(2, int), timesteps=[], verbose=0)


def test_verify_without_the_ann(snn):
    with pytest.raises(TypeError, match="ann must be the keras.Model .* got NoneType"):
        bsnn_tf.verify(None, snn, images(2, (8, 8, 2)), timesteps=8)


def test_verify_with_another_ann_or_the_arguments_swapped(snn):
    x = images(2, (8, 8, 2))
    with pytest.raises(TypeError, match=r"verify takes the ANN first, then its SNN: "
                                        r"verify\(ann, snn, x, timesteps\); got the "
                                        r"SpikingNetwork '.*' as ann"):
        bsnn_tf.verify(snn, conv_net(0), x, timesteps=8)
    four_classes = keras.Sequential([keras.Input((8, 8, 2)), L.Flatten(), L.Dense(4)])
    with pytest.raises(ValueError, match=r"does not fit snn '.*': the ANN takes images of shape "
                                         r"\(8, 8, 2\) to 4 classes, the SNN \(8, 8, 2\) to "
                                         r"3\. Pass the ANN that the SNN was converted from"):
        bsnn_tf.verify(four_classes, snn, x, timesteps=8)
    three_classes = keras.Sequential([keras.Input((8, 8, 2)), L.Flatten(), L.Dense(3)])
    with pytest.raises(ValueError, match="has none of the layers that snn .* codes"):
        bsnn_tf.verify(three_classes, snn, x, timesteps=8)


def test_converting_an_snn_again_says_convert_its_ann(snn):
    with pytest.raises(TypeError, match=r"is a SpikingNetwork, converted already "
                                        r"\(method='bsnn'\); convert the ANN it came from"):
        convert(snn, images(4, (8, 8, 2)))


def test_calibration_data_of_any_real_dtype_is_accepted():
    model = dense_net(0)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 6))
    reference = bsnn_tf.simulate(convert(model, pixels.astype("float32")), images(2, (6,)),
                                 timesteps=32, verbose=0).outputs
    for dtype in ("uint8", "int64", "float16", "float64"):
        snn = convert(model, pixels.astype(dtype))
        np.testing.assert_array_equal(
            bsnn_tf.simulate(snn, images(2, (6,)), timesteps=32, verbose=0).outputs, reference)


# The example: one hidden layer (D = 1) and K = 4, so the readout counts from
# step 4 and its first whole period ends at T = 8.
def one_layer_snn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu"), L.Dense(4)])
    model.layers[-1].bias.assign(np.arange(4, dtype="float32"))
    return convert(model, images(32, (8,)), timesteps=16, phases=4)


def test_simulating_before_the_first_readout_warns_naming_it():
    snn, x = one_layer_snn(), images(2, (8,))
    with pytest.warns(bsnn_tf.validation.EarlyReadoutWarning,
                      match=r"Time steps \[4\] come before this SNN's first readout at T=8"):
        early = bsnn_tf.simulate(snn, x, timesteps=4, verbose=0)
    np.testing.assert_array_equal(early.outputs, [[0, 1, 2, 3]] * 2)  # the readout bias
    with pytest.warns(bsnn_tf.validation.EarlyReadoutWarning, match=r"Time steps \[4\] "):
        bsnn_tf.simulate(snn, x, timesteps=16, checkpoints=[4, 8], verbose=0)
    with pytest.warns(bsnn_tf.validation.EarlyReadoutWarning, match=r"Time steps \[4\] "):
        bsnn_tf.evaluate(snn, x, np.zeros(2, int), timesteps=[4, 8], verbose=0)
    snn.timesteps = 4
    with pytest.warns(bsnn_tf.validation.EarlyReadoutWarning, match="first readout at T=8"):
        snn.predict(x, verbose=0)


def test_images_far_outside_the_calibration_range_warn_naming_both(tmp_path):
    """Calibrated on [0, 1] images, simulated on the same images times 255: the warning
    names both ranges; images a little past the calibration range pass; a save keeps it."""
    x = images(64, (6,), low=0.0)
    snn = bsnn_tf.convert(dense_net(seed=0), x, verbose=0)
    low, high = float(x.min()), float(x.max())
    assert snn.calibration_range == [low, high]
    with pytest.warns(bsnn_tf.validation.InputRangeWarning,
                      match=rf"span \[0, 255\].* the \[{low:.4g}, {high:.4g}\] of the images "
                            "the SNN was calibrated on"):
        bsnn_tf.simulate(snn, np.concatenate([x, [[0] * 5 + [255]]]), timesteps=16,
                         verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bsnn_tf.validation.InputRangeWarning)
        bsnn_tf.simulate(snn, x * 1.5, timesteps=16, verbose=0)
    snn.save(tmp_path / "snn.keras")
    assert keras.models.load_model(tmp_path / "snn.keras").calibration_range == [low, high]


def test_no_warning_from_the_first_readout_on():
    snn, x = one_layer_snn(), images(2, (8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", bsnn_tf.validation.EarlyReadoutWarning)
        first = bsnn_tf.simulate(snn, x, timesteps=8, verbose=0).outputs
        bsnn_tf.evaluate(snn, x, np.zeros(2, int), timesteps=[8, 16], verbose=0)
        snn.timesteps = 8
        snn.predict(x, verbose=0)
    assert not np.allclose(first, [[0, 1, 2, 3]] * 2)  # T = 8 is read from the input


def one_layer_baseline(method, **kwargs):
    """`one_layer_snn`'s ANN converted with a baseline (K = 8), its readout bias 0..3."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu"), L.Dense(4)])
    model.layers[-1].bias.assign(np.arange(4, dtype="float32"))
    return convert(model, images(32, (8,)), timesteps=16, phases=8, method=method, **kwargs)


@pytest.mark.parametrize("method", ["rate", "phase"])
def test_baselines_read_the_input_from_the_first_step_without_a_warning(method):
    # Their readout counts from step 0, so every T within the first period is an
    # estimate (the rate and phase baselines matched their ANN from T = 4 < K = 8 in
    # convert.py's demo run), not the readout bias.
    snn, x = one_layer_baseline(method), images(2, (8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", bsnn_tf.validation.EarlyReadoutWarning)
        result = bsnn_tf.simulate(snn, x, timesteps=4, checkpoints=[1, 2], verbose=0)
    assert not np.allclose(result.outputs, [[0, 1, 2, 3]] * 2)


def test_a_baseline_whose_readout_waits_warns_where_it_outputs_its_bias():
    snn, x = one_layer_baseline("rate", readout_delay=1), images(2, (8,))
    with pytest.warns(bsnn_tf.validation.EarlyReadoutWarning,
                      match=r"Time steps \[8\] come before this SNN's readout starts counting, "
                            r"after step 8 .*Simulate at least T=9"):
        early = bsnn_tf.simulate(snn, x, timesteps=8, verbose=0)
    np.testing.assert_array_equal(early.outputs, [[0, 1, 2, 3]] * 2)  # the readout bias
    with warnings.catch_warnings():
        warnings.simplefilter("error", bsnn_tf.validation.EarlyReadoutWarning)
        assert not np.allclose(bsnn_tf.simulate(snn, x, timesteps=16, verbose=0).outputs,
                               [[0, 1, 2, 3]] * 2)


def test_the_first_readout_twin_of_a_plain_keras_model_says_convert_it_first():
    with pytest.raises(TypeError, match=r"first_readout_model needs a SpikingNetwork, got a "
                                        r"plain Keras model .*Convert it first"):
        bsnn_tf.twin.first_readout_model(dense_net(0))


def test_finetuning_settings_without_calibration_finetune_are_refused():
    for kwargs, given in ((dict(finetuning=bsnn_tf.conversion.FineTuning(epochs=1)),
                           "finetuning is"),
                          (dict(finetuning=bsnn_tf.conversion.FineTuning(),
                                calibration_labels=np.zeros(4, int)),
                           "finetuning and calibration_labels are")):
        with pytest.raises(ValueError, match=f"{given} used by calibration='finetune' only, "
                                             "but calibration='percentile': nothing would be "
                                             "fine-tuned. Pass calibration='finetune', or leave"):
            convert(dense_net(0), **kwargs)


def test_simulating_a_plain_keras_model_says_convert_it_first():
    model = dense_net(0)
    for run in (lambda: bsnn_tf.simulate(model, images(4, (6,)), timesteps=16),
                lambda: bsnn_tf.evaluate(model, images(4, (6,)), np.zeros(4, int), 16)):
        with pytest.raises(TypeError, match=r"needs a SpikingNetwork, got a plain Keras model "
                                            r"\(Sequential '.*'\)\. Convert it first: "
                                            r"snn = bsnn_tf.convert"):
            run()


class TwoDense(keras.Model):
    """A subclassed model: its graph exists only in call()."""

    def __init__(self):
        super().__init__(name="two_dense")
        self.hidden, self.out = L.Dense(12, activation="relu"), L.Dense(4)

    def call(self, x):
        return self.out(self.hidden(x))


def test_a_subclassed_model_called_on_a_batch_converts_like_its_functional_twin():
    subclassed = TwoDense()
    subclassed(images(2, (6,)))
    inp = keras.Input((6,))
    twin = keras.Model(inp, L.Dense(4)(L.Dense(12, activation="relu")(inp)))
    twin.set_weights(subclassed.get_weights())
    x = images(16, (6,))
    simulate = lambda model: bsnn_tf.simulate(convert(model, x), x, timesteps=64,
                                              verbose=0).outputs
    np.testing.assert_array_equal(simulate(subclassed), simulate(twin))


def test_an_unbuilt_subclassed_model_is_asked_to_be_called_first():
    with pytest.raises(ValueError, match="no defined input; .*call it on a batch"):
        bsnn_tf.convert(TwoDense(), images(4, (6,)), verbose=0)


def test_a_model_of_any_image_size_converts_for_the_calibration_size():
    def model(shape):
        keras.utils.set_random_seed(0)
        inp = keras.Input(shape)
        x = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, activation="relu")(inp))
        return keras.Model(inp, L.Dense(3)(x))

    x = images(8, (6, 6, 1))
    any_size, fixed = model((None, None, 1)), model((6, 6, 1))
    fixed.set_weights(any_size.get_weights())
    outputs = [bsnn_tf.simulate(convert(m, x), x, timesteps=32, verbose=0).outputs
               for m in (any_size, fixed)]
    np.testing.assert_array_equal(*outputs)
    with pytest.raises(ValueError, match=r"has shape \(2, 7, 7, 1\), but the model expects "
                                         r"\(N, 6, 6, 1\)"):
        bsnn_tf.simulate(convert(any_size, x), images(2, (7, 7, 1)), timesteps=8, verbose=0)
