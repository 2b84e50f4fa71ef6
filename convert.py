"""Converts a trained ANN into spiking networks and measures accuracy against time steps.

Writes results.json, accuracy_vs_timesteps.png, snn_<method>.keras and
TensorBoard logs (tensorboard/<method>) to --output_dir; an earlier run's
outputs there are replaced only with --overwrite. With no flags it converts
the embedded MNIST demo checkpoint, offline.

Example:
    python convert.py
    python convert.py --methods bsnn,phase,rate --timesteps 256 --limit 1000
    python convert.py --flagfile=configs/cifar10_resnet20.cfg --data_dir /data
"""

import dataclasses
import shlex
import signal
import sys

from absl import app, flags

from bsnn_tf import coding, data, models, runs
from bsnn_tf.conversion import DEFAULT_PHASES, FineTuning
from bsnn_tf.conversion.calibration import MODES as CALIBRATION_MODES
from bsnn_tf.conversion.finetune import STARTS as FINETUNE_STARTS
from bsnn_tf.methods import METHODS
from bsnn_tf.runs.config import AUTO_HELD_OUT

DEFAULT = runs.RunConfig.default  # the run's settings and defaults are defined there

flags.DEFINE_string("model", DEFAULT("model"), "Zoo model name: " + ", ".join(models.names()) + ".")
flags.DEFINE_string("dataset", DEFAULT("dataset"), "Dataset: " + ", ".join(sorted(data.DATASETS)) + ".")
flags.DEFINE_string("weights", None,
                    "The trained ANN: a .keras checkpoint, or .pth/.safetensors torchvision "
                    "weights for the zoo model (resnet18/34). Default: the committed checkpoint "
                    "(mnist_cnn on mnist, resnet20 on cifar10, trained with train.py); the "
                    "published weights, downloaded once "
                    "into Keras's cache ($KERAS_HOME, else ~/.keras) and hash-checked, for "
                    + ", ".join(models.published.available()) + "; otherwise required.")
flags.DEFINE_boolean("random_weights", DEFAULT("random_weights"),
                     "Convert the zoo model with random weights (smoke tests).")
flags.DEFINE_enum("method", "bsnn", list(METHODS), "Conversion method.")
flags.DEFINE_list("methods", None,
                  "Several methods in one run, on one plot, e.g. bsnn,phase,rate "
                  "(replaces --method).")
flags.DEFINE_string("phases", None, f"K, phases per period (1..{coding.MAX_PHASES}), or auto "
                    "(BSNN): the K and readout T with the lowest lossless latency, searched on "
                    f"{AUTO_HELD_OUT} held-out calibration images drawn on top of "
                    "--calibration_size's default. Default per method: " + ", ".join(
                        f"{m} {k}" for m, k in DEFAULT_PHASES.items()) + ".")
flags.register_validator("phases", lambda value: value is None or value == "auto"
                         or value.lstrip("-").isdigit(),
                         message="--phases takes an integer K (1..24) or auto.")
flags.DEFINE_float("auto_tolerance", DEFAULT("auto_tolerance"),
                   "--phases auto: percentage points of held-out accuracy the BSNN may lose "
                   f"against the ANN, in images: 0.1 pp of the {AUTO_HELD_OUT:,} held out is "
                   "one image (net, at the chosen T); 0.5-1 pp tells the K apart better on "
                   "that many (bsnn_tf/conversion/latency.py).")
flags.DEFINE_integer("timesteps", None,
                     "The largest T simulated. Default: for BSNN the first readout (D + 1) K "
                     f"plus {runs.EXTRA_PERIODS} periods (or the T --phases auto chose, where "
                     "later); for the rate and phase baselines "
                     "per dataset: " + ", ".join(
                         f"{k} {v}" for k, v in runs.BASELINE_TIMESTEPS.items()) + ".")
flags.DEFINE_list("checkpoints", None,
                  "The T at which accuracy is measured (default: for BSNN every period from "
                  f"the first readout for {runs.EVERY_PERIOD_FOR} periods, then powers "
                  "of two; for the baselines powers of two from one period; and --timesteps).")
flags.register_validator("checkpoints", lambda values: all(v.isdigit() for v in values or ()),
                         message="--checkpoints takes positive integers, e.g. 8,16,64.")
flags.DEFINE_enum("calibration", DEFAULT("calibration"), list(CALIBRATION_MODES),
                  "How each layer is fitted to the ANN on the calibration images: percentile "
                  "scale, mse (scale search), light (+ bias correction), advanced (+ weight "
                  "reconstruction), finetune (BSNN: the first readout trained against the ANN "
                  "on thousands of images); docs/DESIGN.md, 'Calibration'.")
flags.DEFINE_float("percentile", DEFAULT("percentile"), "Data-norm percentile of activations (100 = max).")
flags.DEFINE_boolean("channelwise", DEFAULT("channelwise"), "One normalisation statistic per channel.")
flags.DEFINE_boolean("synchronous", DEFAULT("synchronous"),
                     "Synchronous layers on short merge branches (BSNN); off for ablations.")
flags.DEFINE_integer("calibration_size", None,
                     "Images for the calibration, drawn at random (seed 0) from "
                     f"--calibration_split. Default: {runs.CALIBRATION_IMAGES}; "
                     f"{runs.FINETUNE_IMAGES} for --calibration=finetune, which trains "
                     "on them.")
flags.DEFINE_integer("finetune_epochs", None,
                     "Epochs of --calibration=finetune (default: enough for about "
                     f"{FineTuning().image_budget} training images in all).")
flags.DEFINE_boolean("finetune_labels", DEFAULT("finetune_labels"),
                     "--calibration=finetune also learns from the calibration images' labels "
                     "(by default it learns from the ANN alone, which matched the ANN better "
                     "in docs/RESULTS.md).")
flags.DEFINE_enum("finetune_start", DEFAULT("finetune_start"), list(FINETUNE_STARTS),
                  "Where --calibration=finetune's lambdas start: mse (the K-bit scale "
                  "search of --calibration=mse; the better start in docs/RESULTS.md) or "
                  "percentile.")
flags.DEFINE_enum("calibration_split", DEFAULT("calibration_split"), list(runs.CALIBRATION_SPLITS),
                  "Where the calibration images come from: train; test, held out of the "
                  "evaluation (it needs more than --calibration_size test images); auto, train "
                  "if the dataset has it, else test (e.g. ImageNet with only val images).")
flags.DEFINE_integer("limit", None,
                     "Evaluate the first N test images only, counted after any held-out "
                     "calibration images are removed (--calibration_split).")
flags.DEFINE_integer("statistics_images", DEFAULT("statistics_images"),
                     "Spike statistics (firing rates, SIN, synaptic operations, TensorBoard) "
                     "come from a second simulation, which counts spikes on the schedule, of "
                     "the first N evaluated images; 0 takes them all. Accuracy comes from all "
                     "of them.")
flags.DEFINE_integer("batch_size", None,
                     f"Images per batch. Default: {runs.ANN_BATCH} for the ANN; for the "
                     "calibration and the simulation as many as fit their memory budgets.")
flags.DEFINE_string("output_dir", None, "Where the results go (default outputs/<dataset>_<model>).")
flags.DEFINE_string("data_dir", None,
                    f"Dataset directory (default: ${data.DATA_DIR_ENV}, then the demo data).")
flags.DEFINE_boolean("overwrite", DEFAULT("overwrite"),
                     "Replace the outputs of an earlier run in --output_dir (else refused).")
flags.DEFINE_boolean("resume", DEFAULT("resume"),
                     "Continue a stopped run of --output_dir (Ctrl-C, SIGTERM, a killed "
                     "process) from its last finished batch, kept beside it in "
                     ".<name>.partial; the results equal an uninterrupted run's.")
flags.DEFINE_boolean("skip_unreadable", DEFAULT("skip_unreadable"),
                     "Skip test images that cannot be decoded, counting and listing them in "
                     "results.json (by default the first one stops the run, naming its file; "
                     "the batches before it are kept for --resume).")
flags.DEFINE_boolean("distribute", DEFAULT("distribute"),
                     "Data parallel over all local devices: the ANN's evaluation and the "
                     "simulation split every batch over them.")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    checkpoints = FLAGS.checkpoints and tuple(int(t) for t in FLAGS.checkpoints)
    # Every flag named as a RunConfig field sets it; --method/--methods,
    # --checkpoints and --phases (an int or auto) are read apart.
    settings = {field.name: FLAGS[field.name].value for field in
                dataclasses.fields(runs.RunConfig) if field.name in FLAGS}
    settings.update(methods=tuple(FLAGS.methods or [FLAGS.method]), checkpoints=checkpoints,
                    phases=FLAGS.phases if FLAGS.phases in (None, "auto") else int(FLAGS.phases))
    config = runs.RunConfig(**settings)
    # SIGTERM ends a run like Ctrl-C: the staging directory and the lock are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        runs.run(config, command=shlex.join(sys.argv))
    except (runs.ConfigError, data.DatasetNotFoundError, data.CorruptDataError) as error:
        sys.exit(f"convert.py: error: {error}")


if __name__ == "__main__":
    app.run(main)
