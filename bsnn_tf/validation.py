"""Checks shared by the command-line pipelines (`bsnn_tf.cli`, `bsnn_tf.training`).

Both refuse a configuration that cannot run before any work starts, with a
`ConfigError` whose message names the flag or file and says what to do.

Example:
    >>> from bsnn_tf.validation import ConfigError, check_writable
    >>> check_writable("outputs/run")   # raises ConfigError if it cannot be created
"""

import os


class ConfigError(ValueError):
    """A configuration that cannot run; nothing has been written."""


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
