"""`bsnn_tf.simulation.Simulator`, or, where this checkout's simulation module has none
yet, a stand-in with its interface that calls `bsnn_tf.simulate` on each batch."""

import functools

import numpy as np

from bsnn_tf import simulation
from bsnn_tf.pipeline import partial


class _StandIn:
    """A simulation fed batch by batch (`update(x) -> {T: logits}`, `result()`)."""

    def __init__(self, snn, *, timesteps, mode=None, checkpoints=None, batch_size=None,
                 ann=None, count_spikes=True, distribute=False, keep_outputs=True):
        self.batch_size = batch_size or simulation.default_batch_size(
            snn, count_spikes, timesteps=timesteps, mode=mode)
        self._simulate = functools.partial(
            simulation.simulate, snn, timesteps=timesteps, mode=mode, checkpoints=checkpoints,
            batch_size=self.batch_size, ann=ann, count_spikes=count_spikes,
            distribute=distribute, verbose=0)
        self._keep = keep_outputs or count_spikes
        self._result = None

    def update(self, x):
        if self._keep:
            result = self._simulate(x)
            self._result = partial.combined(self._result, result)
            return result.outputs_at
        # Padded to the compiled batch: one compiled shape for every batch.
        padding = np.zeros((-len(x) % self.batch_size,) + x.shape[1:], x.dtype)
        outputs_at = self._simulate(np.concatenate([x, padding])).outputs_at
        return {t: logits[:len(x)] for t, logits in outputs_at.items()}

    def result(self):
        return self._result


Simulator = getattr(simulation, "Simulator", _StandIn)
