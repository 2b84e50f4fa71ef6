"""Results: what a simulation produced, reduced batch by batch.

`Totals` adds each simulated batch to the running totals (logits, spike
counts, SIN, recorded values, traces) and gives the `SimulationResult`:
only per-image totals are kept, unless per-unit arrays are asked for by name.

Example:
    >>> result = bsnn_tf.simulate(snn, x, timesteps=64, verbose=0)
    >>> isinstance(result, SimulationResult), result.outputs.shape
    (True, (16, 10))
    >>> sorted(result.firing_rates()) == sorted(result.spike_counts)
    True
"""

import dataclasses

import keras
import numpy as np

from bsnn_tf import observers
from bsnn_tf.validation import check_labels


@dataclasses.dataclass
class SimulationResult:
    """What a simulation produced.

    Attributes:
        timesteps: T, steps simulated.
        outputs: (N, classes) logits after T steps, in ANN units (None from a
            `Simulator` with `keep_outputs=False`).
        outputs_at: {T_c: (N, classes)} logits after each checkpoint T_c (likewise; after
            T alone with `keep_outputs="final"`).
        spike_counts: {layer: (N,)} spikes per sample; None with `count_spikes=False`.
        unit_spike_counts: {layer: (*units)} spikes per unit, summed over samples
            (None with `count_spikes=False`).
        count_window: the time steps the spike counts (and SIN) cover:
            "schedule", each layer's periods in the logits-only run's schedule
            (from its `active_from` to its `needed_until` T); "whole", all T;
            None with `count_spikes=False`.
        counted_steps: {layer: steps its spikes were counted in}
            (`Schedule.count_steps`); the firing rates divide by these.
        neurons: {layer: neurons per sample} (a BIF unit has two).
        values: {layer: (N, *units)} each unit's output per period in ANN
            units (emitted value / periods * lambda); only with `record_values`.
        sin: {layer: (spiking inactivated units, inactivated units)} summed
            over samples; only when the ANN is given.
        trace: {layer: (N, T, *units)} what every neuron and gate emitted at
            every step (period in period mode); only with `trace=True`.
    """

    timesteps: int
    outputs: np.ndarray | None
    outputs_at: dict | None
    spike_counts: dict | None
    unit_spike_counts: dict | None
    neurons: dict
    values: dict | None = None
    sin: dict | None = None
    trace: dict | None = None
    count_window: str | None = None
    counted_steps: dict | None = None

    def accuracy(self, labels, timesteps=None):
        """Top-1 accuracy of the logits after `timesteps` (default T).

        Args:
            labels: one integer class per simulated image, shape (N,).
        """
        if self.outputs is None:
            raise ValueError("This result kept no logits (Simulator(keep_outputs=False)); "
                             "count the correct ones from Simulator.update's return.")
        logits = self.outputs if timesteps is None else self.outputs_at[timesteps]
        labels = check_labels(labels, len(logits), logits.shape[-1])
        return float(np.mean(np.argmax(logits, axis=-1) == labels))

    def firing_rates(self):
        """{layer: spikes per neuron per step}, averaged over samples.

        A layer's spikes are divided by the steps they were counted in
        (`counted_steps`): with `count_window="schedule"` the steps of the
        periods the layer runs in, not T; 0 for a layer that never runs.
        """
        if self.spike_counts is None:
            raise ValueError("This simulation did not count spikes; run bsnn_tf.simulate "
                             "with count_spikes=True.")
        steps = self.counted_steps or dict.fromkeys(self.spike_counts, self.timesteps)
        return {name: float(np.mean(counts) / max(self.neurons[name] * steps[name], 1))
                for name, counts in self.spike_counts.items()}

    def sin_rates(self):
        """{layer: fraction of inactivated units (ANN activation <= 0) that spiked}."""
        return {name: spiked / max(inactive, 1) for name, (spiked, inactive) in self.sin.items()}


class Totals:
    """A simulation's results, reduced batch by batch as they come.

    Per image it keeps the logits and each layer's spike total; per unit the
    spike counts and SIN summed over images; per image and unit only what was
    asked for by name (`record_values`, `trace`).
    """

    def __init__(self, snn, probe, timesteps, checkpoints, count_window=None,
                 keep_outputs=True):
        self.snn, self.probe = snn, probe
        self.timesteps = timesteps
        self.count_window = count_window  # None: no spikes counted
        kept = {True: checkpoints, "final": [timesteps], False: None}[keep_outputs]
        self.outputs_at = None if kept is None else {t: [] for t in kept}
        self.images = 0
        self.spikes, self.unit_spikes, self.sin = {}, {}, {}
        self.values, self.traces = {}, {}

    def add(self, batch, count, outputs_at, observed, traced):
        """Adds the first `count` images of a (padded) batch."""
        self.images += count
        for t in self.outputs_at or ():
            self.outputs_at[t].append(outputs_at[t][:count])
        if observers.SPIKES.key in observed:
            spikes = {name: value[:count]
                      for name, value in observed[observers.SPIKES.key].items()}
            for name, value in spikes.items():
                self.spikes.setdefault(name, []).append(value.reshape(count, -1).sum(axis=1))
                self.unit_spikes[name] = self.unit_spikes.get(name, 0) + value.sum(axis=0)
            if self.probe is not None:
                self._add_sin(batch, count, spikes)
        if observers.EMITTED.key in observed:
            for layer in self.snn.spiking_layers():
                emitted = observed[observers.EMITTED.key][layer.name][:count]
                value = (layer.value_per_period(emitted, self.timesteps)
                         * self.snn.scales.get(layer.name, 1.0))
                self.values.setdefault(layer.name, []).append(np.asarray(value))
        for name, value in (traced or {}).items():
            self.traces.setdefault(name, []).append(value[:count])

    def _add_sin(self, batch, count, spikes):
        names, model = self.probe
        activations = model.predict_on_batch(batch)
        activations = activations if isinstance(activations, list) else [activations]
        for name, activation in zip(names, activations):
            inactive = np.asarray(activation)[:count] <= 0
            spiked, total = self.sin.get(name, (0, 0))
            self.sin[name] = (spiked + int(np.sum(inactive & (spikes[name] > 0))),
                              total + int(np.sum(inactive)))

    def result(self):
        outputs_at = (None if self.outputs_at is None else
                      {t: np.concatenate(parts) for t, parts in self.outputs_at.items()})
        snn = self.snn
        return SimulationResult(
            timesteps=self.timesteps,
            outputs=None if outputs_at is None else outputs_at[self.timesteps],
            outputs_at=outputs_at,
            spike_counts={n: np.concatenate(p) for n, p in self.spikes.items()} or None,
            unit_spike_counts=self.unit_spikes or None,
            neurons={layer.name: layer.neurons_per_unit
                     * int(np.prod(snn.unit_shapes[layer.name]))
                     for layer in snn.spiking_layers()},
            values={n: np.concatenate(p) for n, p in self.values.items()} or None,
            sin=self.sin if self.probe is not None else None,
            trace={n: np.concatenate(p) for n, p in self.traces.items()} or None,
            count_window=self.count_window,
            counted_steps=(None if self.count_window is None
                           else snn.schedule.count_steps(self.timesteps, self.count_window)),
        )



def activation_probe(snn, ann):
    """A model giving the ANN activation coded by each neuron layer, or None."""
    if ann is None:
        return None
    names = [n for n in snn.ann_layers if snn.ann_layers[n] in {l.name for l in ann.layers}]
    outputs = [ann.get_layer(snn.ann_layers[n]).output for n in names]
    return names, keras.Model(ann.inputs, outputs)
