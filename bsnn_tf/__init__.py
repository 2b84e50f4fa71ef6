"""bsnn_tf: convert Keras ANNs into bistable spiking neural networks and simulate them fast.

Example:
    >>> import bsnn_tf
    >>> snn = bsnn_tf.convert(ann, x_train[:500], method="bsnn", phases=4)
    >>> accuracy = bsnn_tf.evaluate(snn, x_test, y_test, timesteps=[64, 128, 256])
    >>> accuracy[256] >= 0.9     # the demo CNN on its embedded test images
    True
"""

from bsnn_tf import console

with console.quiet_start():  # the first import of Keras imports TensorFlow (the CPU backend)
    import keras  # noqa: F401

from bsnn_tf import layers, metrics, models  # noqa: E402
from bsnn_tf.conversion import DEFAULT_PHASES, convert  # noqa: E402
from bsnn_tf.network import SpikingNetwork  # noqa: E402
from bsnn_tf.result import SimulationResult  # noqa: E402
from bsnn_tf.simulation import evaluate, simulate  # noqa: E402
from bsnn_tf.simulator import Simulator  # noqa: E402
from bsnn_tf.verification import Verification, verify  # noqa: E402
# Registers every Keras object the library saves (train.py's loss among them), so that
# keras.models.load_model reads any saved model once bsnn_tf is imported.
from bsnn_tf import losses  # noqa: E402, F401

__version__ = "0.1.0"

__all__ = ["convert", "DEFAULT_PHASES", "simulate", "evaluate", "verify", "SpikingNetwork",
           "SimulationResult", "Simulator", "Verification", "metrics", "models"]
