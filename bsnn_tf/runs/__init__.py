"""The command-line runs, apart from the library: what `convert.py` and `train.py` do.

This package may import the library (`bsnn_tf` and its modules); no library
module imports it. The names below are `convert.py`'s run: ANN to SNN(s),
accuracy against time steps, and a run directory. It loads the ANN (a .keras
checkpoint, torchvision weights, the model's published weights, downloaded
once into Keras's cache, or random weights), checks that it fits the dataset,
per method calibrates and converts it, then makes one pass over the test
images, a batch at a time (each decoded once): the ANN's accuracy, every
SNN's at the checkpoints (logits only), and the spike statistics on the first
of them; finished batches are kept beside the output directory so that
`resume` continues a stopped run (`runs.partial`). Last, it verifies each SNN
layer by layer on a few images. Everything that can fail on bad input (flags,
weights, data) is checked or loaded before anything is written; the run
directory is written at the end, in full in a staging directory beside it
that then takes its place (`rundir.replace_directory`: an interruption leaves
the earlier run or the new one, whole). It holds `results.json`,
`accuracy_vs_timesteps.png`, `snn_<method>.keras` and TensorBoard logs under
`tensorboard/<method>`. An earlier run's directory is replaced only with
`overwrite` (its other files are kept), and a lock file beside the directory
keeps a second run out.

One concern per module. convert.py's run: `config` (RunConfig and its checks),
`checkpoints` (which ANN), `images` (which images), `timesteps` (which T, and
T*), `stages` (the run, stage by stage), `partial` (the finished batches of a
stopped run), `results` (results.json and the run directory) and `plots` (the
accuracy-vs-T figure). train.py's run: `training` (TrainConfig, the run) and
`recipe` (the compiled model). Both: `checks` (the flags' checks and
`ConfigError`) and `rundir` (a run directory written as one step, under a lock).

Example:
    >>> from bsnn_tf import runs
    >>> config = runs.RunConfig(methods=("bsnn",), phases=4, timesteps=32,
    ...                        limit=100, output_dir="runs/demo")
    >>> results = runs.run(config)
    Converting with method=bsnn on 500 calibration images:
    ...
    ANN accuracy 99.00%
    ...
    >>> results["timesteps"], sorted(results["methods"])   # from the first readout, (2 + 1) 4
    ([12, 16, 20, 24, 28, 32], ['bsnn'])
"""

from bsnn_tf.runs.checkpoints import (BUNDLED_CHECKPOINTS, DEMO_CHECKPOINT, KERAS_SUFFIX,
                                      PRETRAINED_DIR, TORCHVISION_SUFFIXES,
                                      check_convertible, check_fits,
                                      download_published_weights, load_ann)
from bsnn_tf.runs.checks import ConfigError
from bsnn_tf.runs.config import (ANN_BATCH, CALIBRATION_IMAGES, FINETUNE_IMAGES,
                                 STATISTICS_IMAGES, RunConfig, check_run_config)
from bsnn_tf.runs.images import CALIBRATION_SEED, CALIBRATION_SPLITS, Images, load_images
from bsnn_tf.runs.results import (VERIFY_IMAGES, MethodRun, accuracy_table, method_results,
                                  write_run)
from bsnn_tf.runs.stages import convert_method, one_pass, predict, run
from bsnn_tf.runs.timesteps import (BASELINE_TIMESTEPS, EVERY_PERIOD_FOR, EXTRA_PERIODS,
                                    TOLERANCE, converged_at, default_checkpoints,
                                    default_timesteps, measured_timesteps)

__all__ = [
    "ANN_BATCH", "BASELINE_TIMESTEPS", "BUNDLED_CHECKPOINTS", "CALIBRATION_IMAGES",
    "CALIBRATION_SEED", "CALIBRATION_SPLITS", "DEMO_CHECKPOINT", "EVERY_PERIOD_FOR",
    "EXTRA_PERIODS", "FINETUNE_IMAGES", "KERAS_SUFFIX", "PRETRAINED_DIR", "STATISTICS_IMAGES",
    "TOLERANCE", "TORCHVISION_SUFFIXES", "VERIFY_IMAGES", "ConfigError", "RunConfig",
    "Images", "MethodRun", "accuracy_table", "check_convertible", "check_fits",
    "check_run_config",
    "converged_at", "convert_method", "default_checkpoints", "default_timesteps",
    "download_published_weights", "load_ann", "load_images", "measured_timesteps",
    "method_results", "one_pass", "predict", "run", "write_run",
]
