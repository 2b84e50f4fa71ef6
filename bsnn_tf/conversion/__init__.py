"""ANN-to-SNN conversion, `bsnn_tf.convert`: the named stages of STAGES, in order, one module each.

- trace        `trace.py`: every layer has a converter (`converters.py`,
               `weightless.py`), or one error lists those that do not; the graph
- fold         `fold.py`: BatchNormalization into Conv/Dense, identities removed
- calibrate    `scale_search.py`: each spiking layer's scale lambda, from the
               ANN's activation statistics (`statistics.py`) by percentile or
               quantisation-error search (the modes: `calibration.py`)
- finetune     `finetune.py` (calibration="finetune"): the first readout trained
               against the ANN, from the calibrated scales
- normalize    `normalize.py`: data-norm of weights and biases, residual scaling
- correct      `correction.py` (calibration "light", "advanced"): bias correction
               and weight reconstruction
- synchronize  `synchronize.py`: synchronous layers on short merge branches,
               start periods
- build        `build.py`: the SpikingNetwork (a keras.Model)

What each kind of graph node means to these stages is its record in the op
table (`ops.py`), registered beside its converter (`converters.py`); what
each method changes is its record in `bsnn_tf.methods`; the settings of one
conversion, checked before the first stage, are a `ConversionConfig`
(`config.py`), which the stages that need several settings receive whole.

Example:
    >>> snn = bsnn_tf.convert(ann, x_train[:500], phases=4)
    >>> accuracy = bsnn_tf.evaluate(snn, x_test, y_test, timesteps=[64, 128])
    >>> sorted(accuracy)
    [64, 128]
"""

import keras

from bsnn_tf import batches, coding, quantized
from bsnn_tf.validation import check_calibration_data
from bsnn_tf.methods import DEFAULT_PHASES
from bsnn_tf.conversion.build import build
from bsnn_tf.conversion.calibration import DEFAULT_CALIBRATION, MODES
from bsnn_tf.conversion.correction import correct
from bsnn_tf.conversion.scale_search import calibrate
from bsnn_tf.conversion.statistics import ActivationStatistics, default_batch_size
from bsnn_tf.conversion.config import ConversionConfig
from bsnn_tf.conversion.finetune import FineTuning, finetune
from bsnn_tf.conversion.fold import fold
from bsnn_tf.conversion.latency import LatencySearch, search as search_latency
from bsnn_tf.conversion.converters import LayerConverter, register
from bsnn_tf.conversion.trace import trace
from bsnn_tf.conversion.graph import Graph, Node
from bsnn_tf.conversion.keras_graph import to_keras
from bsnn_tf.conversion.ops import Op, register_op
from bsnn_tf.conversion.normalize import normalize
from bsnn_tf.conversion.synchronize import spiking_depths, synchronize

# The stages of `convert`, by name, in the order `_convert` runs them (one module each).
STAGES = ("trace", "fold", "calibrate", "finetune", "normalize", "correct", "synchronize",
          "build")

_DEFAULT = ConversionConfig.default  # each setting's default is defined there, once


def convert(model, calibration_data, *, method="bsnn", phases=None,
            calibration=_DEFAULT("calibration"), percentile=_DEFAULT("percentile"),
            channelwise=_DEFAULT("channelwise"), synchronous=_DEFAULT("synchronous"),
            input_encoding=_DEFAULT("input_encoding"), initial_membrane=None,
            readout_delay=_DEFAULT("readout_delay"), timesteps=_DEFAULT("timesteps"),
            batch_size=_DEFAULT("batch_size"), dtype=_DEFAULT("dtype"),
            calibration_labels=None, finetuning=None, tolerance=None, latency=None,
            verbose="auto"):
    """Converts a trained Keras ReLU classifier into a spiking network.

    Args:
        model: a built Sequential or Functional keras.Model with one input and one
            output; a subclassed keras.Model is traced by calling it on a symbolic
            input of the shape it was built with.
        calibration_data: training images (N, *input_shape) for the data-norm
            statistics; real-valued, not all one value. An array, or a stream of
            batches (`tf.data.Dataset`, `keras.utils.PyDataset`, generator; labels in
            it are not used): a stream is read once, into memory, since the
            calibration modes pass over the images several times. Where the model's input
            shape leaves a size open (None), the SNN takes the size of these images.
        method: "bsnn" (bistable neurons, phase code), "phase" (weighted spikes,
            Kim et al. 2018) or "rate" (IF with soft reset, Rueckauer et al. 2017).
        phases: K, phases per period, 1..24. Default: `DEFAULT_PHASES[method]`,
            4 for BSNN (chosen by the time-step study in docs/RESULTS.md),
            8 for the phase baseline (Kim et al. 2018). "auto" (BSNN): the K and
            T with the lowest lossless latency on held-out calibration images
            (`latency.py`); `snn.timesteps` is set to that T and
            `snn.latency_search` records the search.
        calibration: how each spiking layer is fitted to the ANN on the
            calibration data (docs/DESIGN.md, "Calibration"): "percentile"
            (lambda = the percentile below), "mse" (lambda with the smallest
            quantisation error), "light" ("mse" + bias correction),
            "advanced" ("light" + layer-wise weight reconstruction) or
            "finetune" (BSNN: the first readout trained end to end against the
            ANN, `finetune.py`; it needs thousands of images). For BSNN they fit
            the first readout; for the baselines, `timesteps`.
        percentile: data-norm statistic of each layer's activations (100 = max).
        channelwise: one statistic per channel instead of per layer.
        synchronous: insert synchronous layers on short merge branches (BSNN);
            False for ablations.
        input_encoding: "real" (input as a constant current) or "spike"
            (phase-coded input spikes; inputs must lie in [0, 1]).
        initial_membrane: neurons' membrane at rest, in units of the smallest
            spike weight; 0.5 rounds instead of truncating. Default: 0.5 for
            BSNN, 0 for the baselines (as in their papers).
        readout_delay: periods the readout waits beyond the first one with
            valid output (BSNN: the spiking depth D; baselines: 0).
        timesteps: steps that calling the returned model simulates (and the
            baselines' calibration target).
        batch_size: calibration batch size (default: `statistics.default_batch_size`,
            at most 64 images, fewer where their activations would not fit its budget).
        dtype: "float32", or "float64" for exact comparisons.
        calibration_labels: integer labels of `calibration_data`; "finetune" then
            also learns from them (else it learns from the ANN alone), and
            phases="auto" measures accuracy on its held-out images with them
            (else agreement with the ANN).
        finetuning: a `FineTuning` (epochs, learning rate, ...) for "finetune";
            default `FineTuning()`.
        tolerance: phases="auto": the percentage points of held-out accuracy the
            SNN may lose against the ANN, in images (default 0.1: of 1,000 held-out
            images, one; of 500, none).
        latency: phases="auto": a `LatencySearch` for the other settings (the K
            searched, the share held out, the periods measured); its tolerance
            gives way to `tolerance` where that is given.

    Returns:
        A `SpikingNetwork`.

    Raises:
        ValueError / TypeError: an unsupported layer or activation, bad
            calibration data, or an argument out of range; the message says
            which and what to do.
    """
    auto = isinstance(phases, str) and phases == "auto"
    phases, initial_membrane = _trained_settings(model, method, phases, initial_membrane)
    config = ConversionConfig.resolve(
        method=method, phases=None if auto else phases, calibration=calibration,
        percentile=percentile, channelwise=channelwise, synchronous=synchronous,
        input_encoding=input_encoding, initial_membrane=initial_membrane,
        readout_delay=readout_delay, timesteps=timesteps, batch_size=batch_size, dtype=dtype,
        finetuning=finetuning, calibration_labels=None if auto else calibration_labels)
    if not auto:
        if tolerance is not None or latency is not None:
            raise ValueError("tolerance and latency are settings of phases='auto'; pass "
                             "phases='auto', or leave them out.")
        return _convert(model, calibration_data, config, calibration_labels, verbose)
    settings = config.latency_search(latency, tolerance)
    # The model and the images are checked before the search's first conversion.
    data = check_calibration_data(calibration_data, trace(model).input_shape)
    return search_latency(model, data, calibration_labels, config, _convert, settings, verbose)


def _convert(model, calibration_data, config, calibration_labels, verbose):
    """`convert` at the fixed K of `config`, a checked `ConversionConfig`."""
    graph = fold(trace(model))
    if batches.is_stream(calibration_data):
        calibration_data, _ = batches.collect(calibration_data,
                                              image_rank=len(graph.input_shape))
    data = check_calibration_data(calibration_data, graph.input_shape)
    graph.input_shape = tuple(data.shape[1:])  # sizes the model leaves open (None)
    input_scale = _input_scale(data, config.input_encoding)
    batch_size = config.batch_size or default_batch_size(graph)
    lambdas = calibrate(graph, data, config.percentile, config.per_channel, batch_size,
                        verbose, mode=config.scale_mode, quantizer=config.quantizer())
    input_code = _input_code(config.input_encoding, input_scale, config.phases)
    record = None
    if config.calibration == "finetune":
        graph, lambdas, record = finetune(
            graph, lambdas, data, calibration_labels, config,
            input_code and (lambda x: input_code(x) * input_scale), verbose)
    graph = normalize(graph, lambdas, input_scale)
    graph = correct(graph, data, config, input_code, input_scale, batch_size, verbose)
    graph = synchronize(graph, enabled=config.synchronize)
    return build(graph, config, input_scale, name=f"{model.name}_{config.method.name}",
                 calibration_record=record,
                 calibration_range=(float(data.min()), float(data.max())))


def _trained_settings(model, method, phases, initial_membrane):
    """(phases, initial_membrane): those a model trained with `QuantizedReLU` layers was
    trained for, unless given; a ValueError naming the layer where a BSNN would differ."""
    if not isinstance(model, keras.Model):
        return phases, initial_membrane  # `trace` says what is wrong with it
    trained = quantized.trained_settings(model)
    if not trained or method != "bsnn":
        return phases, initial_membrane
    if len(trained) > 1:
        raise ValueError(f"The QuantizedReLU layers of '{model.name}' were trained for "
                         f"different (phases, initial_membrane): {sorted(trained)}; a BSNN "
                         "has one K and one membrane at rest.")
    (trained_phases, trained_membrane), layer = next(iter(trained.items()))
    for name, given, wanted in (("phases", phases, trained_phases),
                                ("initial_membrane", initial_membrane, trained_membrane)):
        if given is not None and given != wanted:
            raise ValueError(
                f"Layer '{layer}' was trained for {name}={wanted}, but {name}={given} was "
                f"given: its BSNN would not be the trained network at its first readout. "
                f"Convert with {name}={wanted} (or leave it out).")
    return trained_phases, trained_membrane


def _input_code(input_encoding, input_scale, phases):
    """x -> what the input layer sends, in the normalised graph's units."""
    if input_encoding == "real":
        return None
    return lambda x: coding.quantize(x / input_scale, phases)


def _input_scale(data, input_encoding):
    """lambda_0: 1 for real-valued input; the input maximum for spike input."""
    if input_encoding == "real":
        return 1.0
    if data.min() < 0 or data.max() > 1:
        raise ValueError(
            "input_encoding='spike' needs inputs in [0, 1]; the calibration data spans "
            f"[{data.min():.3g}, {data.max():.3g}]. Use input_encoding='real'."
        )
    return float(data.max()) or 1.0


__all__ = ["convert", "STAGES", "ConversionConfig", "FineTuning", "LatencySearch", "DEFAULT_PHASES", "trace", "fold", "calibrate",
           "correct", "MODES", "normalize", "synchronize", "build", "to_keras", "Graph", "Node",
           "LayerConverter", "register", "ActivationStatistics", "spiking_depths", "Op",
           "register_op"]
