"""bsnn_tf: convert Keras ANNs into bistable spiking neural networks and simulate them fast."""

from bsnn_tf.convert import convert
from bsnn_tf.network import SpikingNetwork
from bsnn_tf.simulate import SimulationResult, evaluate, simulate

__version__ = "0.1.0"
