"""The stages of a run, in order: load and check the ANN, load the images, evaluate the
ANN, convert with each method, simulate and verify each SNN, write the run directory."""

import functools
import time

import keras
import numpy as np

import bsnn_tf
from bsnn_tf import backend, console, metrics, rundir
from bsnn_tf.pipeline.checkpoints import check_convertible, check_fits, load_ann
from bsnn_tf.pipeline.config import ANN_BATCH, validate
from bsnn_tf.pipeline.images import load_images
from bsnn_tf.pipeline.results import (VERIFY_IMAGES, MethodRun, accuracy_figure,
                                      accuracy_table, run_results, write_run)
from bsnn_tf.pipeline.timesteps import (BASELINE_TIMESTEPS, converged_at,
                                        default_timesteps, first_measured, has_first_readout,
                                        measured_timesteps)


def run(config, command=None):
    """Converts, simulates and verifies `config.model`, then writes `config.output_dir`.

    Args:
        config: a `ConvertConfig`.
        command: the command line, recorded in results.json.

    Returns:
        The dict written to `<output_dir>/results.json`.

    Raises:
        ConfigError, data.DatasetNotFoundError, data.CorruptDataError: before
            anything is simulated or written (a ConfigError also while another run holds
            `rundir.run_lock(config.output_dir)`).
    """
    start = time.time()
    validate(config)
    with rundir.run_lock(config.output_dir):
        return _run(config, command, start)


def _run(config, command, start):
    ann = _checked_ann(config)
    images = load_images(config)
    ann_accuracy = evaluate_ann(config, ann, images.x_test, images.y_test)
    snns = {method: convert_method(config, method, ann, images.x_calibration,
                                   images.y_calibration)
            for method in config.methods}
    timesteps = config.timesteps or default_timesteps(snns.values(), config.dataset)
    checkpoints = measured_timesteps(config, snns.values(), timesteps)
    runs = {method: simulate_method(config, snn, ann, images.x_test, images.y_test, timesteps,
                                    checkpoints, ann_accuracy)
            for method, snn in snns.items()}
    results = run_results(config, images, ann_accuracy, checkpoints, runs, command,
                          seconds=time.time() - start)
    print("\n" + accuracy_table(results))
    figure = accuracy_figure(config, runs, ann_accuracy, len(images.x_test))
    write_run(config.output_dir, results, runs, figure, overwrite=config.overwrite)
    print(f"Wrote {config.output_dir}")
    return results


def _checked_ann(config):
    """The ANN, checked to fit the dataset and to convert, before any image is read."""
    ann = load_ann(config)
    check_fits(ann, config.dataset)
    check_convertible(ann)
    return ann


def evaluate_ann(config, ann, x_test, y_test):
    """The ANN's top-1 accuracy on the evaluated images."""
    logits = predict(ann, x_test, config.batch_size or ANN_BATCH, config.distribute,
                     stage=f"ANN {ann.name} on {len(x_test)} {config.dataset} test images")
    accuracy = float(np.mean(np.argmax(logits, -1) == y_test))
    print(f"ANN accuracy {accuracy:.2%}")
    return accuracy


def predict(model, x, batch_size, distribute=False, stage=None):
    """`model.predict(x)` with `console.Progress` over images; with `distribute`, every
    batch split over all local devices.

    The split is the Keras engine's (`backend.distribution_scope`), run by a
    copy of `model` built in that scope; `x` and the batches are padded to
    multiples of the device count (JAX splits batches in equal parts).
    """
    progress = console.Progress(len(x), stage or f"Predicting with {model.name}")
    callbacks = [_ProgressCallback(progress, batch_size, len(x))]
    if not distribute:
        return model.predict(x, batch_size=batch_size, verbose=0, callbacks=callbacks)
    count = backend.devices(True).count
    padding = np.zeros((-len(x) % count,) + x.shape[1:], x.dtype)
    with backend.distribution_scope(True):
        replica = keras.models.clone_model(model)
        replica.set_weights(model.get_weights())
        return replica.predict(np.concatenate([x, padding]),
                               batch_size=-(-batch_size // count) * count, verbose=0,
                               callbacks=callbacks)[:len(x)]


class _ProgressCallback(keras.callbacks.Callback):
    """Reports `predict`'s batches to a `console.Progress` as images."""

    def __init__(self, progress, batch_size, count):
        super().__init__()
        self.progress, self.batch_size, self.count = progress, batch_size, count

    def on_predict_batch_end(self, batch, logs=None):
        self.progress.update(min((batch + 1) * self.batch_size, self.count))


def convert_method(config, method, ann, x_calibration, y_calibration=None):
    """`ann` converted with `method` as `config` says."""
    print(f"\nConverting with method={method} on {len(x_calibration)} calibration images:")
    finetuning, auto = config.calibration == "finetune", config.auto_phases
    # The labels serve fine-tuning where asked; --phases auto's held-out accuracy where
    # fine-tuning does not learn from them (else it measures agreement with the ANN).
    labels = config.finetune_labels if finetuning else auto
    snn = bsnn_tf.convert(
        ann, x_calibration, method=method, phases=config.phases_of(method),
        calibration=config.calibration, percentile=config.percentile,
        channelwise=config.channelwise, synchronous=config.synchronous,
        timesteps=config.timesteps or BASELINE_TIMESTEPS.get(config.dataset, 256),
        batch_size=config.batch_size,
        calibration_labels=y_calibration if labels else None,
        finetuning=config.finetuning if finetuning else None,
        latency=config.latency if auto else None,
    )
    if auto:
        config.searched(method, snn.phases)
        print(f"--phases auto chose K = {snn.phases}, T = {snn.timesteps} "
              f"({snn.latency_search['seconds']:.0f} s)")
    print(f"{snn.name}: spiking depth D = {snn.depth}, first readout at T = "
          f"{snn.first_readout}" if has_first_readout(snn) else f"{snn.name} converted")
    return snn


def simulate_method(config, snn, ann, x_test, y_test, timesteps, checkpoints, ann_accuracy):
    """Accuracy at `checkpoints` on every test image (a logits-only simulation), then the
    spike statistics on the first `config.statistics_images` of them and the layer-by-layer
    verification on `VERIFY_IMAGES`."""
    snn.timesteps = timesteps  # what the saved SNN simulates when called
    simulate = functools.partial(bsnn_tf.simulate, snn, timesteps=timesteps,
                                 batch_size=config.batch_size, distribute=config.distribute)
    # Before a BSNN's first readout its output is the readout bias: not measured (None).
    measured = [t for t in checkpoints if t >= first_measured(snn, timesteps)]
    print(f"Accuracy of {snn.name} ({snn.mode} mode, logits only) at {len(measured)} T "
          f"up to {timesteps}:")
    outputs = simulate(x_test, checkpoints=measured, count_spikes=False)
    accuracy = {t: outputs.accuracy(y_test, t) if t in measured else None for t in checkpoints}
    sample = x_test[:config.statistics_images or None]
    print(f"Spike statistics of {snn.name} at T={timesteps} on {len(sample)} of the "
          f"{len(x_test)} images (every spike counted):")
    statistics = simulate(sample, checkpoints=[timesteps], ann=ann)
    verification = bsnn_tf.verify(ann, snn, x_test[:VERIFY_IMAGES], timesteps,
                                  batch_size=config.batch_size)
    print(verification)
    metrics.summary(snn, statistics)
    return MethodRun(snn, statistics, verification, accuracy,
                     converged_at(accuracy, ann_accuracy))
