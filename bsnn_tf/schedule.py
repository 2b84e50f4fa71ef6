"""Schedule: when each layer of a spiking network runs, and how a run is cut into chunks.

The light cone: a layer is at rest until the first input can reach it
(`Schedule.active_from`) and, in a run that keeps only the logits, no longer
matters once its output can no longer reach the readout before the end
(`Schedule.needed_until`). The chunk plan cuts a run into `Chunk`s of time,
compiled as few programs (`Schedule.chunk_starts`); the memory budget sizes them
(`Schedule.chunk_length`, `Schedule.batch_for_chunks`). All of it is computed
from the layers' structure alone; `bsnn_tf.engine` runs the chunks.

Example:
    >>> from bsnn_tf.schedule import Schedule
    >>> plan = Schedule(snn.topology, {l.name: l for l in snn.graph_layers}, snn.phases)
    >>> plan.active_from == snn.active_from
    True
    >>> plan.time_units(64, period_mode=True), plan.units_per_period(period_mode=False)
    (16, 4)
"""

import dataclasses

import numpy as np
from keras import ops

from bsnn_tf import observers, roles
from bsnn_tf.roles import Role
from bsnn_tf.validation import check_whole_periods

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


class Schedule:
    """The light cone of a graph of simulation layers, and the chunk plans over it.

    Args:
        topology: [layer name, [input layer names]] per layer, in topological order.
        layers: {layer name: layer}.
        phases: K, the steps of a period.
    """

    def __init__(self, topology, layers, phases):
        self.topology, self.layers, self.phases = topology, layers, phases
        self.roles = {name: roles.of(layer) for name, layer in layers.items()}
        self.neurons = [name for name, _ in topology if self.roles[name] == Role.NEURON]
        self.active_from = self._active_from()
        self._consumers = {name: [] for name, _ in topology}
        for name, inputs in topology:
            for i in inputs:
                self._consumers[i].append(name)
        # needed_until(end) is end less a fixed number of periods per layer (one per BIF
        # layer on the way to the readout): each edge relative to the end's period.
        self._behind = self.needed_until(0)

    def units_per_period(self, period_mode):
        """Time units in a period: 1 in period mode, K in step mode."""
        return 1 if period_mode else self.phases

    def steps_per_unit(self, period_mode):
        """Time steps in a time unit: K in period mode, 1 in step mode."""
        return self.phases if period_mode else 1

    def time_units(self, timesteps, period_mode):
        """Chunk-loop length: `timesteps` in periods (period mode) or steps."""
        if not period_mode:
            return timesteps
        check_whole_periods([timesteps], self.phases)
        return timesteps // self.phases

    # ------------------------------------------------------------ light cone

    def _active_from(self):
        """{layer: first period in which it can change}: the wavefront of the first input.

        A layer is provably at rest before it (no input, no bias, no emission).
        Synapses are bias-free and map silence to silence, except one that adds
        a constant (`use_bias`, `use_shift`).
        """
        first_output, begins = {}, {}
        for name, inputs in self.topology:
            layer, role = self.layers[name], self.roles[name]
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
        until = {}
        for name, _ in reversed(self.topology):
            if self.roles[name] == Role.READOUT:
                until[name] = end
                continue
            until[name] = max((self._input_needed_until(c, until[c])
                               for c in self._consumers[name]), default=0)
        return until

    def _input_needed_until(self, name, output_until):
        if self.roles[name] == Role.NEURON:
            return self.layers[name].input_needed_until(output_until)
        return output_until

    def longest_window(self, periods):
        """The most periods any layer runs in a logits-only run of `periods` periods."""
        until = self.needed_until(periods)
        return max(min(until[name], periods) - begin for name, begin in self.active_from.items())

    def count_steps(self, timesteps, count_window="schedule"):
        """{neuron layer: time steps whose spikes a run of `timesteps` steps counts}.

        "whole": all `timesteps`. "schedule": the steps of the periods the
        logits-only run simulates the layer in, from its `active_from` to its
        `needed_until` the run's end (docs/DESIGN.md, "Spike statistics").
        The firing rates divide by these.
        """
        if observers.check_count_window(count_window) == "whole":
            return dict.fromkeys(self.neurons, int(timesteps))
        until = self.needed_until(-(-int(timesteps) // self.phases))
        steps = lambda period: int(np.clip(period * self.phases, 0, timesteps))
        return {name: max(steps(until[name]) - steps(self.active_from[name]), 0)
                for name in self.neurons}

    # ------------------------------------------------------------ chunk plan

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
        units_per_period = self.units_per_period(period_mode)
        all_active = max(self.active_from.values()) * units_per_period
        starts = list(range(0, units, chunk))
        first_stop = None  # the first unit at which a layer stops
        if logits_only:
            until = self.needed_until(-(-units // units_per_period))
            first_stop = min(until[name] for name in self.neurons) * units_per_period
        stopping = lambda start: first_stop is not None and start + chunk > first_stop
        skipping = lambda start: start < all_active or stopping(start)
        head, rest = starts[:MAX_SKEWED_CHUNKS], starts[MAX_SKEWED_CHUNKS:]
        chunks = [(start, start, units if stopping(start) else None) if skipping(start)
                  else (start, None, None) for start in head]
        shared = ((DYNAMIC, DYNAMIC if logits_only else None) if any(map(skipping, rest))
                  else (None, None))
        return chunks + [(start,) + shared for start in rest]

    def windows(self, chunk):
        """{layer: (begin, until)}: the `Chunk`'s time units in which it runs; before
        `begin` it is at rest, from `until` on it no longer matters."""
        if chunk.skew is None or chunk.skew == DYNAMIC:  # the whole chunk
            return dict.fromkeys(self.layers, (0, chunk.length))
        units_per_period = self.units_per_period(chunk.period_mode)
        local = lambda period: int(np.clip(period * units_per_period - chunk.skew, 0,
                                           chunk.length))
        until = ({} if chunk.stop is None
                 else self.needed_until(-(-chunk.stop // units_per_period)))
        return {name: (local(begin), local(until[name]) if name in until else chunk.length)
                for name, begin in self.active_from.items()}

    def dynamic_gates(self, chunk):
        """{synapse: boolean scalar} in a `DYNAMIC` chunk: whether it runs in it, i.e. is not
        at rest throughout (before `active_from`) nor, with `stop` = `DYNAMIC`, past its
        `needed_until` the chunk's runtime `end` throughout. Only synapses with weights
        (the work) are gated: each gate costs the compiled program two functions, and the
        other layers stay exact on silent input."""
        if chunk.skew != DYNAMIC:
            return {}
        units_per_period = self.units_per_period(chunk.period_mode)
        start = ops.cast(chunk.start, "int32")
        before_end = {} if chunk.stop is None else self._behind
        end_periods = None if chunk.stop is None else ops.floor_divide(
            ops.cast(chunk.end, "int32") + units_per_period - 1, units_per_period)
        gates = {}
        for name, begin in self.active_from.items():
            if self.roles[name] != Role.SYNAPSE or not self.layers[name].weights:
                continue
            conditions = []
            if begin > 0:
                conditions.append(start + chunk.length > begin * units_per_period)
            if before_end.get(name, 0) < 0:
                conditions.append(start < (end_periods + before_end[name]) * units_per_period)
            if conditions:
                gates[name] = (conditions[0] if len(conditions) == 1
                               else ops.logical_and(*conditions))
        return gates

    def counted_until(self, chunk):
        """{neuron layer: the time unit from which the spike counter no longer counts it}
        with `count_window="schedule"`: where it is no longer `needed_until` the chunk's
        end (a tensor in a compiled chunk: the trailing edge moves with the end), else {}."""
        if observers.check_count_window(chunk.count_window) == "whole":
            return {}
        units_per_period = self.units_per_period(chunk.period_mode)
        end_period = (chunk.end + units_per_period - 1) // units_per_period
        return {name: ops.minimum((end_period + self._behind[name]) * units_per_period,
                                  chunk.end)
                for name in self.neurons}

    # --------------------------------------------------------- memory budget

    def chunk_length(self, batch_size, units, period_mode, bytes_per_period,
                     logits_only=False, budget=CHUNK_BYTES):
        """Time units per compiled chunk of a run of `units` time units (whole periods).

        A layer holds its output over the periods it runs in a chunk; the chunk
        may span as many periods as keep `bytes_per_period` (`chunk_bytes`) per
        image within `budget` bytes for `batch_size` images (at most
        MAX_CHUNK_PERIODS), evened out so that the chunks end close to `units`.
        In a `logits_only` run no layer runs longer than its window from
        `active_from` to `needed_until`: where every window fits, the whole run
        is one chunk, one compiled program.
        """
        units_per_period = self.units_per_period(period_mode)
        most = int(np.clip(budget // max(batch_size * bytes_per_period, 1),
                           1, MAX_CHUNK_PERIODS))
        periods = -(-units // units_per_period)
        if logits_only and self.longest_window(periods) <= most:
            return periods * units_per_period
        chunks = -(-periods // most)
        return -(-periods // chunks) * units_per_period

    def batch_for_chunks(self, units, period_mode, bytes_per_period, logits_only=False,
                         budget=CHUNK_BYTES):
        """The most images per batch for which a chunk spans every period a layer runs in a
        run of `units` time units (or MAX_CHUNK_PERIODS of them): few compiled chunks."""
        periods = -(-units // self.units_per_period(period_mode))
        needed = self.longest_window(periods) if logits_only else periods
        wanted = min(needed, MAX_CHUNK_PERIODS)
        return max(1, budget // max(wanted * bytes_per_period, 1))


def chunk_bytes(unit_shapes, units_per_period, dtype):
    """Bytes a chunk holds per image and period: LIVE_OUTPUTS largest layer outputs, each
    `units_per_period` values per unit."""
    largest = max(int(np.prod(shape)) for shape in unit_shapes.values())
    return LIVE_OUTPUTS * largest * units_per_period * np.dtype(dtype).itemsize
