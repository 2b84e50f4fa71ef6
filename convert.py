"""Converts a trained ANN into spiking networks and measures accuracy against time steps.

Writes results.json, accuracy_vs_timesteps.png, snn_<method>.keras and
TensorBoard logs (tensorboard/<method>) to --output_dir. With no flags it
converts the embedded MNIST demo checkpoint, offline.

Example:
    python convert.py
    python convert.py --methods bsnn,phase,rate --timesteps 256 --limit 1000
    python convert.py --flagfile=configs/cifar10_resnet20.cfg --data_dir /data
"""

import shlex
import sys

from absl import app, flags

from bsnn_tf import cli, coding, data, models
from bsnn_tf.conversion import DEFAULT_PHASES
from bsnn_tf.network import METHODS

flags.DEFINE_string("model", "mnist_cnn", "Zoo model name: " + ", ".join(models.names()) + ".")
flags.DEFINE_string("dataset", "mnist", "Dataset: " + ", ".join(sorted(data.DATASETS)) + ".")
flags.DEFINE_string("weights", None,
                    "The trained ANN: a .keras checkpoint, or .pth/.safetensors torchvision "
                    "weights for the zoo model (resnet18/34). Default for mnist_cnn on mnist: "
                    "the embedded demo checkpoint; otherwise required.")
flags.DEFINE_boolean("random_weights", False,
                     "Convert the zoo model with random weights (smoke tests).")
flags.DEFINE_enum("method", "bsnn", METHODS, "Conversion method.")
flags.DEFINE_list("methods", None,
                  "Several methods in one run, on one plot, e.g. bsnn,phase,rate "
                  "(replaces --method).")
flags.DEFINE_integer("phases", None, f"K, phases per period (1..{coding.MAX_PHASES}); "
                     "default per method: " + ", ".join(
                         f"{m} {k}" for m, k in DEFAULT_PHASES.items()) + ".")
flags.DEFINE_integer("timesteps", None, "The largest T simulated (default per dataset: "
                     + ", ".join(f"{k} {v}" for k, v in cli.DEFAULT_TIMESTEPS.items()) + ").")
flags.DEFINE_list("checkpoints", None,
                  "The T at which accuracy is measured (default: powers of two from one "
                  "period up to --timesteps, plus --timesteps).")
flags.register_validator("checkpoints", lambda values: all(v.isdigit() for v in values or ()),
                         message="--checkpoints takes positive integers, e.g. 8,16,64.")
flags.DEFINE_float("percentile", 99.99, "Data-norm percentile of activations (100 = max).")
flags.DEFINE_boolean("channelwise", False, "One normalisation statistic per channel.")
flags.DEFINE_boolean("synchronous", True,
                     "Synchronous layers on short merge branches (BSNN); off for ablations.")
flags.DEFINE_integer("calibration_size", 500, "Training images for the calibration.")
flags.DEFINE_integer("limit", None, "Simulate the first N test images only.")
flags.DEFINE_integer("batch_size", 128, "Images per batch.")
flags.DEFINE_string("output_dir", None, "Where the results go (default outputs/<dataset>_<model>).")
flags.DEFINE_string("data_dir", None,
                    f"Dataset directory (default: ${data.DATA_DIR_ENV}, then the demo data).")
flags.DEFINE_boolean("distribute", False,
                     "Data parallel over all local devices: the ANN's evaluation and the "
                     "simulation split every batch over them.")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    checkpoints = FLAGS.checkpoints and tuple(int(t) for t in FLAGS.checkpoints)
    config = cli.ConvertConfig(
        model=FLAGS.model, dataset=FLAGS.dataset, weights=FLAGS.weights,
        random_weights=FLAGS.random_weights, methods=tuple(FLAGS.methods or [FLAGS.method]),
        phases=FLAGS.phases, timesteps=FLAGS.timesteps, checkpoints=checkpoints,
        percentile=FLAGS.percentile, channelwise=FLAGS.channelwise,
        synchronous=FLAGS.synchronous, calibration_size=FLAGS.calibration_size,
        limit=FLAGS.limit, batch_size=FLAGS.batch_size, output_dir=FLAGS.output_dir,
        data_dir=FLAGS.data_dir, distribute=FLAGS.distribute,
    )
    try:
        cli.run(config, command=shlex.join(sys.argv))
    except (cli.ConfigError, data.DatasetNotFoundError, data.CorruptDataError) as error:
        sys.exit(f"convert.py: error: {error}")


if __name__ == "__main__":
    app.run(main)
