"""verify(): how far each spiking layer of a converted SNN is from its ANN layer.

Example:
    >>> report = bsnn_tf.verify(ann, snn, x_test[:20], timesteps=256)
    >>> print(report)            # one row per layer
    SNN layer  ANN layer  max err  mean err  rel
    ...
    output (logits) after T=256: max err ...
    >>> report.output_error < 1.0      # worst |SNN logit - ANN logit|
    True
"""

import dataclasses

import keras
import numpy as np

from bsnn_tf import batches
from bsnn_tf.network import SpikingNetwork
from bsnn_tf.simulation import simulate
from bsnn_tf.simulator import default_batch_size
from bsnn_tf.validation import check_spiking_network, shape_fits


@dataclasses.dataclass
class LayerError:
    """ANN-SNN error of one spiking layer, in ANN activation units."""

    layer: str
    ann_layer: str
    max_error: float
    mean_error: float
    ann_max: float

    @property
    def relative_error(self):
        return self.max_error / self.ann_max if self.ann_max > 0 else self.max_error


@dataclasses.dataclass
class Verification:
    """Result of `verify`: per-layer errors and the output (logit) error."""

    timesteps: int
    layers: list
    output_error: float
    output_relative_error: float
    agreement: float

    def __str__(self):
        rows = [f"{'SNN layer':<28}{'ANN layer':<28}{'max err':>10}{'mean err':>10}{'rel':>8}"]
        for e in self.layers:
            rows.append(f"{e.layer:<28}{e.ann_layer:<28}{e.max_error:>10.4f}"
                        f"{e.mean_error:>10.4f}{e.relative_error:>8.2%}")
        rows.append(f"output (logits) after T={self.timesteps}: max err "
                    f"{self.output_error:.4f} ({self.output_relative_error:.2%} of the largest "
                    f"logit); same top-1 class for {self.agreement:.2%} of inputs")
        return "\n".join(rows)


def verify(ann, snn, x, timesteps, *, mode=None, atol=None, batch_size=None):
    """Compares `snn` with the ANN it came from on inputs `x`.

    Each spiking layer's output per period, times its lambda, is compared
    with the activation of the ANN layer it codes; the readout with the
    ANN's logits (before any softmax). The errors are reduced batch by batch,
    so memory depends on the batch, not on len(x).

    Args:
        x: images (an array), or a stream of batches (`bsnn_tf.batches`).
        batch_size: images per batch (default: `simulator.default_batch_size`).
        atol: if given, raise a ValueError when the worst output error exceeds it.

    Returns:
        A Verification.
    """
    _check_pair(ann, snn)
    names = [n for n, a in snn.ann_layers.items() if _has_layer(ann, a)]
    if snn.ann_layers and not names:
        raise ValueError(f"ann '{ann.name}' has none of the layers that snn '{snn.name}' codes "
                         f"({', '.join(sorted(set(snn.ann_layers.values())))}); pass the ANN "
                         "it was converted from.")
    probe = keras.Model(ann.inputs, [ann.get_layer(snn.ann_layers[n]).output for n in names]
                        + [logits_tensor(ann)])
    batch_size = batch_size or default_batch_size(snn, count_spikes=False, record_values=True,
                                                  timesteps=timesteps, mode=mode)
    errors = _Errors(names)
    rank = len(snn.unit_shapes[snn.encoder.name])
    for batch, _ in batches.iterate(x, batch_size, image_rank=rank):
        batch = batch.astype("float32", copy=False)
        result = simulate(snn, batch, timesteps=timesteps, mode=mode, record_values=True,
                          count_spikes=False, batch_size=batch_size, verbose=0)
        ann_values = probe.predict_on_batch(batch)
        errors.add(result, [np.asarray(v) for v in ann_values])
    if not errors.images:
        raise ValueError("verify got no images: pass at least one batch.")
    report = errors.report(snn, timesteps)
    if atol is not None and report.output_error > atol:
        raise ValueError(f"SNN output differs from the ANN's by more than atol={atol}:\n{report}")
    return report


class _Errors:
    """Running maxima, sums and counts of the errors of each layer and of the output."""

    def __init__(self, names):
        self.names = names
        self.max = dict.fromkeys(names, 0.0)
        self.sum = dict.fromkeys(names, 0.0)
        self.count = dict.fromkeys(names, 0)
        self.ann_max = dict.fromkeys(names, 0.0)
        self.output_max, self.logit_max, self.agreeing, self.images = 0.0, 0.0, 0, 0

    def add(self, result, ann_values):
        for name, activation in zip(self.names, ann_values[:-1]):
            difference = np.abs(result.values[name] - activation)
            self.max[name] = max(self.max[name], float(difference.max()))
            self.sum[name] += float(difference.sum(dtype="float64"))
            self.count[name] += difference.size
            self.ann_max[name] = max(self.ann_max[name], float(np.abs(activation).max()))
        logits = ann_values[-1]
        self.output_max = max(self.output_max, float(np.abs(result.outputs - logits).max()))
        self.logit_max = max(self.logit_max, float(np.abs(logits).max()))
        self.agreeing += int(np.sum(np.argmax(result.outputs, -1) == np.argmax(logits, -1)))
        self.images += len(logits)

    def report(self, snn, timesteps):
        layers = [LayerError(name, snn.ann_layers[name], self.max[name],
                             self.sum[name] / max(self.count[name], 1), self.ann_max[name])
                  for name in self.names]
        return Verification(
            timesteps=timesteps, layers=layers, output_error=self.output_max,
            output_relative_error=self.output_max / max(self.logit_max, 1e-12),
            agreement=self.agreeing / max(self.images, 1))


def _check_pair(ann, snn):
    """A TypeError or ValueError unless `ann` is a Keras ANN and `snn` a SpikingNetwork
    that take the same images and give the same number of classes."""
    if isinstance(ann, SpikingNetwork):
        raise TypeError("verify takes the ANN first, then its SNN: verify(ann, snn, x, "
                        f"timesteps); got the SpikingNetwork '{ann.name}' as ann.")
    if not isinstance(ann, keras.Model):
        raise TypeError(f"ann must be the keras.Model that `snn` was converted from, got "
                        f"{type(ann).__name__}.")
    check_spiking_network(snn, "bsnn_tf.verify")
    ann_io = (tuple(ann.inputs[0].shape[1:]), ann.outputs[0].shape[-1])
    snn_io = (tuple(snn.unit_shapes[snn.encoder.name]), snn.unit_shapes[snn.readout.name][-1])
    if not shape_fits(snn_io[0], ann_io[0]) or ann_io[1] != snn_io[1]:
        raise ValueError(
            f"ann '{ann.name}' does not fit snn '{snn.name}': the ANN takes images of shape "
            f"{ann_io[0]} to {ann_io[1]} classes, the SNN {snn_io[0]} to {snn_io[1]}. Pass "
            "the ANN that the SNN was converted from.")


def _has_layer(model, name):
    return any(layer.name == name for layer in model.layers)


def ends_in_softmax(ann):
    """Whether the output of `ann` is a softmax (a layer, or its last layer's activation)."""
    last = ann.layers[-1]
    return isinstance(last, keras.layers.Softmax) or (
        getattr(getattr(last, "activation", None), "__name__", "") == "softmax")


def logits_tensor(ann):
    """The ANN's output before a final softmax, as a symbolic tensor."""
    if not ends_in_softmax(ann):
        return ann.outputs[0]
    last = ann.layers[-1]
    if isinstance(last, (keras.layers.Softmax, keras.layers.Activation)):
        return last.input
    config = dict(last.get_config(), activation="linear", name=f"{last.name}_logits")
    linear = type(last).from_config(config)
    logits = linear(last.input)
    linear.set_weights(last.get_weights())
    return logits
