"""SpikingNetwork: a converted SNN as a keras.Model.

The network is a graph of layers: a `PhaseEncoder`, bias-free synapses
(Conv2D, Dense, pooling, Add, ...), spiking neurons (`bsnn_tf.neurons`),
max gates and a `Readout`. Time runs in chunks: `run` advances every layer
over a chunk of time, layer by layer, each synapse applied to the whole
chunk at once and each neuron scanning it, and returns the new state, so a
simulation of any length holds one chunk in memory. Calling the model runs
`timesteps` steps from rest and returns logits, so `predict`, `save` and
`keras.models.load_model` work as for any Keras model; `bsnn_tf.simulate`
gives checkpoints, spike counts and more.
"""

import keras
import numpy as np
from keras import ops

from bsnn_tf import coding, layers, methods, neurons, observers
from bsnn_tf.clock import Clock, Constant
from bsnn_tf.validation import (check_inputs, check_mode, check_timesteps,
                                check_whole_periods)

# Chunks compiled with the wavefront schedule at the start of a simulation (compile time).
MAX_SKEWED_CHUNKS = 8


def layer_kind(layer):
    """Role of a layer in the simulation loop."""
    if isinstance(layer, coding.PhaseEncoder):
        return "encoder"
    if isinstance(layer, neurons.SpikingNeuron):
        return "neuron"
    if isinstance(layer, layers.SpikingMaxPool):
        return "gate"
    if isinstance(layer, layers.Readout):
        return "readout"
    return "synapse"


@keras.saving.register_keras_serializable(package="bsnn_tf")
class SpikingNetwork(keras.Model):
    """A spiking network converted from an ANN by `bsnn_tf.convert`.

    Args:
        graph_layers: the layers, in topological order; the first is the
            PhaseEncoder, the last the Readout.
        topology: [layer name, [input layer names]] per layer, same order.
        method: "bsnn", "phase" or "rate".
        timesteps: steps that `call` simulates; setting it takes effect at
            the next `predict` or call.
        mode: "period" (exact period-level, BSNN only) or "step" for `call`;
            setting it takes effect at the next `predict` or call too.
        ann_layers: {neuron layer: name of the ANN layer whose activation it codes}.
        scales: {neuron layer: lambda}, to read outputs in ANN units.

    Example:
        >>> snn = bsnn_tf.convert(ann, x_calibration)
        >>> snn.timesteps = 64
        >>> logits = snn.predict(x_test, verbose=0)
        >>> logits.shape
        (100, 10)
    """

    def __init__(self, graph_layers, topology, method="bsnn", timesteps=256, mode=None,
                 ann_layers=None, scales=None, **kwargs):
        super().__init__(**kwargs)
        default_mode = methods.get(method).default_mode  # (raises for an unknown method)
        self.graph_layers = list(graph_layers)
        self.topology = [[name, list(inputs)] for name, inputs in topology]
        self.method = method
        self.timesteps = timesteps
        self.mode = mode or default_mode
        self.ann_layers = dict(ann_layers or {})
        self.scales = {k: np.asarray(v, "float32") for k, v in (scales or {}).items()}
        self._by_name = {layer.name: layer for layer in self.graph_layers}
        self._kinds = {layer.name: layer_kind(layer) for layer in self.graph_layers}
        self._runners = {layer.name: layer if self._kinds[layer.name] != "synapse"
                         else layers.Synapse(layer) for layer in self.graph_layers}
        self._static = self._static_layers()
        self.unit_shapes = {}

    # ------------------------------------------------------------ settings

    @property
    def timesteps(self):
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value):
        self._timesteps = check_timesteps(value)
        self.predict_function = None  # compiled for the old value

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, value):
        self._mode = value
        self.predict_function = None

    # ------------------------------------------------------------ structure

    @property
    def encoder(self):
        return self.graph_layers[0]

    @property
    def readout(self):
        return self.graph_layers[-1]

    @property
    def phases(self):
        return self.encoder.phases

    @property
    def depth(self):
        """Spiking depth D: spiking layers on the longest path from the input."""
        return max(layer.start_period for layer in self.spiking_layers()) + 1

    @property
    def readout_start(self):
        """First period the readout counts (D for BSNN, 0 for the baselines)."""
        return self.readout.start_period

    @property
    def active_from(self):
        """{layer: first period in which it can change}: the wavefront of the first input.

        A layer is provably at rest before it (no input, no bias, no emission),
        so `run` skips it there. Synapses are bias-free and map silence to
        silence, except one that adds a constant (`use_bias`, `use_shift`).
        """
        first_output, begins = {}, {}
        for name, inputs in self.topology:
            layer, kind = self._by_name[name], self._kinds[name]
            arriving = min((first_output[i] for i in inputs), default=0)
            if kind == "neuron":
                begins[name], first_output[name] = layer.active_periods(arriving)
            elif kind == "readout":
                begins[name] = max(arriving, layer.start_period)
            elif kind == "synapse" and (getattr(layer, "use_bias", False)
                                        or getattr(layer, "use_shift", False)):
                begins[name] = first_output[name] = 0
            else:
                begins[name] = first_output[name] = arriving
        return begins

    def spiking_layers(self):
        """The neuron layers, in topological order."""
        return [l for l in self.graph_layers if self._kinds[l.name] == "neuron"]

    def _static_layers(self):
        """Layers whose value is the same at every step: the real input and synapses on it."""
        static = set()
        for name, inputs in self.topology:
            layer, kind = self._by_name[name], self._kinds[name]
            if kind == "encoder" and layer.is_constant:
                static.add(name)
            elif kind == "synapse" and all(i in static for i in inputs):
                static.add(name)
            elif any(i in static for i in inputs) and kind != "neuron":
                raise ValueError(
                    f"Layer '{name}' mixes the real-valued input with spikes; convert with "
                    "input_encoding='spike'."
                )
        return static

    def build(self, input_shape):
        shapes = {}
        for name, inputs in self.topology:
            layer, kind = self._by_name[name], self._kinds[name]
            in_shapes = [shapes[i] for i in inputs]
            if kind == "encoder":
                shapes[name] = (None,) + tuple(input_shape[1:])
                continue
            layer_input = in_shapes if len(in_shapes) > 1 else in_shapes[0]
            if not layer.built:
                layer.build(layer_input)
            if kind in ("neuron", "readout"):
                shapes[name] = in_shapes[0]
            else:
                shapes[name] = tuple(layer.compute_output_shape(layer_input))
        self.unit_shapes = {name: tuple(shape[1:]) for name, shape in shapes.items()}
        self.built = True

    # ----------------------------------------------------------- simulation

    def initial_state(self, x, count_spikes=True, record_values=False):
        """State at rest for input batch `x`, with the constant input currents.

        Returns {"layers": {layer: its state}, "static": {layer: its constant
        value}, and one total per observer asked for}: `count_spikes` and
        `record_values` add the spike and emitted-value totals per unit
        (`bsnn_tf.observers`); a logits-only simulation carries neither.
        """
        x = ops.cast(x, self.compute_dtype)
        batch = ops.shape(x)[0]
        static, layer_states = {}, {}
        for name, inputs in self.topology:
            layer, kind = self._by_name[name], self._kinds[name]
            if name in self._static:
                static[name] = (layer.current(x) if kind == "encoder"
                                else layer(_single([static[i] for i in inputs])))
                continue
            input_shape = self.unit_shapes[inputs[0] if inputs else name]
            layer_state = self._runners[name].initial_state((batch,) + input_shape)
            if layer_state:
                layer_states[name] = layer_state
        feeding = {i for name, inputs in self.topology if name not in self._static
                   for i in inputs}
        state = {"layers": layer_states,
                 "static": {name: value for name, value in static.items() if name in feeding}}
        for observer in observers.chosen(count_spikes, record_values):
            state[observer.key] = {
                layer.name: ops.zeros((batch,) + self.unit_shapes[layer.name],
                                      self.compute_dtype)
                for layer in self.spiking_layers()}
        return state

    def run(self, x, state, start, length, period_mode, end, trace=False, skew=None):
        """Advances the simulation by `length` time units (periods or steps).

        Every layer runs through the same interface (`bsnn_tf.clock`), in
        topological order, over the whole chunk; the observers in `state`
        watch the neuron layers.

        Args:
            x: the input batch (N, ...).
            state: from `initial_state` or the previous `run`.
            start: index of the first time unit of the chunk (a multiple of K in step mode).
            length: time units in the chunk (whole periods in step mode).
            period_mode: True for period units (BSNN), False for steps.
            end: time units at or after `end` are not counted (readout, observers).
            trace: also return what every neuron and gate emitted.
            skew: `start` as a Python int, to skip each layer before it is
                `active_from` (the wavefront schedule; exact); None simulates
                every layer over the whole chunk.

        Returns:
            (new state, running readout totals (length, N, classes), trace dict).
        """
        x = ops.cast(x, self.compute_dtype)
        batch = ops.shape(x)[0]
        clock = Clock(ops.cast(start, "int32") + ops.arange(length, dtype="int32"),
                      period_mode, end)
        offsets = self._chunk_offsets(skew, length, period_mode)
        watching = [o for o in observers.OBSERVERS if o.key in state]
        new = {key: dict(value) for key, value in state.items()}
        values, traced = {}, {}
        for name, inputs in self.topology:
            if name in self._static:
                continue
            kind, offset = self._kinds[name], offsets[name]
            if kind == "readout":
                totals = self._run_readout(values, state, new, inputs[0], clock, offset)
                continue
            values[name] = (offset, None)
            if offset < length:
                arriving = ([Constant(x)] if kind == "encoder" else
                            [self._arriving(values, state, i, offset, length, batch)
                             for i in inputs])
                values[name] = (offset, self._advance(name, arriving, state, new,
                                                      clock.after(offset), watching))
            if trace and kind in ("neuron", "gate"):
                traced[name] = self._aligned(values, name, 0, length, batch)
        return new, totals, traced

    def _advance(self, name, arriving, state, new, clock, watching):
        """Runs layer `name` over `clock`; returns its time-major output."""
        outputs, layer_state = self._runners[name].run(arriving, state["layers"].get(name, ()),
                                                       clock)
        if layer_state:
            new["layers"][name] = layer_state
        if self._kinds[name] == "neuron":
            for observer in watching:
                new[observer.key][name] = observer.observe(
                    self._by_name[name], outputs, state[observer.key][name], clock)
        return outputs

    def _chunk_offsets(self, skew, length, period_mode):
        """{layer: time units it stays at rest at the start of the chunk}, at most `length`."""
        if skew is None:
            return dict.fromkeys(self._by_name, 0)
        per_unit = 1 if period_mode else self.phases
        return {name: int(np.clip(begin * per_unit - skew, 0, length))
                for name, begin in self.active_from.items()}

    def _arriving(self, values, state, name, offset, length, batch):
        """Input from layer `name` from `offset` on: a `Constant` if it is static."""
        if name in self._static:
            return Constant(state["static"][name])
        return self._aligned(values, name, offset, length, batch)

    def _aligned(self, values, name, offset, length, batch):
        """`name`'s values over the chunk's time units from `offset` on, zeros where at rest."""
        own_offset, output = values[name]
        if output is not None and own_offset <= offset:
            return output[offset - own_offset:]
        silent = (length if output is None else own_offset) - offset
        rest = ops.zeros((silent, batch) + self.unit_shapes[name], self.compute_dtype)
        return rest if output is None else ops.concatenate([rest, output])

    def _run_readout(self, values, state, new, source, clock, offset):
        """Readout totals over the chunk: the carried total while at rest, then counted."""
        name = self.readout.name
        (accumulated,) = state["layers"][name]
        before = ops.repeat(accumulated[None], offset, axis=0)
        if offset == len(clock):
            return before
        batch = ops.shape(accumulated)[0]
        current = self._aligned(values, source, offset, len(clock), batch)
        totals, new["layers"][name] = self.readout.run([current], state["layers"][name],
                                                       clock.after(offset))
        return ops.concatenate([before, totals]) if offset else totals

    def time_units(self, timesteps, period_mode):
        """Chunk-loop length: `timesteps` in periods (period mode) or steps."""
        if not period_mode:
            return timesteps
        check_whole_periods([timesteps], self.phases)
        return timesteps // self.phases

    def check_inputs(self, x):
        """`x` as float32, or a ValueError naming its shape and the expected one, or NaNs."""
        if not self.built:
            return x
        return check_inputs(x, self.unit_shapes[self.encoder.name], what="input batch")

    def __call__(self, x, *args, **kwargs):
        if isinstance(x, (np.ndarray, list)):
            x = self.check_inputs(x)
        return super().__call__(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`; an array `x` is first checked like `bsnn_tf.simulate`'s."""
        if isinstance(x, (np.ndarray, list)) or keras.ops.is_tensor(x):
            x = self.check_inputs(x)
        return super().predict(x, *args, **kwargs)

    def call(self, x):
        """Simulates `self.timesteps` steps from rest (in `self.mode`); returns logits."""
        period_mode = check_mode(self, self.mode)
        steps = check_timesteps(self.timesteps)
        units = self.time_units(steps, period_mode)
        chunk = 1 if period_mode else self.phases
        starts = self.chunk_starts(units, chunk, period_mode)
        state = self.initial_state(x, count_spikes=False)
        skewed = [start for start, skew in starts if skew is not None]
        for start in skewed:
            state = self.run(x, state, start, chunk, period_mode, units, skew=start)[0]

        def advance(index, state):
            return self.run(x, state, index * chunk, chunk, period_mode, units)[0]

        state = ops.fori_loop(len(skewed), len(starts), advance, state)
        return self.readout.logits(state["layers"][self.readout.name][0], steps)

    def chunk_starts(self, units, chunk, period_mode):
        """[(start, skew)] of the chunks of `chunk` time units that simulate `units`.

        `skew` is the start itself for the first chunks, where some layers are
        still at rest (`active_from`), and None once all are active: each skewed
        chunk is compiled on its own, so there are at most MAX_SKEWED_CHUNKS.
        """
        per_unit = 1 if period_mode else self.phases
        all_active = max(self.active_from.values()) * per_unit
        return [(start, start if start < all_active and index < MAX_SKEWED_CHUNKS else None)
                for index, start in enumerate(range(0, units, chunk))]

    # -------------------------------------------------------------- saving

    def get_config(self):
        config = {
            "name": self.name,
            "dtype": self.dtype_policy.name,
            "graph_layers": [keras.saving.serialize_keras_object(l) for l in self.graph_layers],
            "topology": self.topology,
            "method": self.method,
            "timesteps": self.timesteps,
            "mode": self.mode,
            "ann_layers": self.ann_layers,
            "scales": {k: v.tolist() for k, v in self.scales.items()},
        }
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        graph_layers = [keras.saving.deserialize_keras_object(layer_config)
                        for layer_config in config.pop("graph_layers")]
        return cls(graph_layers, **config)


def _single(values):
    return values if len(values) > 1 else values[0]
