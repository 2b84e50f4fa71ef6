"""A run's finished batches, kept on disk as it goes so that `--resume` continues a stopped
run (Ctrl-C, SIGTERM, a killed process) where it stopped.

After every batch of the one pass over the evaluated images, `save` writes, atomically,
into `rundir.partial_directory(output_dir)` (a hidden folder beside the output directory,
so that it never looks like a finished run): how many images are done, the correct
counts per method and checkpoint, the ANN's correct count, the images skipped as
unreadable, and, while they grow, the spike statistics and the verification images
(`statistics-<n>.npz`, named by `state.json`). The folder is removed once the run
directory is written.

Example:
    >>> import tempfile
    >>> state = PassState(fingerprint={"model": "demo"}, correct={"bsnn": [0, 0]})
    >>> state.done, state.images, state.correct["bsnn"][1] = 64, 64, 60
    >>> directory = tempfile.mkdtemp()
    >>> save(directory, state, statistics_changed=False)
    >>> load(directory).correct
    {'bsnn': [0, 60]}
"""

import dataclasses
import glob
import json
import os
import pathlib

import numpy as np

from bsnn_tf.result import SimulationResult
from bsnn_tf.runs import rundir

STATE_FILE = "state.json"


@dataclasses.dataclass
class PassState:
    """The running totals of the one pass over the evaluated images.

    Attributes:
        fingerprint: what the run depends on; a resumed run must have the same.
        done: how many of the evaluated indices are done (skipped ones included).
        images: how many images were evaluated (unreadable ones skipped).
        unreadable: the messages of the images skipped as unreadable.
        ann_correct: images the ANN classified correctly.
        correct: {method: [images correct at each measured checkpoint]}.
        statistics: {method: `SimulationResult` of the spike statistics so far}.
        verify_x, verify_y: the first evaluated images, for the verification.
        generation: the number of the statistics file that holds `statistics`.
    """

    fingerprint: dict
    done: int = 0
    images: int = 0
    unreadable: list = dataclasses.field(default_factory=list)
    ann_correct: int = 0
    correct: dict = dataclasses.field(default_factory=dict)
    statistics: dict = dataclasses.field(default_factory=dict)
    verify_x: np.ndarray = None
    verify_y: np.ndarray = None
    generation: int = 0

    @property
    def statistics_images(self):
        """How many images the statistics so far come from."""
        counts = [len(r.outputs) for r in self.statistics.values() if r is not None]
        return max(counts, default=0)


def save(directory, state, statistics_changed=True):
    """Writes `state` into `directory` (created if missing), each file atomically:
    a new statistics file first when `statistics_changed`, then `state.json`, which
    names it, then older statistics files are removed. A process killed at any point
    leaves the last whole state."""
    os.makedirs(directory, exist_ok=True)
    if statistics_changed or not _statistics_path(directory, state.generation):
        state.generation += 1
        arrays = _statistics_arrays(state)
        rundir.write_atomically(os.path.join(directory, _statistics_name(state.generation)),
                                lambda temporary: np.savez(temporary, **arrays))
    record = {field.name: getattr(state, field.name)
              for field in dataclasses.fields(PassState)
              if field.name not in ("statistics", "verify_x", "verify_y")}
    text = json.dumps(record, indent=1)
    rundir.write_atomically(os.path.join(directory, STATE_FILE),
                            lambda temporary: pathlib.Path(temporary).write_text(text))
    current = _statistics_name(state.generation)
    for path in glob.glob(os.path.join(directory, "statistics-*.npz")):
        if os.path.basename(path) != current:
            os.remove(path)


def load(directory):
    """The `PassState` saved in `directory`, or None where there is none."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        record = json.load(f)
    state = PassState(**record)
    with np.load(_statistics_path(directory, state.generation)) as arrays:
        state.verify_x = arrays["verify_x"] if "verify_x" in arrays.files else None
        state.verify_y = arrays["verify_y"] if "verify_y" in arrays.files else None
        layers = json.loads(str(arrays["layers"]))
        state.statistics = {method: _result(arrays, method, record)
                            for method, record in layers.items()}
    return state


def combined(first, second):
    """One `SimulationResult` of the images of `first` then those of `second` (either may
    be None): per-image values concatenated, sums over images added."""
    if first is None or second is None:
        return first if second is None else second

    def joined(a, b):
        return None if a is None else np.concatenate([a, b])

    return SimulationResult(
        timesteps=first.timesteps,
        outputs=joined(first.outputs, second.outputs),
        outputs_at={t: joined(first.outputs_at[t], second.outputs_at[t])
                    for t in first.outputs_at},
        spike_counts=first.spike_counts and {
            name: joined(counts, second.spike_counts[name])
            for name, counts in first.spike_counts.items()},
        unit_spike_counts=first.unit_spike_counts and {
            name: counts + second.unit_spike_counts[name]
            for name, counts in first.unit_spike_counts.items()},
        neurons=first.neurons,
        sin=first.sin and {name: (spiked + second.sin[name][0], inactive + second.sin[name][1])
                           for name, (spiked, inactive) in first.sin.items()},
        count_window=first.count_window,
        counted_steps=first.counted_steps,
    )


def _statistics_name(generation):
    return f"statistics-{generation}.npz"


def _statistics_path(directory, generation):
    path = os.path.join(directory, _statistics_name(generation))
    return path if os.path.isfile(path) else None


def _statistics_arrays(state):
    """The arrays of the statistics and verification images, keyed for `np.savez`; the
    layer names, neuron counts and SIN counts go in "layers", as JSON."""
    arrays, layers = {}, {}
    if state.verify_x is not None:
        arrays.update(verify_x=state.verify_x, verify_y=state.verify_y)
    for method, result in state.statistics.items():
        layers[method] = None if result is None else {
            "timesteps": result.timesteps, "spiking": list(result.spike_counts),
            "neurons": result.neurons, "sin": result.sin and {
                name: [int(v) for v in counts] for name, counts in result.sin.items()},
            "count_window": result.count_window, "counted_steps": result.counted_steps}
        if result is None:
            continue
        arrays[f"{method}/outputs"] = result.outputs
        for number, name in enumerate(result.spike_counts):
            arrays[f"{method}/spikes/{number}"] = result.spike_counts[name]
            arrays[f"{method}/unit_spikes/{number}"] = result.unit_spike_counts[name]
    arrays["layers"] = np.asarray(json.dumps(layers))
    return arrays


def _result(arrays, method, record):
    """The `SimulationResult` of `method` in `arrays` (see `_statistics_arrays`)."""
    if record is None:
        return None
    numbered = list(enumerate(record["spiking"]))
    outputs, timesteps = arrays[f"{method}/outputs"], record["timesteps"]
    return SimulationResult(
        timesteps=timesteps, outputs=outputs, outputs_at={timesteps: outputs},
        spike_counts={name: arrays[f"{method}/spikes/{number}"] for number, name in numbered},
        unit_spike_counts={name: arrays[f"{method}/unit_spikes/{number}"]
                           for number, name in numbered},
        neurons=record["neurons"],
        sin=record["sin"] and {name: tuple(counts) for name, counts in record["sin"].items()},
        count_window=record["count_window"], counted_steps=record["counted_steps"],
    )
