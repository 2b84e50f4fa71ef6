"""Checks shared by the command-line pipelines (`bsnn_tf.pipeline`, `bsnn_tf.training`).

Both refuse a configuration that cannot run before any work starts, with a
`ConfigError` whose message names the flag or file and says what to do.

Example:
    >>> from bsnn_tf.validation import ConfigError, check_writable
    >>> check_writable("outputs/run")   # raises ConfigError if it cannot be created
"""

import os

import keras

from bsnn_tf import backend, data, models


class ConfigError(ValueError):
    """A configuration that cannot run; nothing has been written."""


def check_shared(config, sizes):
    """The checks both pipelines make: the model and dataset are known, each
    field in `sizes` and `config.limit` (if set) are positive, and
    `config.distribute` is possible on this backend."""
    if config.model not in models.names():
        raise ConfigError(
            f"Unknown model {config.model!r}. Known models: {', '.join(models.names())}."
        )
    if config.dataset not in data.DATASETS:
        raise ConfigError(
            f"Unknown dataset {config.dataset!r}. "
            f"Known datasets: {', '.join(sorted(data.DATASETS))}."
        )
    for field in sizes:
        if getattr(config, field) < 1:
            raise ConfigError(f"{field} must be a positive integer, got {getattr(config, field)}.")
    if config.limit is not None and config.limit < 1:
        raise ConfigError(f"limit must be a positive integer, got {config.limit}.")
    if config.distribute and keras.backend.backend() not in backend.DISTRIBUTED_BACKENDS:
        raise ConfigError(
            f"--distribute is not supported on the {keras.backend.backend()} backend "
            f"(only on {' and '.join(backend.DISTRIBUTED_BACKENDS)})."
        )


def check_writable(directory):
    """Checks that `directory` can be created or written, creating nothing."""
    existing = existing_ancestor(directory)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"Output directory {directory!r} is not writable "
            f"({existing} is not a writable directory)."
        )


def existing_ancestor(directory):
    """The nearest folder at or above `directory` that exists."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing
