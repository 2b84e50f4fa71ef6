"""Engine: runs a graph of simulation layers over chunks of time.

An `Engine` advances every layer of a spiking network over a `Chunk` of time
units, layer by layer in topological order: each synapse applied to the whole
chunk at once, each neuron scanning it (`bsnn_tf.clock`), each layer only in
its window of the chunk (`bsnn_tf.schedule`). The state it returns carries
the simulation to the next chunk, so a run of any length holds one chunk in
memory; `run_chunks` is the loop over a run's chunks that `SpikingNetwork.call`
and `bsnn_tf.simulate` share. It knows nothing of conversion.

Example:
    >>> from bsnn_tf.engine import run_chunks
    >>> from bsnn_tf.schedule import Chunk
    >>> advance = lambda state, start, skew, stop: snn.run_chunk(
    ...     x, state, Chunk(start, 4, True, 8, skew, stop)).state
    >>> state = run_chunks(snn.chunk_starts(8, 4, True), 4, advance, snn.start_state(x))
    >>> logits = snn.readout.logits(state["layers"][snn.readout.name][0], 8 * snn.phases)
    >>> simulated = bsnn_tf.simulate(snn, x, timesteps=8 * snn.phases, verbose=0)
    >>> np.allclose(logits, simulated.outputs, atol=1e-5)
    True
"""

import typing

import keras
import numpy as np
from keras import ops

from bsnn_tf import layers, observers, roles
from bsnn_tf.clock import Clock, Constant
from bsnn_tf.roles import Role
from bsnn_tf.schedule import DYNAMIC, Schedule


class ChunkResult(typing.NamedTuple):
    """What `Engine.run_chunk` returns."""

    state: dict   # for the next chunk
    totals: object  # the readout's running totals, (length, N, classes)
    trace: dict   # {neuron or gate layer: what it emitted, (length, N, *units)}


def run_chunks(chunks, length, advance, state, fori_loop=False):
    """Advances `state` over a run's `chunks` of `length` time units: the loop of a run.

    Args:
        chunks: [(start, skew, stop)] from `Schedule.chunk_starts`.
        advance: `advance(state, start, skew, stop)` -> the state after that chunk.
        state: the state before the first chunk.
        fori_loop: run the chunks from the first that is not skewed on (they share
            one schedule) in one `ops.fori_loop` (in a traced function: one loop
            in the program), `start` a tensor there; else each in turn.
    """
    first = len(chunks)
    if fori_loop:  # the chunks with their own schedule come first
        first = next((index for index, (_, skew, _) in enumerate(chunks)
                      if skew is None or skew == DYNAMIC), len(chunks))
    for start, skew, stop in chunks[:first]:
        state = advance(state, start, skew, stop)
    if first < len(chunks):
        _, skew, stop = chunks[first]
        state = ops.fori_loop(first, len(chunks),
                              lambda index, state: advance(state, index * length, skew, stop),
                              state)
    return state


class Engine:
    """Runs the layers of a spiking network over chunks of time.

    Args:
        graph_layers: the layers, in topological order; the first is the
            input encoder, the last the readout.
        topology: [layer name, [input layer names]] per layer, same order.
        dtype: the compute dtype of the simulation.
    """

    def __init__(self, graph_layers, topology, dtype):
        self.topology, self.dtype = topology, dtype
        self.layers = {layer.name: layer for layer in graph_layers}
        self.roles = {name: roles.of(layer) for name, layer in self.layers.items()}
        self.runners = {name: layer if self.roles[name] != Role.SYNAPSE
                        else layers.Synapse(layer) for name, layer in self.layers.items()}
        self.readout = graph_layers[-1].name
        self.schedule = Schedule(topology, self.layers, graph_layers[0].phases)
        self.static = self._static_layers()
        self.unit_shapes = {}

    def _static_layers(self):
        """Layers whose value is the same at every step: the real input and synapses on it."""
        static = set()
        for name, inputs in self.topology:
            layer, role = self.layers[name], self.roles[name]
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
        """Builds every layer for images of `input_shape` (N, ...); sets `unit_shapes`,
        {layer: the shape of its output per image}."""
        shapes = {}
        for name, inputs in self.topology:
            layer, role = self.layers[name], self.roles[name]
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

    def start_state(self, x, count_spikes=True, record_values=False):
        """State at rest for input batch `x` (`SpikingNetwork.start_state`)."""
        x = ops.cast(x, self.dtype)
        batch = ops.shape(x)[0]
        static, layer_states = {}, {}
        for name, inputs in self.topology:
            layer, role = self.layers[name], self.roles[name]
            if name in self.static:
                static[name] = (layer.current(x) if role == Role.INPUT
                                else layer(_single([static[i] for i in inputs])))
                continue
            input_shape = self.unit_shapes[inputs[0] if inputs else name]
            layer_state = self.runners[name].initial_state((batch,) + input_shape)
            if layer_state:
                layer_states[name] = layer_state
        feeding = {i for name, inputs in self.topology if name not in self.static
                   for i in inputs}
        state = {"layers": layer_states,
                 "static": {name: value for name, value in static.items() if name in feeding}}
        for observer in observers.chosen(count_spikes, record_values):
            state[observer.key] = {name: ops.zeros((batch,) + self.unit_shapes[name], self.dtype)
                                   for name in self.schedule.neurons}
        return state

    def state_bytes(self, count_spikes=True, record_values=False):
        """Bytes of simulation state per image (`SpikingNetwork.state_bytes`)."""
        image = np.zeros((1,) + self.unit_shapes[self.topology[0][0]], "float32")
        state = self.start_state(image, count_spikes, record_values)
        return sum(int(np.prod(leaf.shape)) * np.dtype(self.dtype).itemsize
                   for leaf in keras.tree.flatten(state))

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
        x = ops.cast(x, self.dtype)
        batch = ops.shape(x)[0]
        clock = Clock(ops.cast(chunk.start, "int32") + ops.arange(chunk.length, dtype="int32"),
                      chunk.period_mode, chunk.end)
        windows = self.schedule.windows(chunk)
        running = self.schedule.dynamic_gates(chunk)
        watching = [o for o in observers.OBSERVERS if o.key in state]
        if chunk.stop is not None and (chunk.trace or (watching and (
                watching != [observers.SPIKES] or chunk.count_window != "schedule"))):
            raise ValueError("stop= gives exact logits and spike counts on the schedule "
                             "only: run without trace and emitted values, and with "
                             "count_window='schedule'.")
        counted_until = self.schedule.counted_until(chunk) if watching else {}
        new = {key: dict(value) for key, value in state.items()}
        values, traced = {}, {}
        for name, inputs in self.topology:
            if name in self.static:
                continue
            role, (begin, until) = self.roles[name], windows[name]
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
        layer, layer_state = self.layers[name], state["layers"].get(name, ())
        totals = ([state[o.key][name] for o in watching]
                  if self.roles[name] == Role.NEURON else [])

        def advance():
            outputs, after = self.runners[name].run(arriving, layer_state, clock)
            return outputs, after, [
                observer.observe(layer, outputs, total,
                                 counting_clock if observer is observers.SPIKES else clock)
                for observer, total in zip(watching, totals)]

        def silent():
            return (ops.zeros((len(clock), batch) + self.unit_shapes[name], self.dtype),
                    layer_state, totals)

        outputs, layer_state, totals = (advance() if running is None
                                        else ops.cond(running, advance, silent))
        if layer_state:
            new["layers"][name] = layer_state
        for observer, total in zip(watching, totals):
            new[observer.key][name] = total
        return outputs

    def _arriving(self, values, state, name, begin, until, batch):
        """Input from layer `name` over units `begin` to `until`: a `Constant` if it is static."""
        if name in self.static:
            return Constant(state["static"][name])
        return self._aligned(values, name, begin, until, batch)

    def _aligned(self, values, name, begin, until, batch, held=None):
        """`name`'s values over the chunk's units `begin` to `until`. Where it did not run
        (before the light cone reaches it, after a stop) they are zeros, or with
        `held=(before, after)` the values it held before it ran and after."""
        own_begin, output = values[name]
        own_until = own_begin if output is None else own_begin + int(output.shape[0])
        zeros = lambda units: ops.zeros((units, batch) + self.unit_shapes[name], self.dtype)
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
        (before,), (after,) = state["layers"][self.readout], new["layers"][self.readout]
        return self._aligned(values, self.readout, 0, length, batch, held=(before, after))


def _single(values):
    return values if len(values) > 1 else values[0]
