"""The stages of a run, in order: load and check the ANN, choose the images, convert with
each method, one pass over the evaluated images (the ANN, every SNN, the spike statistics;
resumable), verify each SNN, write the run directory."""

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time

import keras
import numpy as np

import bsnn_tf
from bsnn_tf import backend, console, data, metrics
from bsnn_tf.runs import partial, rundir
from bsnn_tf.runs.checkpoints import check_convertible, check_fits, load_ann
from bsnn_tf.runs.checks import ConfigError
from bsnn_tf.runs.config import ANN_BATCH, check_run_config
from bsnn_tf.runs.images import load_images
from bsnn_tf.runs.results import (VERIFY_IMAGES, MethodRun, accuracy_figure,
                                  accuracy_table, run_results, write_run)
from bsnn_tf.runs.timesteps import (BASELINE_TIMESTEPS, converged_at,
                                    default_timesteps, first_measured, has_first_readout,
                                    measured_timesteps)


def run(config, command=None):
    """Converts, simulates and verifies `config.model`, then writes `config.output_dir`.

    Args:
        config: a `RunConfig`.
        command: the command line, recorded in results.json.

    Returns:
        The dict written to `<output_dir>/results.json`.

    Raises:
        ConfigError, data.DatasetNotFoundError, data.CorruptDataError: before
            anything is simulated or written (a ConfigError also while another run holds
            `rundir.run_lock(config.output_dir)`).
    """
    start = time.time()
    check_run_config(config)
    with rundir.run_lock(config.output_dir):
        return _run(config, command, start)


def _run(config, command, start):
    ann = _checked_ann(config)
    images = load_images(config)
    partial_dir = rundir.partial_directory(config.output_dir)
    resumed = _resumed_state(config, images, partial_dir)
    snns = {method: convert_method(config, method, ann, images.x_calibration,
                                   images.y_calibration)
            for method in config.methods}
    timesteps = config.timesteps or default_timesteps(snns.values(), config.dataset)
    checkpoints = measured_timesteps(config, snns.values(), timesteps)
    state = one_pass(config, ann, snns, images, timesteps, checkpoints, partial_dir, resumed)
    ann_accuracy = state.ann_correct / state.images
    print(f"ANN accuracy {ann_accuracy:.2%}")
    runs = {method: _method_run(config, snn, ann, state, method, timesteps, checkpoints,
                                ann_accuracy)
            for method, snn in snns.items()}
    results = run_results(config, state, len(images.x_calibration), images.calibration,
                          ann_accuracy, checkpoints, runs, command, seconds=time.time() - start)
    print("\n" + accuracy_table(results))
    figure = accuracy_figure(config, runs, ann_accuracy, state.images)
    write_run(config.output_dir, results, runs, figure, overwrite=config.overwrite)
    shutil.rmtree(partial_dir, ignore_errors=True)
    print(f"Wrote {config.output_dir}")
    return results


def _resumed_state(config, images, partial_dir):
    """The finished batches of a stopped run of `config.output_dir`, with `resume`; None
    to start from the first image. Without `resume`, an unfinished run there is refused
    (its batches would be lost) unless `overwrite` says to start over.

    Raises:
        ConfigError: that run was of other flags or images (checked before conversion;
            `one_pass` checks T and the SNNs), or is there without `resume`/`overwrite`.
    """
    state = partial.load(partial_dir) if os.path.isdir(partial_dir) else None
    if state is None or config.resume:
        if state is not None:
            _check_same_run(state.fingerprint, _fingerprint(config, images), partial_dir)
        if config.resume:
            print(f"Resuming after {state.done} evaluated images ({partial_dir})." if state else
                  f"Nothing to resume in {partial_dir}; starting from the first image.")
        return state
    if not config.overwrite:
        raise ConfigError(
            f"{config.output_dir!r} has an unfinished run ({state.done} images done, kept in "
            f"{partial_dir}); pass --resume to continue it, or --overwrite to start over.")
    shutil.rmtree(partial_dir)
    return None


def _checked_ann(config):
    """The ANN, checked to fit the dataset and to convert, before any image is read."""
    ann = load_ann(config)
    check_fits(ann, config.dataset)
    check_convertible(ann)
    return ann


def predict(model, x, batch_size, distribute=False, stage=None):
    """`model.predict(x)` with `console.Progress` over images; with `distribute`, every
    batch split over all local devices (`_predictor`)."""
    progress = console.Progress(len(x), stage or f"Predicting with {model.name}")
    callbacks = [_ProgressCallback(progress, batch_size, len(x))]
    return _predictor(model, batch_size, distribute)(x, callbacks)


def _predictor(model, batch_size, distribute=False):
    """`predict(x, callbacks=None)`: `model.predict` in batches of `batch_size`, or,
    without callbacks, `predict_on_batch` on the same slices (no set-up per call: the one
    pass calls it on every batch); with `distribute`, every batch split over all local
    devices.

    The split is the Keras engine's (`backend.distribution_scope`), run by a
    copy of `model` built once in that scope; `x` and the batches are padded to
    multiples of the device count (JAX splits batches in equal parts).
    """
    runner, count = model, 1
    if distribute:
        count = backend.devices(True).count
        with backend.distribution_scope(True):
            runner = keras.models.clone_model(model)
            runner.set_weights(model.get_weights())
    step = -(-batch_size // count) * count

    def predict_batches(x, callbacks=None):
        padded = np.concatenate([x, np.zeros((-len(x) % count,) + x.shape[1:], x.dtype)])
        with backend.distribution_scope(distribute):
            if callbacks is not None:
                return runner.predict(padded, batch_size=step, verbose=0,
                                      callbacks=callbacks)[:len(x)]
            return np.concatenate([np.asarray(runner.predict_on_batch(padded[i:i + step]))
                                   for i in range(0, len(padded), step)])[:len(x)]

    return predict_batches


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
        record = snn.latency_search
        chosen, held_out = record["chosen"], record["held_out_images"]
        net_pp = 0.0 - chosen["loss_pp"]  # no loss prints "+0.00", where -0.0 would be "-0.00"
        print(f"--phases auto chose K = {snn.phases}, T = {snn.timesteps} "
              f"({record['seconds']:.0f} s): on {held_out} held-out images it loses "
              f"{chosen['losses']} and gains {chosen['gains']} against the ANN, "
              f"{net_pp:+.2f} +- {chosen['standard_error_pp']:.2f} pp; "
              + _firmness(chosen))
    print(f"{snn.name}: spiking depth D = {snn.depth}, first readout at T = "
          f"{snn.first_readout}" if has_first_readout(snn) else f"{snn.name} converted")
    return snn


def _firmness(chosen):
    """How often bootstrap resamples of the held-out images choose the same K, and at
    which T (`conversion.stability`)."""
    resampled = chosen["resampled"]
    line = (f"{resampled['share_same_phases']:.0%} of {resampled['resamples']} resamples "
            f"of them choose K = {chosen['phases']}")
    quartiles = resampled["timesteps_quartiles"]
    return line + (f", at T {quartiles[0]}-{quartiles[2]} (quartiles)" if quartiles else "")


def one_pass(config, ann, snns, images, timesteps, checkpoints, partial_dir, state=None):
    """One pass over the evaluated images, a batch at a time, each decoded once: the ANN,
    every method's simulation (correct counts at the measured checkpoints): logits-only,
    but on the first `config.statistics_images`, which are simulated once, counting their
    spikes (the spike statistics) on the same schedule. After each batch
    the totals are saved in `partial_dir` (`partial.save`), so that a stopped run can be
    resumed from `state`, the `partial.PassState` it left.

    Returns:
        The `partial.PassState` of every evaluated image.

    Raises:
        ConfigError: `state` is of another run (other flags, images or SNNs).
        data.CorruptDataError: an image cannot be read (without `skip_unreadable`);
            the batches before it are saved.
    """
    fingerprint = _fingerprint(config, images, snns, timesteps, checkpoints)
    if state is not None:
        _check_same_run(state.fingerprint, fingerprint, partial_dir)
    measured = {method: [t for t in checkpoints if t >= first_measured(snn, timesteps)]
                for method, snn in snns.items()}
    state = state or partial.PassState(fingerprint, correct={
        method: [0] * len(measured[method]) for method in snns})
    count = len(images.evaluated)
    simulators = {method: bsnn_tf.Simulator(
        snn, timesteps=timesteps, checkpoints=measured[method], batch_size=config.batch_size,
        distribute=config.distribute, count_spikes=False, keep_outputs=False, images=count)
        for method, snn in snns.items()}
    batch_size = config.batch_size or max(s.batch_size for s in simulators.values())
    statistics = {method: _statistics_simulator(config, snn, ann, timesteps, measured[method],
                                                batch_size,
                                                min(config.statistics_images or count, count))
                  for method, snn in snns.items()}
    ann_logits = _predictor(ann, config.batch_size or ANN_BATCH, config.distribute)
    _announce(config, snns, measured, timesteps, count)
    saved = dict(state.statistics)
    progress = console.Progress(len(images.evaluated),
                                f"ANN and {', '.join(snns)} on {config.dataset} test images")
    progress.update(state.done)
    batches = images.batches(batch_size, state.done, config.skip_unreadable)
    for batch in _kept_on_error(batches, state, partial_dir):
        wanted = _statistics_wanted(config, state, len(batch.x))
        _add_batch(state, batch, ann_logits, simulators, statistics, measured, wanted)
        if wanted:
            for method, simulator in statistics.items():
                state.statistics[method] = partial.combined(saved.get(method),
                                                            simulator.result())
        kept = _keep_verification_images(state, batch)
        state.done += batch.count
        state.images += len(batch.x)
        state.unreadable += [message for _, message in batch.unreadable]
        partial.save(partial_dir, state, statistics_changed=bool(wanted) or kept)
        progress.update(state.done)
    if not state.images:
        raise data.CorruptDataError(f"None of the {len(images.evaluated)} evaluated images of "
                                    f"{images.test.source} could be read.")
    return state


def _statistics_simulator(config, snn, ann, timesteps, checkpoints, batch_size, count):
    """The `Simulator` that counts spikes (on the schedule) on the first `count` images,
    fed slices of the pass's batches of `batch_size`; its logits at `checkpoints` score
    those images (each is simulated once). Its own batch (smaller: it carries counters) is made to
    divide the pass's, so that no slice is padded but the last."""
    simulator = functools.partial(bsnn_tf.Simulator, snn, timesteps=timesteps,
                                  checkpoints=checkpoints, ann=ann, images=count,
                                  distribute=config.distribute, keep_outputs="final")
    if config.batch_size:
        return simulator(batch_size=config.batch_size)
    default = simulator().batch_size
    return simulator(batch_size=-(-batch_size // -(-batch_size // default)))


def _announce(config, snns, measured, timesteps, count):
    for method, snn in snns.items():
        print(f"Accuracy of {snn.name} ({snn.mode} mode, logits only) at "
              f"{len(measured[method])} T up to {timesteps} on {count} images; spike "
              f"statistics at T={timesteps} (spikes counted on the schedule) on the first "
              f"{min(config.statistics_images or count, count)}.")


def _kept_on_error(batches, state, partial_dir):
    """`batches`, with the message of an unreadable image saying what was kept."""
    try:
        yield from batches
    except data.CorruptDataError as error:
        raise data.CorruptDataError(
            f"{error}\nThe {state.done} evaluated images before it are kept in {partial_dir}: "
            "replace the file with a readable copy and rerun with --resume, or rerun with "
            "--resume --skip_unreadable to skip it (and any other) and list it in "
            "results.json.") from error


def _add_batch(state, batch, ann_logits, simulators, statistics, measured, counted):
    """Adds the ANN's and every method's correct counts on `batch` to `state`: the first
    `counted` images simulated by the method's `statistics` simulator (which counts their
    spikes as it goes), the rest by its logits-only one."""
    if not len(batch.x):
        return
    state.ann_correct += _correct(ann_logits(batch.x), batch.y)
    for method, simulator in simulators.items():
        for runner, part in ((statistics[method], slice(None, counted)),
                             (simulator, slice(counted, None))):
            if len(batch.x[part]):
                outputs = runner.update(batch.x[part])
                for i, t in enumerate(measured[method]):
                    state.correct[method][i] += _correct(outputs[t], batch.y[part])


def _correct(logits, labels):
    return int(np.sum(np.argmax(np.asarray(logits), axis=-1) == labels))


def _statistics_wanted(config, state, count):
    """How many images of the next batch (of `count`) the spike statistics still need."""
    if not config.statistics_images:
        return count
    return max(0, min(count, config.statistics_images - state.statistics_images))


def _keep_verification_images(state, batch):
    """Keeps the first `VERIFY_IMAGES` evaluated images in `state`; whether it took any."""
    have = 0 if state.verify_x is None else len(state.verify_x)
    if have >= VERIFY_IMAGES or not len(batch.x):
        return False
    take = VERIFY_IMAGES - have
    state.verify_x = batch.x[:take] if state.verify_x is None else np.concatenate(
        [state.verify_x, batch.x[:take]])
    state.verify_y = batch.y[:take] if state.verify_y is None else np.concatenate(
        [state.verify_y, batch.y[:take]])
    return True


def _fingerprint(config, images, snns=None, timesteps=None, checkpoints=None):
    """What the pass's totals depend on: the flags (but where the results go and whether
    to skip, resume or overwrite) and the images; given the SNNs, also T, the checkpoints
    and each SNN's weights."""
    flags = dataclasses.asdict(config)
    for name in ("output_dir", "overwrite", "resume", "skip_unreadable"):
        flags.pop(name)
    fingerprint = {"flags": flags, "test images": [images.test.source, len(images.test)],
                   "evaluated images": len(images.evaluated)}
    if snns is not None:
        fingerprint.update({"T": timesteps, "checkpoints": checkpoints, "SNN weights": {
            method: _weights_digest(snn) for method, snn in snns.items()}})
    return json.loads(json.dumps(fingerprint))


def _weights_digest(model):
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def _check_same_run(saved, now, partial_dir):
    """ConfigError unless the `saved` fingerprint of a stopped run agrees with `now`."""
    differing = [key for key in now if key != "flags" and saved.get(key) != now[key]]
    differing += [f"--{name}" for name, value in now["flags"].items()
                  if saved.get("flags", {}).get(name) != value]
    if differing:
        raise ConfigError(
            f"The unfinished run in {partial_dir} was of other settings, images or models "
            f"({', '.join(differing)} differ); rerun with those of that run, or without "
            "--resume and with --overwrite to start over.")


def _method_run(config, snn, ann, state, method, timesteps, checkpoints, ann_accuracy):
    """The `MethodRun` of `method` from the pass's totals: accuracy per checkpoint (None
    before the first readout), the statistics, and the verification on the first
    `VERIFY_IMAGES` images."""
    snn.timesteps = timesteps  # what the saved SNN simulates when called
    counts = dict(zip([t for t in checkpoints if t >= first_measured(snn, timesteps)],
                      state.correct[method]))
    accuracy = {t: counts[t] / state.images if t in counts else None for t in checkpoints}
    verification = bsnn_tf.verify(ann, snn, state.verify_x, timesteps,
                                  batch_size=config.batch_size)
    print(verification)
    metrics.summary(snn, state.statistics[method])
    return MethodRun(snn, state.statistics[method], verification, accuracy,
                     converged_at(accuracy, ann_accuracy))
