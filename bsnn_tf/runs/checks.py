"""The checks of the command-line runs (convert.py's pipeline, train.py's training).

A configuration that cannot run is refused with a `ConfigError` that names
the flag or file and what to do, before anything is read or written: the
model and dataset exist, sizes are positive, --distribute is possible here,
the output directory can be written. The library's own checks are in
`bsnn_tf.validation`.

Example:
    >>> from bsnn_tf.runs.checks import check_writable
    >>> check_writable("outputs/run")   # raises ConfigError if it cannot be created
"""

import os
import shutil
import tempfile

import keras

from bsnn_tf import backend, data, models


class ConfigError(ValueError):
    """A configuration that cannot run; nothing has been written."""


def check_shared(config, sizes):
    """The checks both pipelines make: the model (or a checkpoint) and dataset are known, each
    field in `sizes` and `config.limit` (if set) are positive, and
    `config.distribute` is possible on this backend."""
    if config.model is None and config.weights is None:
        raise ConfigError(f"Give --model NAME (a zoo model: {', '.join(models.names())}) or "
                          "--weights FILE (a .keras checkpoint to start from).")
    if config.model is not None and config.model not in models.names():
        raise ConfigError(
            f"Unknown model {config.model!r}. Known models: {', '.join(models.names())}."
        )
    if config.dataset not in data.DATASETS:
        raise ConfigError(
            f"Unknown dataset {config.dataset!r}. "
            f"Known datasets: {', '.join(sorted(data.DATASETS))}."
        )
    for field in sizes:
        if getattr(config, field) is not None and getattr(config, field) < 1:
            raise ConfigError(f"{field} must be a positive integer, got {getattr(config, field)}.")
    if config.limit is not None and config.limit < 1:
        raise ConfigError(f"limit must be a positive integer, got {config.limit}.")
    if config.distribute and keras.backend.backend() not in backend.DISTRIBUTED_BACKENDS:
        raise ConfigError(
            f"--distribute is not supported on the {keras.backend.backend()} backend "
            f"(only on {' and '.join(backend.DISTRIBUTED_BACKENDS)})."
        )


def check_writable(directory):
    """Checks that `directory` can be created or written, leaving nothing behind.

    A folder is created in the nearest existing folder at or above
    `directory` and removed again: `os.access` says yes to root even where
    the file system refuses (/proc, /sys, a read-only mount).
    """
    existing = existing_ancestor(directory)
    if not os.path.isdir(existing):
        raise ConfigError(f"Output directory {directory!r} is not writable ({existing} is "
                          "a file, not a directory); choose another --output_dir.")
    try:
        probe = tempfile.mkdtemp(dir=existing, prefix=".bsnn-write-test-")
    except OSError as error:
        raise ConfigError(
            f"Output directory {directory!r} is not writable ({existing} is not a writable "
            f"directory: {error.strerror or error}); choose another --output_dir."
        ) from error
    shutil.rmtree(probe, ignore_errors=True)


def existing_ancestor(directory):
    """The nearest folder at or above `directory` that exists."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing
