"""SpikingNetwork: a converted SNN as a keras.Model.

The network is a graph of layers: a `PhaseEncoder`, bias-free synapses
(Conv2D, Dense, pooling, Add, ...), spiking neurons (`bsnn_tf.neurons`),
max gates and a `Readout`. Calling the model runs `timesteps` steps from rest
and returns logits, so `predict`, `save` and `keras.models.load_model` work as
for any Keras model; `bsnn_tf.simulate` gives checkpoints, spike counts and
more. The runtime is elsewhere: `bsnn_tf.engine` runs the layers over chunks of
time, `bsnn_tf.schedule` plans the chunks (light cone, chunk plan, memory budget).
"""

import keras
import numpy as np

from bsnn_tf import batches, methods, roles, twin
from bsnn_tf.engine import Engine, run_chunks
from bsnn_tf.roles import Role
from bsnn_tf.schedule import CHUNK_BYTES, Chunk, chunk_bytes
from bsnn_tf.validation import check_inputs, check_mode, check_timesteps, warn_before_first_readout

# The batch `call` sizes its chunks for when the traced batch size is unknown (predict's).
CALL_BATCH = 32


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
        calibration_range: [lowest, highest] value of the calibration images
            (None: unknown); `simulate` warns for images far outside it.

    Example:
        >>> snn = bsnn_tf.convert(ann, x_calibration)
        >>> snn.timesteps = 64
        >>> logits = snn.predict(x_test, verbose=0)
        >>> logits.shape
        (100, 10)
    """

    def __init__(self, graph_layers, topology, method="bsnn", timesteps=256, mode=None,
                 ann_layers=None, scales=None, latency_search=None, calibration_range=None,
                 **kwargs):
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
        self.calibration_range = None if calibration_range is None else [
            float(v) for v in calibration_range]
        self._engine = Engine(self.graph_layers, self.topology, self.compute_dtype)

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
    def unit_shapes(self):
        """{layer: the shape of its output per image}; empty before the network is built."""
        return self._engine.unit_shapes

    def spiking_layers(self):
        """The neuron layers, in topological order."""
        return [l for l in self.graph_layers if roles.of(l) == Role.NEURON]

    def build(self, input_shape):
        self._engine.build(input_shape)
        self.built = True

    # --------------------------------------------------- runtime (engine, schedule)

    @property
    def schedule(self):
        """The light cone and the chunk plans of this network (`bsnn_tf.schedule.Schedule`)."""
        return self._engine.schedule

    @property
    def active_from(self):
        """{layer: first period in which it can change} (`Schedule.active_from`):
        `run_chunk` skips a layer at rest before it."""
        return dict(self.schedule.active_from)

    def needed_until(self, end):
        """{layer: period from which its output can no longer reach the readout before
        period `end`} (`Schedule.needed_until`): the light cone's trailing edge."""
        return self.schedule.needed_until(end)

    def start_state(self, x, count_spikes=True, record_values=False):
        """State at rest for input batch `x`, with the constant input currents.

        Returns {"layers": {layer: its state}, "static": {layer: its constant
        value}, and one total per observer asked for}: `count_spikes` and
        `record_values` add the spike and emitted-value totals per unit
        (`bsnn_tf.observers`); a logits-only simulation carries neither.
        """
        return self._engine.start_state(x, count_spikes, record_values)

    def run_chunk(self, x, state, chunk):
        """Advances the simulation of input batch `x` from `state` (from `start_state` or
        the previous `run_chunk`) over one `Chunk` of time units (periods or steps);
        returns a `ChunkResult`: the new state, the running readout totals and the
        trace (`Engine.run_chunk`)."""
        return self._engine.run_chunk(x, state, chunk)

    def chunk_starts(self, units, chunk, period_mode, logits_only=False):
        """[(start, skew, stop)] of the chunks of `chunk` time units that simulate `units`
        (`Schedule.chunk_starts`)."""
        return self.schedule.chunk_starts(units, chunk, period_mode, logits_only)

    def chunk_length(self, batch_size, units, period_mode, logits_only=False,
                     budget=CHUNK_BYTES):
        """Time units per compiled chunk of a run of `units` time units for `batch_size`
        images, within `budget` bytes (`Schedule.chunk_length`)."""
        per_period = chunk_bytes(self.unit_shapes, self.schedule.units_per_period(period_mode),
                                 self.compute_dtype)
        return self.schedule.chunk_length(batch_size, units, period_mode, per_period,
                                          logits_only, budget)

    def state_bytes(self, count_spikes=True, record_values=False):
        """Bytes of simulation state per image (membranes, gates, readout, constant
        currents and the observers asked for): what a batch holds whatever T is."""
        return self._engine.state_bytes(count_spikes, record_values)

    # ----------------------------------------------------------- simulation

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
        units = self.schedule.time_units(steps, period_mode)
        length = self.chunk_length(x.shape[0] or CALL_BATCH, units, period_mode,
                                   logits_only=True)
        chunks = self.chunk_starts(units, length, period_mode, logits_only=True)
        advance = lambda state, start, skew, stop: self.run_chunk(
            x, state, Chunk(start, length, period_mode, units, skew, stop)).state
        state = run_chunks(chunks, length, advance, self.start_state(x, count_spikes=False),
                           fori_loop=True)
        return self.readout.logits(state["layers"][self.readout.name][0], steps)

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
        for key in ("latency_search", "calibration_range"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        graph_layers = [keras.saving.deserialize_keras_object(layer_config)
                        for layer_config in config.pop("graph_layers")]
        return cls(graph_layers, **config)

