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

from bsnn_tf import coding, layers, neurons

METHODS = ("bsnn", "phase", "rate")
# The simulation indexes time with int32.
MAX_TIMESTEPS = 2**31 - 1


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
        >>> logits = snn.predict(x_test)
    """

    def __init__(self, graph_layers, topology, method="bsnn", timesteps=256, mode=None,
                 ann_layers=None, scales=None, **kwargs):
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        self.graph_layers = list(graph_layers)
        self.topology = [[name, list(inputs)] for name, inputs in topology]
        self.method = method
        self.timesteps = timesteps
        self.mode = mode or ("period" if method == "bsnn" else "step")
        self.ann_layers = dict(ann_layers or {})
        self.scales = {k: np.asarray(v, "float32") for k, v in (scales or {}).items()}
        self._by_name = {layer.name: layer for layer in self.graph_layers}
        self._kinds = {layer.name: layer_kind(layer) for layer in self.graph_layers}
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

    def initial_state(self, x):
        """State at rest for input batch `x`, with the constant input currents."""
        x = ops.cast(x, self.compute_dtype)
        batch = ops.shape(x)[0]
        constant_values, constants = {}, {}
        cells, gates = {}, {}
        for name, inputs in self.topology:
            layer, kind = self._by_name[name], self._kinds[name]
            if name in self._static:
                constant_values[name] = (
                    layer.current(x) if kind == "encoder"
                    else layer(_single([constant_values[i] for i in inputs]))
                )
            elif kind == "neuron":
                cells[name] = layer.initial_state((batch,) + self.unit_shapes[name])
                if inputs[0] in self._static:
                    constants[name] = constant_values[inputs[0]]
            elif kind == "gate":
                gates[name] = layer.initial_state((batch,) + self.unit_shapes[inputs[0]])
        return {
            "neurons": cells,
            "gates": gates,
            "constants": constants,
            "readout": self.readout.initial_state((batch,) + self.unit_shapes[self.readout.name]),
            "spikes": {n: ops.zeros((batch,) + self.unit_shapes[n], self.compute_dtype)
                       for n in cells},
            "emitted": {n: ops.zeros((batch,) + self.unit_shapes[n], self.compute_dtype)
                        for n in cells},
        }

    def run(self, x, state, start, length, period, end, trace=False, record_values=False):
        """Advances the simulation by `length` time units (periods or steps).

        Args:
            x: the input batch (N, ...).
            state: from `initial_state` or the previous `run`.
            start: index of the first time unit of the chunk (a multiple of K in step mode).
            length: time units in the chunk (whole periods in step mode).
            period: True for period units (BSNN), False for steps.
            end: time units at or after `end` are not counted (readout, spikes).
            trace: also return what every neuron and gate emitted.
            record_values: accumulate each unit's emitted value (`state["emitted"]`).

        Returns:
            (new state, running readout totals (length, N, classes), trace dict).
        """
        x = ops.cast(x, self.compute_dtype)
        time = ops.cast(start, "int32") + ops.arange(length, dtype="int32")
        counted = ops.cast(time < end, self.compute_dtype)
        values, traced = {}, {}
        new = {key: dict(value) if isinstance(value, dict) else value
               for key, value in state.items()}
        for name, inputs in self.topology:
            if name in self._static:
                continue
            layer, kind = self._by_name[name], self._kinds[name]
            if kind == "encoder":
                values[name] = layer.spikes(x, time, period)
            elif kind == "synapse":
                values[name] = _over_time(layer, [values[i] for i in inputs])
            elif kind == "neuron":
                values[name] = self._run_neuron(layer, inputs[0], values, state, new, time,
                                                period, counted, record_values)
            elif kind == "gate":
                values[name], new["gates"][name] = layer.run(
                    values[inputs[0]], state["gates"][name], time, period)
            else:
                totals, new["readout"] = layer.run(values[inputs[0]], state["readout"], time,
                                                   period, end)
            if trace and kind in ("neuron", "gate"):
                traced[name] = values[name]
        return new, totals, traced

    def _run_neuron(self, layer, source, values, state, new, time, period, counted,
                    record_values):
        name = layer.name
        if source in self._static:
            current, constant = None, state["constants"][name]
        else:
            current, constant = values[source], None
        emitted, new["neurons"][name] = layer.run(current, state["neurons"][name], time,
                                                  constant, period)
        as_weight = lambda w: ops.reshape(w, (-1,) + (1,) * (len(emitted.shape) - 1))
        new["spikes"][name] = state["spikes"][name] + ops.sum(
            layer.spike_count(emitted, period) * as_weight(counted), axis=0)
        if record_values:
            first_output = layer.first_output_step // (self.phases if period else 1)
            valid = counted * ops.cast(time >= first_output, counted.dtype)
            new["emitted"][name] = state["emitted"][name] + ops.sum(emitted * as_weight(valid),
                                                                    axis=0)
        return emitted

    def time_units(self, timesteps, period):
        """Chunk-loop length: `timesteps` in periods (period mode) or steps."""
        if not period:
            return timesteps
        if timesteps % self.phases:
            raise ValueError(
                f"timesteps={timesteps} is not a multiple of phases={self.phases}: period mode "
                "simulates whole periods. Use a multiple of the phases or mode='step'."
            )
        return timesteps // self.phases

    def check_inputs(self, x):
        """`x` as float32, or a ValueError naming its shape and the expected one, or NaNs."""
        from bsnn_tf.conversion.calibration import check_inputs  # (conversion imports this)

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
        period = check_mode(self, self.mode)
        steps = check_timesteps(self.timesteps)
        units = self.time_units(steps, period)
        chunk = 1 if period else self.phases
        state = self.initial_state(x)

        def advance(index, state):
            return self.run(x, state, index * chunk, chunk, period, units)[0]

        state = ops.fori_loop(0, -(-units // chunk), advance, state)
        return self.readout.logits(state["readout"][0], steps)

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


def check_mode(snn, mode):
    """True for period mode; raises a ValueError for an unknown mode or a non-BSNN period mode."""
    if mode not in ("period", "step"):
        raise ValueError(f"mode must be 'period' or 'step', got {mode!r}.")
    if mode == "period" and snn.method != "bsnn":
        raise ValueError(
            f"mode='period' is exact for BSNN only; this SNN uses method={snn.method!r}. "
            "Use mode='step'."
        )
    return mode == "period"


def check_timesteps(timesteps):
    """`timesteps` as an int, or a TypeError/ValueError naming the bad value."""
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)):
        raise TypeError(f"timesteps must be a positive int, got {timesteps!r}.")
    if timesteps <= 0:
        raise ValueError(f"timesteps must be positive, got {timesteps}.")
    if timesteps > MAX_TIMESTEPS:
        raise ValueError(f"timesteps={timesteps} is too large: the simulation counts time "
                         f"in int32; use at most {MAX_TIMESTEPS}.")
    return int(timesteps)


def _single(values):
    return values if len(values) > 1 else values[0]


def _over_time(layer, sequences):
    """Applies `layer` to time-major sequences (T, N, ...) as one batch of T * N."""
    length = sequences[0].shape[0]
    merged = [ops.reshape(s, (-1,) + tuple(s.shape[2:])) for s in sequences]
    result = layer(_single(merged))
    return ops.reshape(result, (length, -1) + tuple(result.shape[1:]))
