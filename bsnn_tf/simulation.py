"""Simulation: compiled chunks of time, batch after batch.

`simulate` runs a SpikingNetwork for T steps on a batch of images, chunk by
chunk (the state is carried between chunks, so memory does not grow with T)
and returns a `SimulationResult`: the logits at T and at checkpoints, spike
counts per layer and, when the ANN is given, spikes of inactivated neurons.

Example:
    >>> result = bsnn_tf.simulate(snn, x_test[:100], timesteps=128, checkpoints=[32, 64],
    ...                           verbose=0)
    >>> 0.0 <= result.accuracy(y_test[:100]) <= 1.0
    True
    >>> result.outputs_at[64].shape
    (100, 10)
"""

import numpy as np

from bsnn_tf import batches, console
from bsnn_tf.simulator import Simulator, checked_images, image_rank
from bsnn_tf.validation import check_labels, check_spiking_network, check_timesteps


def simulate(snn, x, *, timesteps, mode=None, checkpoints=None, batch_size=None, ann=None,
             count_spikes=True, record_values=False, trace=False, chunk=None, jit_compile="auto",
             verbose="auto", distribute=False, count_window="schedule"):
    """Simulates `snn` on images `x` for `timesteps` steps.

    Memory is bounded by the network and the batch: spike counts and SIN are
    reduced batch by batch (only per-image totals are kept); only
    `record_values` and `trace`, which ask for per-unit arrays, keep them per image.

    Args:
        snn: a SpikingNetwork from `bsnn_tf.convert`.
        x: images (N, *input_shape), preprocessed like the ANN's input: an array,
            or a stream of batches (`tf.data.Dataset`, `keras.utils.PyDataset`,
            generator; labels in it are ignored), read once (`bsnn_tf.batches`).
        timesteps: T, a positive int.
        mode: "period" (exact and fast; BSNN only, T and checkpoints multiples
            of the phases) or "step" (every time step). Default: the SNN's mode.
        checkpoints: step counts at which to also record the logits.
        batch_size: images per compiled batch (default: `simulator.default_batch_size`, at
            most N; for a stream, at most its first batch).
        ann: the source keras.Model; with it, spikes of inactivated neurons are counted.
        count_spikes: count spikes per layer and unit (metrics, TensorBoard, SIN);
            False compiles a logits-only simulation that carries no counters.
        record_values: also return each unit's output per period (for `verify`).
        trace: also return every neuron's and gate's output at every step (small nets).
        chunk: periods per compiled chunk (default: `SpikingNetwork.chunk_length`).
        jit_compile: XLA-compile the simulation (True), or not; "auto": XLA
            except with TensorFlow on a CPU (see `bsnn_tf.backend`).
        verbose: 0 silent, 1 or "auto" a progress bar over images.
        distribute: split every batch over all local devices (data parallel;
            `bsnn_tf.backend.devices`), the batch size rounded up to a multiple
            of the device count. The results equal a one-device run.
        count_window: which steps the spike counts, SIN and firing rates cover.
            "schedule" (default): each layer only in the periods the logits-only
            run simulates it, from its `active_from` to its `needed_until` T
            (the light cone of the readout at T); the run simulates that
            schedule too: it costs the logits-only run plus the count itself.
            "whole": every layer over all T steps (every layer simulated to T).

    Returns:
        A SimulationResult.

    Warns:
        EarlyReadoutWarning: T or a checkpoint comes before the SNN's first
            readout (`SpikingNetwork.first_readout`).
    """
    check_spiking_network(snn, "bsnn_tf.simulate")
    images = batches.count(x)
    if images is not None:
        x = checked_images(snn, x)  # before compiling anything
    simulator = Simulator(snn, timesteps=timesteps, mode=mode, checkpoints=checkpoints,
                          batch_size=batch_size, ann=ann, count_spikes=count_spikes,
                          count_window=count_window, record_values=record_values, trace=trace,
                          chunk=chunk, jit_compile=jit_compile, distribute=distribute,
                          images=images)
    progress = console.Progress(images, f"Simulating {snn.name}", verbose=verbose)
    for batch, _ in batches.iterate(x, simulator.batch_size, image_rank=image_rank(snn)):
        simulator.update(batch)
        progress.add(len(batch))
    progress.finish()
    return simulator.result()


def evaluate(snn, x, y=None, timesteps=None, *, mode=None, batch_size=None,
             jit_compile="auto", verbose="auto", distribute=False):
    """{T: top-1 accuracy} of `snn` on (x, y) after each T in `timesteps`.

    One logits-only simulation to the largest T, read at every T; only the
    correct counts are kept, so memory does not grow with the number of images.

    Args:
        x: images (an array), or a stream of (images, labels) batches (`bsnn_tf.batches`).
        y: one integer label per image, shape (N,); None for a stream.
        timesteps: a positive int or a non-empty list of them.
        mode, batch_size, jit_compile, verbose, distribute: as for `simulate`.
    """
    check_spiking_network(snn, "bsnn_tf.evaluate")
    if timesteps is None:
        raise TypeError("evaluate needs timesteps: a positive int or a list of them.")
    timesteps = sorted({check_timesteps(t) for t in np.atleast_1d(timesteps).tolist()})
    if not timesteps:
        raise ValueError("timesteps is empty; give at least one number of time steps.")
    images = batches.count(x)
    if images is not None:
        if y is None:
            raise ValueError("evaluate needs the labels y of the images x (one integer "
                             "class per image), or a stream of (images, labels) batches.")
        check_labels(y, len(x), _classes(snn))
        x = checked_images(snn, x)
    simulator = Simulator(snn, timesteps=timesteps[-1], mode=mode, checkpoints=timesteps,
                          batch_size=batch_size, count_spikes=False, jit_compile=jit_compile,
                          distribute=distribute, keep_outputs=False, images=images)
    progress = console.Progress(images, f"Simulating {snn.name}", verbose=verbose)
    correct, seen = dict.fromkeys(timesteps, 0), 0
    for batch, labels in batches.iterate(x, simulator.batch_size, labels=y,
                                         image_rank=image_rank(snn)):
        if labels is None:
            raise ValueError("The stream's batches have no labels: evaluate needs "
                             "(images, labels) batches.")
        labels = check_labels(labels, len(batch), _classes(snn))
        logits = simulator.update(batch)
        for t in timesteps:
            correct[t] += int(np.sum(np.argmax(logits[t], axis=-1) == labels))
        seen += len(batch)
        progress.add(len(batch))
    progress.finish()
    if not seen:
        raise ValueError("Nothing was evaluated: the stream gave no images.")
    return {t: correct[t] / seen for t in timesteps}


def _classes(snn):
    return snn.unit_shapes[snn.readout.name][-1]
