"""What a run prints: progress a user can trust, and no TensorFlow start-up noise.

`Progress` is Keras's progress bar on a terminal; where the output is not a
terminal (a log file, CI, `nohup`, `| tee`) it prints plain lines instead,
with no ANSI escapes or carriage returns: what is done, out of how many, the
time so far and an estimate of the time left, every `PLAIN_EVERY` seconds
and at the end.

TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA, CPU features) to
the process's standard error from C++ at import, whatever
TF_CPP_MIN_LOG_LEVEL says. `quiet_start` hides them where they are not
wanted: in `convert.py` and `train.py` unless `--verbosity` >= 1, and
wherever TF_CPP_MIN_LOG_LEVEL asks TensorFlow for warnings or less (>= 2).
This module imports nothing heavy, so `bsnn_tf/__init__.py` can use it
before anything imports TensorFlow.

Example:
    >>> progress = Progress(300, "Simulating", unit="image", plain=True, every=0, say=print)
    >>> progress.update(100)  # doctest: +ELLIPSIS
    Simulating: 100/300 images (33%), 0:00 so far, about 0:00 left
    >>> progress.update(300)  # doctest: +ELLIPSIS
    Simulating: 300/300 images (100%) in 0:00
"""

import contextlib
import logging
import os
import sys
import time

# Plain progress lines (not a terminal) come at most this often, in seconds.
PLAIN_EVERY = 30.0
# The command-line scripts of the package: their --verbosity decides whether TensorFlow talks.
SCRIPTS = ("convert.py", "train.py")


def command_line_verbosity(argv):
    """The value of --verbosity (or -v) in `argv`, 0 when absent or not a number."""
    verbosity = 0
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if name in ("--verbosity", "-v"):
            value = value if equals else (argv[index + 1:] or [""])[0]
            verbosity = int(value) if value.lstrip("-").isdigit() else verbosity
    return verbosity


def _running_a_script():
    return bool(sys.argv) and os.path.basename(sys.argv[0]) in SCRIPTS


def wants_quiet():
    """Whether TensorFlow's start-up lines and retracing warnings are hidden: in a
    command-line script without --verbosity >= 1, or with TF_CPP_MIN_LOG_LEVEL >= 2."""
    if _running_a_script():
        quiet = command_line_verbosity(sys.argv) < 1
        if quiet:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        return quiet
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    return level.isdigit() and int(level) >= 2


@contextlib.contextmanager
def quiet_start():
    """Runs the block (the first import of TensorFlow) with the process's standard error
    sent to /dev/null when `wants_quiet()`; Python exceptions still propagate."""
    if not wants_quiet():
        yield
        return
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    # tensorflow-datasets logs through absl, whose level absl.app resets from --verbosity.
    logging.getLogger("absl").addFilter(_errors_only)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _errors_only(record):
    return record.levelno >= logging.ERROR


def is_terminal(stream=None):
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


class Progress:
    """Progress over `total` items of one stage.

    Args:
        total: how many items the stage has; None where a stream does not say
            (the lines then count items and time, and `finish` ends them).
        stage: what the stage does ("Simulating bsnn", ...), the start of each plain line.
        unit: what an item is ("image", "batch", "layer").
        verbose: 0 prints nothing; 1 or "auto" prints.
        plain: plain lines (default: when standard output is not a terminal).
        every: seconds between plain lines (the last one is always printed).
        say: what writes a plain line (default: print, or the log where Keras's
            interactive logging is off, as for Keras's own progress).
    """

    def __init__(self, total, stage, unit="image", verbose="auto", plain=None, every=None,
                 say=None):
        self.total = None if total is None else int(total)
        self.stage, self.unit = stage, unit
        self.silent = verbose == 0
        self.plain = not is_terminal() if plain is None else plain
        self.every = PLAIN_EVERY if every is None else every
        self.start = self.last = time.time()
        self.done = 0
        self.say = say or _say
        self.bar = None
        if not (self.silent or self.plain):
            import keras  # imported here: this module must not import TensorFlow itself

            self.bar = keras.utils.Progbar(self.total, unit_name=unit)

    def update(self, done):
        """`done` items of `total` are done."""
        self.done = done
        if self.silent:
            return
        if self.bar is not None:
            self.bar.update(done)
            return
        now = time.time()
        if self.total is None:
            if now - self.last >= self.every and done:
                self.say(f"{self.stage}: {done} {self.unit}s, {_clock(now - self.start)} so far")
                self.last = now
            return
        if done >= self.total:
            self.say(f"{self.stage}: {done}/{self.total} {self.unit}s (100%) in "
                     f"{_clock(now - self.start)}")
        elif now - self.last >= self.every and done:
            elapsed = now - self.start
            left = elapsed / done * (self.total - done)
            self.say(f"{self.stage}: {done}/{self.total} {self.unit}s "
                     f"({100 * done // self.total}%), {_clock(elapsed)} so far, about "
                     f"{_clock(left)} left")
            self.last = now

    def add(self, count=1):
        self.update(self.done + count)

    def finish(self):
        """Ends a stage whose total was not known beforehand (no-op otherwise)."""
        if self.total is not None or self.silent:
            return
        if self.bar is not None:
            self.bar.update(self.done, finalize=True)
        else:
            self.say(f"{self.stage}: {self.done} {self.unit}s in "
                     f"{_clock(time.time() - self.start)}")


def _say(line):
    """Prints `line`; to the log instead where Keras's interactive logging is off
    (`keras.config.disable_interactive_logging`), as Keras's own progress does."""
    import keras

    if keras.config.is_interactive_logging_enabled():
        print(line, flush=True)
    else:
        logging.getLogger("bsnn_tf").info(line)


def _clock(seconds):
    """H:MM:SS or M:SS."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
