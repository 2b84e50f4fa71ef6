"""SpikingNetwork: a converted SNN as a keras.Model.

The network is a graph of layers: a `PhaseEncoder`, bias-free synapses
(Conv2D, Dense, pooling, Add, ...), spiking neurons (`bsnn_tf.neurons`),
max gates and a `Readout`. Time runs in chunks: `run_chunk` advances every layer
over a chunk of time, layer by layer, each synapse applied to the whole
chunk at once and each neuron scanning it, and returns the new state, so a
simulation of any length holds one chunk in memory. Calling the model runs
`timesteps` steps from rest and returns logits, so `predict`, `save` and
`keras.models.load_model` work as for any Keras model; `bsnn_tf.simulate`
gives checkpoints, spike counts and more.
"""

import dataclasses
import typing

import keras
import numpy as np
from keras import ops

from bsnn_tf import batches, layers, methods, observers, roles, twin
from bsnn_tf.roles import Role
from bsnn_tf.clock import Clock, Constant
from bsnn_tf.validation import (check_inputs, check_mode, check_timesteps,
                                check_whole_periods, warn_before_first_readout)

# Chunks at the head of a simulation compiled each with its own static wavefront schedule
# (`Chunk.skew`); the others share one program that skips layers judged from its runtime
# start (`DYNAMIC`), so a run compiles at most MAX_SKEWED_CHUNKS + 1 programs whatever T.
# A program holds about 1 MB per layer on a CPU (DenseNet-121 has 2,500 layers), so every
# static chunk costs that much memory and its compile time.
MAX_SKEWED_CHUNKS = 1
DYNAMIC = "dynamic"  # Chunk.skew of the shared program
# A chunk's length: at most this many periods, and as many as keep LIVE_OUTPUTS copies of
# the largest layer's output over the chunk within CHUNK_BYTES (layers run one after the
# other, so a few outputs and their temporaries are alive at a time, not all of them).
MAX_CHUNK_PERIODS = 16
LIVE_OUTPUTS = 12  # measured on ResNet-34 (its max gate alone holds ~10 shifted copies)
CHUNK_BYTES = 1 << 30
# The batch `call` sizes its chunks for when the traced batch size is unknown (predict's).
CALL_BATCH = 32


@dataclasses.dataclass(frozen=True)
class Chunk:
    """What one `SpikingNetwork.run_chunk` simulates: the schedule of a chunk of time.

    Attributes:
        start: index of the first time unit (a multiple of K in step mode);
            an int or a scalar tensor.
        length: time units in the chunk (whole periods in step mode).
        period_mode: True for period units (BSNN), False for steps.
        end: time units at or after `end` are not counted (readout, observers).
        skew: `start` as a Python int, to skip each layer before it is
            `active_from` (the wavefront schedule; exact); `DYNAMIC` to skip,
            judged from the runtime `start`, each layer at rest over the whole
            chunk (and, with `stop`, each layer no longer needed over all of it),
            one program for every start; None simulates every layer throughout.
        stop: with `skew`, `end` as a Python int, to stop each layer where it
            is no longer `needed_until` for the readout before `end`: the logits
            stay exact, but the layers' state and emissions do not, so only a
            run that ends at `end` and keeps no more than the logits and the
            spike counts on the schedule (no trace, no emitted values) may use
            it. `DYNAMIC` (with `skew` = `DYNAMIC`): the same judged from the
            runtime `end`, over whole chunks. None simulates every layer to the
            chunk's end.
        trace: also return what every neuron and gate emitted.
        count_window: which time units the spike counter counts
            (`observers.COUNT_WINDOWS`): "schedule", each neuron layer only
            from its `active_from` to its `needed_until(end)` (the periods a
            logits-only run simulates it in); "whole", every unit before `end`.
    """

    start: object
    length: int
    period_mode: bool
    end: object
    skew: int | None = None
    stop: int | None = None
    trace: bool = False
    count_window: str = "whole"


class ChunkResult(typing.NamedTuple):
    """What `SpikingNetwork.run_chunk` returns."""

    state: dict   # for the next chunk
    totals: object  # the readout's running totals, (length, N, classes)
    trace: dict   # {neuron or gate layer: what it emitted, (length, N, *units)}


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
        latency_search: the record of `convert(phases="auto")`'s search (None
            otherwise), kept by a save.

    Example:
        >>> snn = bsnn_tf.convert(ann, x_calibration)
        >>> snn.timesteps = 64
        >>> logits = snn.predict(x_test, verbose=0)
        >>> logits.shape
        (100, 10)
    """

    def __init__(self, graph_layers, topology, method="bsnn", timesteps=256, mode=None,
                 ann_layers=None, scales=None, latency_search=None, **kwargs):
        super().__init__(**kwargs)
        default_mode = methods.get(method).default_mode  # (raises for an unknown method)
        self.graph_layers = list(graph_layers)
        self.topology = [[name, list(inputs)] for name, inputs in topology]
        self.method = method
        self.timesteps = timesteps
        self.mode = mode or default_mode
        self.ann_layers = dict(ann_layers or {})
        self.scales = {k: np.asarray(v, "float32") for k, v in (scales or {}).items()}
        self.latency_search = latency_search
        self._by_name = {layer.name: layer for layer in self.graph_layers}
        self._roles = {layer.name: roles.of(layer) for layer in self.graph_layers}
        self._runners = {layer.name: layer if self._roles[layer.name] != Role.SYNAPSE
                         else layers.Synapse(layer) for layer in self.graph_layers}
        self._static = self._static_layers()
        self.unit_shapes = {}

    # ------------------------------------------------------------ settings

    @property
    def timesteps(self):
        """T, the steps that calling the model or `predict` simulates (settable)."""
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value):
        self._timesteps = check_timesteps(value)
        self.predict_function = None  # compiled for the old value

    @property
    def mode(self):
        """The default simulation mode, "period" (BSNN) or "step" (settable)."""
        return self._mode

    @mode.setter
    def mode(self, value):
        self._mode = value
        self.predict_function = None

    # ------------------------------------------------------------ structure

    @property
    def encoder(self):
        """The input layer (`PhaseEncoder`)."""
        return self.graph_layers[0]

    @property
    def readout(self):
        """The output layer (`Readout`), which accumulates the logits."""
        return self.graph_layers[-1]

    @property
    def phases(self):
        """K, phases per period (1 for rate coding)."""
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
    def first_readout(self):
        """The first T at which the output is read from a whole period of spikes.

        The readout counts from period `readout_start` (BSNN: the spiking depth
        D plus any readout delay; the baselines: 0), so its first whole period
        ends at T = (readout_start + 1) * phases; before step
        readout_start * phases the output is the readout bias alone. For BSNN
        without a readout delay, the output there is exactly the K-bit
        quantised ANN (docs/DESIGN.md, "Calibration").
        """
        return (self.readout_start + 1) * self.phases

    def first_readout_model(self):
        """The Keras ANN whose logits are this BSNN's at `first_readout`, one ANN pass
        instead of a simulation; it shares this network's layers (`bsnn_tf.twin`)."""
        return twin.first_readout_model(self)

    @property
    def active_from(self):
        """{layer: first period in which it can change}: the wavefront of the first input.

        A layer is provably at rest before it (no input, no bias, no emission),
        so `run_chunk` skips it there. Synapses are bias-free and map silence to
        silence, except one that adds a constant (`use_bias`, `use_shift`).
        """
        first_output, begins = {}, {}
        for name, inputs in self.topology:
            layer, role = self._by_name[name], self._roles[name]
            arriving = min((first_output[i] for i in inputs), default=0)
            if role == Role.NEURON:
                begins[name], first_output[name] = layer.active_periods(arriving)
            elif role == Role.READOUT:
                begins[name] = max(arriving, layer.start_period)
            elif role == Role.SYNAPSE and (getattr(layer, "use_bias", False)
                                        or getattr(layer, "use_shift", False)):
                begins[name] = first_output[name] = 0
            else:
                begins[name] = first_output[name] = arriving
        return begins

    def needed_until(self, end):
        """{layer: period from which its output can no longer reach the readout
        before period `end`}: the trailing edge of the light cone, mirror of `active_from`.

        A BIF layer emits in period p what it integrated in p - 1, so a layer
        D - d BIF layers below the readout matters only until end - (D - d);
        a logits-only run stops it there (`Chunk.stop`). Other layers pass
        their input on in the same time unit.
        """
        consumers = {name: [] for name, _ in self.topology}
        for name, inputs in self.topology:
            for i in inputs:
                consumers[i].append(name)
        until = {}
        for name, _ in reversed(self.topology):
            if self._roles[name] == Role.READOUT:
                until[name] = end
                continue
            until[name] = max((self._input_needed_until(c, until[c]) for c in consumers[name]),
                              default=0)
        return until

    def _input_needed_until(self, name, output_until):
        if self._roles[name] == Role.NEURON:
            return self._by_name[name].input_needed_until(output_until)
        return output_until

    def spiking_layers(self):
        """The neuron layers, in topological order."""
        return [l for l in self.graph_layers if self._roles[l.name] == Role.NEURON]

    def _static_layers(self):
        """Layers whose value is the same at every step: the real input and synapses on it."""
        static = set()
        for name, inputs in self.topology:
            layer, role = self._by_name[name], self._roles[name]
            if role == Role.INPUT and layer.is_constant:
                static.add(name)
            elif role == Role.SYNAPSE and all(i in static for i in inputs):
                static.add(name)
            elif any(i in static for i in inputs) and role != Role.NEURON:
                raise ValueError(
                    f"Layer '{name}' mixes the real-valued input with spikes; convert with "
                    "input_encoding='spike'."
                )
        return static

    def build(self, input_shape):
        shapes = {}
        for name, inputs in self.topology:
            layer, role = self._by_name[name], self._roles[name]
            in_shapes = [shapes[i] for i in inputs]
            if role == Role.INPUT:
                shapes[name] = (None,) + tuple(input_shape[1:])
                continue
            layer_input = in_shapes if len(in_shapes) > 1 else in_shapes[0]
            if not layer.built:
                layer.build(layer_input)
            if role in (Role.NEURON, Role.READOUT):
                shapes[name] = in_shapes[0]
            else:
                shapes[name] = tuple(layer.compute_output_shape(layer_input))
        self.unit_shapes = {name: tuple(shape[1:]) for name, shape in shapes.items()}
        self.built = True

    # ----------------------------------------------------------- simulation

    def start_state(self, x, count_spikes=True, record_values=False):
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
            layer, role = self._by_name[name], self._roles[name]
            if name in self._static:
                static[name] = (layer.current(x) if role == Role.INPUT
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

    def run_chunk(self, x, state, chunk):
        """Advances the simulation over one `Chunk` of time units (periods or steps).

        Every layer runs through the same interface (`bsnn_tf.clock`), in
        topological order, over the whole chunk (or its window of it, in a
        skewed chunk); the observers in `state` watch the neuron layers.

        Args:
            x: the input batch (N, ...).
            state: from `start_state` or the previous `run_chunk`.
            chunk: a `Chunk`: which time units, whether they are periods, the
                end of counting, the skew and stop of the schedule, the trace.

        Returns:
            A `ChunkResult`: the new state, the running readout totals
            (length, N, classes) and the trace ({layer: emitted values}).
        """
        x = ops.cast(x, self.compute_dtype)
        batch = ops.shape(x)[0]
        clock = Clock(ops.cast(chunk.start, "int32") + ops.arange(chunk.length, dtype="int32"),
                      chunk.period_mode, chunk.end)
        windows = self._chunk_windows(chunk.skew, chunk.stop, chunk.length, chunk.period_mode)
        running = self._dynamic_gates(chunk)
        watching = [o for o in observers.OBSERVERS if o.key in state]
        if chunk.stop is not None and (chunk.trace or (watching and (
                watching != [observers.SPIKES] or chunk.count_window != "schedule"))):
            raise ValueError("stop= gives exact logits and spike counts on the schedule "
                             "only: run without trace and emitted values, and with "
                             "count_window='schedule'.")
        counted_until = self._counted_until(chunk) if watching else {}
        new = {key: dict(value) for key, value in state.items()}
        values, traced = {}, {}
        for name, inputs in self.topology:
            if name in self._static:
                continue
            role, (begin, until) = self._roles[name], windows[name]
            values[name] = (begin, None)
            if begin < until:
                arriving = ([Constant(x)] if role == Role.INPUT else
                            [self._arriving(values, state, i, begin, until, batch)
                             for i in inputs])
                window = clock.window(begin, until)
                counting = Clock(window.time, window.period_mode,
                                 counted_until.get(name, window.end))
                values[name] = (begin, self._advance(name, arriving, state, new, window,
                                                     watching, counting, batch,
                                                     running.get(name)))
            if chunk.trace and role in (Role.NEURON, Role.GATE):
                traced[name] = self._aligned(values, name, 0, chunk.length, batch)
        return ChunkResult(new, self._readout_totals(values, state, new, chunk.length, batch),
                           traced)

    def _advance(self, name, arriving, state, new, clock, watching, counting_clock, batch,
                 running=None):
        """Runs layer `name` over `clock`; returns its time-major output. The spike
        counter counts what it emits before `counting_clock.end` (its count window's end).
        With `running` (a boolean scalar), only where it is true: else the layer is silent
        and keeps its state and totals."""
        layer, layer_state = self._by_name[name], state["layers"].get(name, ())
        totals = ([state[o.key][name] for o in watching]
                  if self._roles[name] == Role.NEURON else [])

        def advance():
            outputs, after = self._runners[name].run(arriving, layer_state, clock)
            return outputs, after, [
                observer.observe(layer, outputs, total,
                                 counting_clock if observer is observers.SPIKES else clock)
                for observer, total in zip(watching, totals)]

        def silent():
            return (ops.zeros((len(clock), batch) + self.unit_shapes[name], self.compute_dtype),
                    layer_state, totals)

        outputs, layer_state, totals = (advance() if running is None
                                        else ops.cond(running, advance, silent))
        if layer_state:
            new["layers"][name] = layer_state
        for observer, total in zip(watching, totals):
            new[observer.key][name] = total
        return outputs

    def _counted_until(self, chunk):
        """{neuron layer: the time unit from which the spike counter no longer counts it}
        with `count_window="schedule"`: where it is no longer `needed_until` the chunk's
        end (a tensor in a compiled chunk: the trailing edge moves with the end), else {}."""
        if observers.check_count_window(chunk.count_window) == "whole":
            return {}
        per_unit = 1 if chunk.period_mode else self.phases
        end_period = (chunk.end + per_unit - 1) // per_unit
        behind = self.needed_until(0)  # each edge relative to the end's period
        return {layer.name: ops.minimum((end_period + behind[layer.name]) * per_unit,
                                        chunk.end)
                for layer in self.spiking_layers()}

    def count_steps(self, timesteps, count_window="schedule"):
        """{neuron layer: time steps whose spikes a run of `timesteps` steps counts}.

        "whole": all `timesteps`. "schedule": the steps of the periods the
        logits-only run simulates the layer in, from its `active_from` to its
        `needed_until` the run's end (docs/DESIGN.md, "Spike statistics").
        The firing rates divide by these.
        """
        if observers.check_count_window(count_window) == "whole":
            return {layer.name: int(timesteps) for layer in self.spiking_layers()}
        until = self.needed_until(-(-int(timesteps) // self.phases))
        steps = lambda period: int(np.clip(period * self.phases, 0, timesteps))
        return {layer.name: max(steps(until[layer.name]) - steps(self.active_from[layer.name]),
                                0) for layer in self.spiking_layers()}

    def _dynamic_gates(self, chunk):
        """{synapse: boolean scalar} in a `DYNAMIC` chunk: whether it runs in it, i.e. is not
        at rest throughout (before `active_from`) nor, with `stop` = `DYNAMIC`, past its
        `needed_until` the chunk's runtime `end` throughout. Only synapses with weights
        (the work) are gated: each gate costs the compiled program two functions, and the
        other layers stay exact on silent input."""
        if chunk.skew != DYNAMIC:
            return {}
        per_unit = 1 if chunk.period_mode else self.phases
        start = ops.cast(chunk.start, "int32")
        # needed_until(end) is end less a fixed number of periods per layer (one per BIF
        # layer on the way to the readout): with stop=DYNAMIC, taken from the runtime end.
        before_end = {} if chunk.stop is None else self.needed_until(0)
        end_periods = None if chunk.stop is None else ops.floor_divide(
            ops.cast(chunk.end, "int32") + per_unit - 1, per_unit)
        gates = {}
        for name, begin in self.active_from.items():
            if self._roles[name] != Role.SYNAPSE or not self._by_name[name].weights:
                continue
            conditions = []
            if begin > 0:
                conditions.append(start + chunk.length > begin * per_unit)
            if before_end.get(name, 0) < 0:
                conditions.append(start < (end_periods + before_end[name]) * per_unit)
            if conditions:
                gates[name] = (conditions[0] if len(conditions) == 1
                               else ops.logical_and(*conditions))
        return gates

    def _chunk_windows(self, skew, stop, length, period_mode):
        """{layer: (begin, until)}: the chunk's time units in which it runs; before
        `begin` it is at rest, from `until` on it no longer matters."""
        if skew is None or skew == DYNAMIC:  # the whole chunk
            return dict.fromkeys(self._by_name, (0, length))
        per_unit = 1 if period_mode else self.phases
        local = lambda period: int(np.clip(period * per_unit - skew, 0, length))
        until = {} if stop is None else self.needed_until(-(-stop // per_unit))
        return {name: (local(begin), local(until[name]) if name in until else length)
                for name, begin in self.active_from.items()}

    def _arriving(self, values, state, name, begin, until, batch):
        """Input from layer `name` over units `begin` to `until`: a `Constant` if it is static."""
        if name in self._static:
            return Constant(state["static"][name])
        return self._aligned(values, name, begin, until, batch)

    def _aligned(self, values, name, begin, until, batch, held=None):
        """`name`'s values over the chunk's units `begin` to `until`. Where it did not run
        (before the light cone reaches it, after a stop) they are zeros, or with
        `held=(before, after)` the values it held before it ran and after."""
        own_begin, output = values[name]
        own_until = own_begin if output is None else own_begin + int(output.shape[0])
        zeros = lambda units: ops.zeros((units, batch) + self.unit_shapes[name],
                                        self.compute_dtype)
        holding = lambda value: lambda units: ops.repeat(value[None], units, axis=0)
        fill_before, fill_after = (zeros, zeros) if held is None else map(holding, held)
        parts = []
        if begin < own_begin:
            parts.append(fill_before(min(own_begin, until) - begin))
        if output is not None and max(begin, own_begin) < min(until, own_until):
            parts.append(output[max(begin, own_begin) - own_begin:
                                min(until, own_until) - own_begin])
        if until > max(own_until, begin):
            parts.append(fill_after(until - max(own_until, begin)))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts)

    def _readout_totals(self, values, state, new, length, batch):
        """The readout's running totals over the chunk: where it did not run, they hold."""
        name = self.readout.name
        (before,), (after,) = state["layers"][name], new["layers"][name]
        return self._aligned(values, name, 0, length, batch, held=(before, after))

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
        """`keras.Model.predict`; an array `x` is first checked like `bsnn_tf.simulate`'s,
        a stream of batches may yield images alone (`bsnn_tf.batches`), and a
        `timesteps` before the first readout is warned about."""
        if isinstance(x, (np.ndarray, list)) or keras.ops.is_tensor(x):
            x = self.check_inputs(x)
        elif hasattr(x, "element_spec"):
            x = batches.batched(x, len(self.unit_shapes[self.encoder.name]),
                                kwargs.get("batch_size"))
        elif batches.is_stream(x) and not isinstance(x, keras.utils.PyDataset):
            x = ((self.check_inputs(images),) for images, _ in batches.iterate(x))
        warn_before_first_readout(self, [self.timesteps])
        return super().predict(x, *args, **kwargs)

    def call(self, x):
        """Simulates `self.timesteps` steps from rest (in `self.mode`); returns logits."""
        period_mode = check_mode(self, self.mode)
        steps = check_timesteps(self.timesteps)
        units = self.time_units(steps, period_mode)
        chunk = self.chunk_length(x.shape[0] or CALL_BATCH, units, period_mode, logits_only=True)
        chunks = self.chunk_starts(units, chunk, period_mode, logits_only=True)
        # The chunks with their own schedule come first; the rest share one, in one loop.
        first = next((index for index, (_, skew, _) in enumerate(chunks)
                      if skew is None or skew == DYNAMIC), len(chunks))
        state = self.start_state(x, count_spikes=False)
        run = lambda state, start, skew, stop: self.run_chunk(
            x, state, Chunk(start, chunk, period_mode, units, skew, stop)).state
        for start, skew, stop in chunks[:first]:
            state = run(state, start, skew, stop)
        if first < len(chunks):
            _, skew, stop = chunks[first]
            state = ops.fori_loop(first, len(chunks),
                                  lambda index, state: run(state, index * chunk, skew, stop), state)
        return self.readout.logits(state["layers"][self.readout.name][0], steps)

    def chunk_starts(self, units, chunk, period_mode, logits_only=False):
        """[(start, skew, stop)] of the chunks of `chunk` time units that simulate `units`.

        A chunk in which some layer does not run throughout (at the head, where
        layers are still at rest, `active_from`; in a `logits_only` run, wherever
        a layer is no longer `needed_until` the end) skips it there. The first
        MAX_SKEWED_CHUNKS such chunks are each compiled with their own schedule:
        `skew` is the start itself and, where a layer stops in it, `stop` = `units`.
        All later chunks then share one program, `skew` = `DYNAMIC` (and `stop` =
        `DYNAMIC` in a `logits_only` run), which skips a layer over whole chunks only,
        so that a run compiles the same programs for any T. A `logits_only` run may
        count spikes on the schedule (`Chunk.count_window`). Else both are None.
        """
        per_unit = 1 if period_mode else self.phases
        all_active = max(self.active_from.values()) * per_unit
        starts = list(range(0, units, chunk))
        first_stop = None  # the first unit at which a layer stops
        if logits_only:
            until = self.needed_until(-(-units // per_unit))
            first_stop = min(until[layer.name] for layer in self.spiking_layers()) * per_unit
        stopping = lambda start: first_stop is not None and start + chunk > first_stop
        skipping = lambda start: start < all_active or stopping(start)
        head, rest = starts[:MAX_SKEWED_CHUNKS], starts[MAX_SKEWED_CHUNKS:]
        chunks = [(start, start, units if stopping(start) else None) if skipping(start)
                  else (start, None, None) for start in head]
        shared = ((DYNAMIC, DYNAMIC if logits_only else None) if any(map(skipping, rest))
                  else (None, None))
        return chunks + [(start,) + shared for start in rest]

    def chunk_length(self, batch_size, units, period_mode, logits_only=False,
                     budget=CHUNK_BYTES):
        """Time units per compiled chunk of a run of `units` time units (whole periods).

        A layer holds its output over the periods it runs in a chunk; the chunk
        may span as many periods as keep `LIVE_OUTPUTS` copies of the largest
        layer's output within `budget` bytes for `batch_size` images (at most
        MAX_CHUNK_PERIODS), evened out so that the chunks end close to `units`.
        In a `logits_only` run no layer runs longer than its window from
        `active_from` to `needed_until`: where every window fits, the whole run
        is one chunk, one compiled program.
        """
        per_unit = 1 if period_mode else self.phases
        most = int(np.clip(budget // max(batch_size * self._chunk_bytes(period_mode), 1),
                           1, MAX_CHUNK_PERIODS))
        periods = -(-units // per_unit)
        if logits_only and self._longest_window(periods) <= most:
            return periods * per_unit
        chunks = -(-periods // most)
        return -(-periods // chunks) * per_unit

    def batch_for_chunks(self, units, period_mode, logits_only=False, budget=CHUNK_BYTES):
        """The most images per batch for which a chunk spans every period a layer runs in a
        run of `units` time units (or MAX_CHUNK_PERIODS of them): few compiled chunks."""
        periods = -(-units // (1 if period_mode else self.phases))
        needed = self._longest_window(periods) if logits_only else periods
        wanted = min(needed, MAX_CHUNK_PERIODS)
        return max(1, budget // max(wanted * self._chunk_bytes(period_mode), 1))

    def _chunk_bytes(self, period_mode):
        """Bytes a chunk holds per image and period: LIVE_OUTPUTS largest layer outputs."""
        largest = max(int(np.prod(shape)) for shape in self.unit_shapes.values())
        steps = 1 if period_mode else self.phases  # values per unit in a period
        return LIVE_OUTPUTS * largest * steps * np.dtype(self.compute_dtype).itemsize

    def _longest_window(self, periods):
        """The most periods any layer runs in a logits-only run of `periods` periods."""
        until = self.needed_until(periods)
        return max(min(until[name], periods) - begin for name, begin in self.active_from.items())

    def state_bytes(self, count_spikes=True, record_values=False):
        """Bytes of simulation state per image (membranes, gates, readout, constant
        currents and the observers asked for): what a batch holds whatever T is."""
        state = self.start_state(np.zeros((1,) + self.unit_shapes[self.encoder.name],
                                            "float32"), count_spikes, record_values)
        return sum(int(np.prod(leaf.shape)) * np.dtype(self.compute_dtype).itemsize
                   for leaf in keras.tree.flatten(state))

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
        if self.latency_search is not None:
            config["latency_search"] = self.latency_search
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        graph_layers = [keras.saving.deserialize_keras_object(layer_config)
                        for layer_config in config.pop("graph_layers")]
        return cls(graph_layers, **config)


def _single(values):
    return values if len(values) > 1 else values[0]
