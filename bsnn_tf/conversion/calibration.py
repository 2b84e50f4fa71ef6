"""The calibration modes: how each spiking layer is fitted to the ANN (`convert(calibration=...)`).

A converted network's output is that of the ANN with every ReLU replaced by
the neurons' *mean output* (`SpikingNeuron.mean_output`): for BSNN at its
first readout exactly the K-bit quantised activation, for the baselines an
approximation at a target T. Calibration is therefore post-training
activation quantisation (docs/DESIGN.md, "Calibration"), in these modes:

- "percentile": lambda is the p-th percentile of the layer's activations
  (the data-norm of Rueckauer et al. 2017).
- "mse": lambda minimises the quantisation error of the activations,
  sum (lambda * f(a / lambda) - a)**2 on a sample of the images
  (SEARCH_IMAGES), over grids that contain the percentile, so on that sample
  it is never worse than "percentile".
- "light": "mse", then bias correction (SNN Calibration, Li et al. 2021):
  layer by layer, each pre-activation's mean error against the ANN, per
  channel, is added to its bias, so it is zero on the calibration data.
- "advanced": "light", with weight reconstruction before each bias
  correction: the weights between a layer and the spiking layers it reads
  take a bounded number of Adam steps on the error of its quantised output
  (straight-through rounding) against the ANN.

The scales come from the ANN's activations (`statistics.py`) by `scale_search.py`;
bias and weights are corrected on the normalised graph (`correction.py`), with
the network quantised as the neurons will be; "finetune" is `finetune.py`.
"""

MODES = ("percentile", "mse", "light", "advanced", "finetune")
# The modes that search each layer's scale for the smallest quantisation error; the
# others keep the percentile ("finetune" trains the scales from `FineTuning.start`'s).
SEARCHING_MODES = ("mse", "light", "advanced")
# `convert`'s default, chosen by the calibration study in docs/RESULTS.md.
DEFAULT_CALIBRATION = "percentile"


def check_calibration_mode(mode):
    """`mode` if it is one of MODES, else a ValueError listing them."""
    if mode not in MODES:
        raise ValueError(f"calibration must be one of {', '.join(map(repr, MODES))}; "
                         f"got {mode!r}.")
    return mode
