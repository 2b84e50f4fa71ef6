"""Trains a zoo ANN for conversion (the recipe of paper section 4.2).

The run is written beside --output_dir and swapped in whole; an earlier run
there is replaced only with --overwrite.

Example:
    python train.py --flagfile=configs/train/cifar10_resnet20.cfg --data_dir /data
    python train.py --model mnist_cnn --dataset mnist --epochs 1 --output_dir runs/mnist
"""

import shlex
import signal
import sys

from absl import app, flags

from bsnn_tf import data
from bsnn_tf.runs import training

flags.DEFINE_string("model", None, "Zoo model name (bsnn_tf.models.names()). With --weights, "
                    "optional: if given, the checkpoint must be that zoo model.")
flags.DEFINE_string("dataset", None, "Dataset: " + ", ".join(sorted(data.DATASETS)) + ".")
flags.DEFINE_integer("epochs", None, "Training epochs (default per dataset: "
                     + ", ".join(f"{k} {v}" for k, v in training.DEFAULT_EPOCHS.items()) + ").")
flags.DEFINE_integer("batch_size", 128, "Batch size (global, over all devices).")
flags.DEFINE_float("lr", 0.1, "Initial learning rate of the cosine decay.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay on kernels (PyTorch SGD convention).")
flags.DEFINE_string("output_dir", None, "Where model.keras, results.json and logs/ go.")
flags.DEFINE_string("data_dir", None,
                    f"Dataset directory (default: ${data.DATA_DIR_ENV}, then the demo data).")
flags.DEFINE_integer("limit", None, "Train on the first N training images only.")
flags.DEFINE_boolean("augment", True, "Training augmentation (never applied to MNIST).")
flags.DEFINE_boolean("rand_augment", True, "Add RandAugment to the augmentation (CIFAR, "
                     "ImageNet; TensorFlow backend). About 4 ms an image on a CPU.")
flags.DEFINE_boolean("cutout", True, "Cutout in the augmentation (short schedules: --nocutout).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear learning-rate warm-up from 0 to --lr over "
                   "these epochs, before the cosine decay.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy.")
flags.DEFINE_enum("precision", "float32", training.PRECISIONS,
                  "mixed_bfloat16 computes in bfloat16 with float32 weights (fast on CPUs "
                  "with AVX512_BF16); the saved model is float32.")
flags.DEFINE_boolean("distribute", False, "Data parallel over all local devices.")
flags.DEFINE_string("weights", None, "Start from this .keras checkpoint (fine-tuning) "
                    "instead of random weights.")
flags.DEFINE_integer("snn_phases", None,
                     "Train with the BSNN's quantiser in the loop: every ReLU outputs K bits "
                     "of a learned threshold, as a BIF layer does at the first readout; the "
                     "BSNN converted with --phases K is then the trained model at its first "
                     "readout.")
flags.DEFINE_boolean("overwrite", False,
                     "Replace an earlier run in --output_dir (its model.keras, results.json "
                     "and logs/; other files are kept); else it is refused.")
flags.mark_flags_as_required(["dataset", "output_dir"])

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = training.TrainConfig(
        model=FLAGS.model, dataset=FLAGS.dataset, output_dir=FLAGS.output_dir,
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.lr,
        momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay,
        data_dir=FLAGS.data_dir, limit=FLAGS.limit, augment=FLAGS.augment,
        rand_augment=FLAGS.rand_augment, cutout=FLAGS.cutout,
        seed=FLAGS.seed, distribute=FLAGS.distribute, warmup_epochs=FLAGS.warmup_epochs,
        label_smoothing=FLAGS.label_smoothing, precision=FLAGS.precision,
        weights=FLAGS.weights, snn_phases=FLAGS.snn_phases, overwrite=FLAGS.overwrite,
    )
    # SIGTERM ends a run like Ctrl-C: the staging directory and the lock are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results = training.train(config, command=shlex.join(sys.argv))
    except (training.ConfigError, training.DivergedError, data.DatasetNotFoundError,
            data.CorruptDataError) as error:
        sys.exit(f"train.py: error: {error}")
    print(f"test accuracy {results['test_accuracy']:.4f}; wrote {FLAGS.output_dir}")


if __name__ == "__main__":
    app.run(main)
