"""The first-readout twin: a Keras ANN whose logits are a BSNN's at T = (D + 1) K.

A BIF layer emits in period p exactly Q(V) of the membrane V it integrated
in period p - 1 (docs/DESIGN.md, "Neurons"), so at the first readout every
layer has emitted once: the K-bit rounding of its input current plus bias
(`BistableIF.mean_output`), read by the next layer's synapses one period
later. The twin computes that one period as an ANN, from the SNN's own
layers: the encoder's input current (or its phase-coded input, Q(x / scale)),
the same synapse layers (shared, not copied), each neuron's first output, the
max gate as max pooling of those outputs (at the first output its running
total is the output itself), and the readout's current plus its bias. Its
logits equal `bsnn_tf.simulate(snn, x, timesteps=snn.first_readout)`'s up to
float rounding, at the cost of one ANN pass; the tests hold it to the numpy
reference simulator and to `simulate`.

The neurons' first output has a straight-through gradient (that of
clip(v, 0, 1)), so the twin can be trained: its variables are the SNN's.

Example:
    >>> twin = snn.first_readout_model()
    >>> result = bsnn_tf.simulate(snn, x_test[:8], timesteps=snn.first_readout, verbose=0)
    >>> np.allclose(twin.predict(x_test[:8], verbose=0), result.outputs, atol=1e-4)
    True
"""

import keras
from keras import ops

from bsnn_tf import coding, layers, methods, neurons, validation


def first_readout_model(snn):
    """The twin of BSNN `snn` at its first readout, a `keras.Model` sharing its layers.

    Raises:
        TypeError: `snn` is not a `SpikingNetwork` (a plain Keras model: convert it first).
        ValueError: `snn` has no exact first readout (a baseline method, or a
            readout that waits past the first output period).
    """
    validation.check_spiking_network(snn, "first_readout_model")
    if not methods.get(snn.method).readout_waits_for_output:
        raise ValueError(f"The first-readout twin is exact for BSNN only; this SNN uses "
                         f"method={snn.method!r}, whose output approximates its ANN only as "
                         "T grows.")
    if snn.readout_start != snn.depth:
        raise ValueError(f"This SNN's readout waits {snn.readout_start - snn.depth} periods "
                         "past the first output (readout_delay): its first readout is not "
                         "the quantised ANN. Convert with readout_delay=0.")
    dtype = snn.compute_dtype
    image = keras.Input(snn.unit_shapes[snn.encoder.name], name="image", dtype=dtype)
    values = {}
    for name, inputs in snn.topology:
        layer = snn.get_layer(name)
        sources = [values[i] for i in inputs]
        values[name] = _first_output(layer, image, sources, dtype)
    return keras.Model(image, values[snn.readout.name], name=f"{snn.name}_first_readout")


def _first_output(layer, image, sources, dtype):
    """What `layer` contributes at the first readout, as a Keras tensor."""
    if isinstance(layer, coding.PhaseEncoder):
        return EncodedInput(layer, dtype=dtype)(image)
    if isinstance(layer, neurons.SpikingNeuron):
        return FirstOutput(layer, dtype=dtype)(sources[0])
    if isinstance(layer, layers.SpikingMaxPool):
        return keras.layers.MaxPooling2D(layer.pool_size, layer.strides, layer.padding,
                                         name=f"{layer.name}_first", dtype=dtype)(sources[0])
    if isinstance(layer, layers.Readout):
        return ReadoutBias(layer, dtype=dtype)(sources[0])
    return layer(sources if len(sources) > 1 else sources[0])


class EncodedInput(keras.layers.Layer):
    """The encoder's value in every period: x / scale, or Q(x / scale) for spike input."""

    def __init__(self, encoder, **kwargs):
        super().__init__(name=f"{encoder.name}_first", **kwargs)
        self.encoder = encoder

    def build(self, input_shape):
        self.built = True  # no variables of its own

    def call(self, x):
        current = self.encoder.current(x)
        if self.encoder.is_constant:
            return current
        return coding.quantize(current, self.encoder.phases)


class FirstOutput(keras.layers.Layer):
    """A neuron layer's first output for input current v: f(v + bias), where f is its
    `mean_output` (the K-bit rounding), with the gradient of clip(v + bias, 0, 1)."""

    def __init__(self, neuron, **kwargs):
        super().__init__(name=f"{neuron.name}_first", **kwargs)
        self.neuron = neuron

    def call(self, current):
        total = current + ops.cast(self.neuron.bias, current.dtype)
        smooth = ops.clip(total, 0.0, 1.0)
        return smooth + ops.stop_gradient(self.neuron.mean_output(total) - smooth)


class ReadoutBias(keras.layers.Layer):
    """The readout after one counted period: its current plus its bias."""

    def __init__(self, readout, **kwargs):
        super().__init__(name=f"{readout.name}_first", **kwargs)
        self.readout = readout

    def call(self, current):
        return current + ops.cast(self.readout.bias, current.dtype)
