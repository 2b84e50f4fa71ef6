"""A run directory: written in full beside it, then swapped in as one step, under a lock.

`convert.py` writes `results.json`, `accuracy_vs_timesteps.png`,
`snn_<method>.keras` and `tensorboard/` (`RUN_OUTPUTS`) into its output
directory; `train.py` writes `model.keras`, `results.json` and `logs/`
(`TRAIN.outputs`). `replace_directory` writes them into a staging directory
beside it that then takes its place, so an interruption leaves the earlier
run or the new one, whole; an earlier run is replaced only with `overwrite`
(its other files are kept). `run_lock` keeps a second run out meanwhile, and
removes the staging directories that dead runs (a SIGKILL) left beside it; a
live run's are kept (each run holds a lock on its own).

Example:
    >>> from bsnn_tf.runs import rundir
    >>> def write(directory):
    ...     with open(os.path.join(directory, "results.json"), "w") as f:
    ...         f.write("{}")
    >>> rundir.replace_directory("runs/example", write)
    >>> [os.path.basename(p) for p in rundir.run_outputs("runs/example")]
    ['results.json']
"""

import contextlib
import dataclasses
import fcntl
import glob
import os
import re
import shutil
import signal
import tempfile
import threading
import uuid

from bsnn_tf.runs.checks import ConfigError

# What a convert.py run writes into its output directory.
RUN_OUTPUTS = ("results.json", "accuracy_vs_timesteps.png", "snn_*.keras", "tensorboard")


@dataclasses.dataclass(frozen=True)
class Script:
    """A command-line run that writes an output directory: its name and its outputs."""

    name: str
    outputs: tuple

    @property
    def staging_prefix(self):
        """The names of its staging directories start so: `.convert-`, `.train-`."""
        return f".{os.path.splitext(self.name)[0]}-"


CONVERT = Script("convert.py", RUN_OUTPUTS)
TRAIN = Script("train.py", ("model.keras", "results.json", "logs"))
SCRIPTS = (CONVERT, TRAIN)
# A staging directory's name: its prefix and 12 hex digits (`_new_directory_beside`), and
# "-old" for an earlier run's copy (`_swap`); nothing else beside a run is removed.
_STAGING_NAME = re.compile("(" + "|".join(re.escape(s.staging_prefix) for s in SCRIPTS)
                           + r")[0-9a-f]{12}(-old)?")


def run_outputs(output_dir, script=CONVERT):
    """The paths in `output_dir` that a run of `script` writes (`script.outputs`), sorted."""
    return sorted(path for pattern in script.outputs
                  for path in glob.glob(os.path.join(glob.escape(output_dir), pattern)))


def check_no_earlier_run(output_dir, overwrite, script=CONVERT):
    """Raises `ConfigError` where `output_dir` holds an earlier run of `script` and
    `overwrite` is False."""
    earlier = run_outputs(output_dir, script)
    if earlier and not overwrite:
        raise ConfigError(
            f"Output directory {output_dir!r} holds an earlier run "
            f"({', '.join(os.path.basename(p) for p in earlier)}); pass --overwrite to replace "
            "it, or choose another --output_dir."
        )


@contextlib.contextmanager
def run_lock(output_dir, script=CONVERT):
    """Holds `<output_dir>.lock` (beside it) while a run writes `output_dir`; first
    removes the staging directories of dead runs beside it (`remove_stale_staging`).

    Raises:
        ConfigError: another run holds it.
    """
    path = os.path.abspath(output_dir) + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(lock.fileno()).st_ino != os.stat(path).st_ino:
                raise BlockingIOError  # the holder removed it after we opened it
        except (BlockingIOError, FileNotFoundError) as error:
            raise ConfigError(
                f"Another {script.name} run is writing {output_dir!r} (it holds {path}); wait "
                "for it to finish, or choose another --output_dir."
            ) from error
        try:
            remove_stale_staging(os.path.dirname(os.path.realpath(output_dir)))
            yield
        finally:
            os.remove(path)


def remove_stale_staging(parent):
    """Removes the staging directories in `parent` that no live run holds: those a
    killed run (SIGKILL, power loss) left, and earlier runs' `-old` copies left by an
    interrupted removal. A live run holds a lock on its staging directory."""
    names = [name for name in _listdir(parent) if _STAGING_NAME.fullmatch(name)]
    for name in sorted(names, key=lambda n: n.endswith("-old")):  # staging first
        path = os.path.join(parent, name)
        if name.endswith("-old"):
            if not os.path.exists(path[:-len("-old")]):  # its swap is over
                shutil.rmtree(path, ignore_errors=True)
            continue
        with contextlib.suppress(BlockingIOError, OSError), _held(path):
            shutil.rmtree(path, ignore_errors=True)


def _listdir(directory):
    try:
        return os.listdir(directory)
    except OSError:
        return []


@contextlib.contextmanager
def _held(directory):
    """Holds the lock of `directory` (BlockingIOError while a live run holds it)."""
    handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(handle)


def replace_directory(output_dir, write, overwrite=False, script=CONVERT):
    """Makes `output_dir` hold what `write(directory)` writes, as one step.

    1. `write` fills a new staging directory beside `output_dir` (same file
       system), `.convert-<random>` (`script.staging_prefix`), locked while
       this run lives.
    2. With `overwrite`, every file in `output_dir` that is not an output of
       `script` is hard-linked (copied where links fail) into it, so it
       survives; `output_dir` itself is not touched.
    3. Two renames swap the directories (`output_dir` -> `<staging>-old`,
       staging -> `output_dir`) with SIGINT and SIGTERM held back until both
       are done; if the second fails, the first is undone.
    4. The old directory is removed.

    Returns what `write` returns.

    An interruption or error before step 3 ends leaves `output_dir` as it
    was (the staging directory is removed); after it, the new run is whole
    in place.

    Raises:
        ConfigError: `output_dir` holds an earlier run and `overwrite` is False.
    """
    target = os.path.realpath(output_dir)  # a symlinked output_dir: replace what it points to
    with _new_directory_beside(target, script.staging_prefix) as staging:
        written = write(staging)
        if not os.path.isdir(target):
            os.rename(staging, target)
            return written
        if not overwrite and run_outputs(target, script):
            raise ConfigError(f"Output directory {output_dir!r} got an earlier run's outputs "
                              "meanwhile; pass --overwrite to replace them.")
        _keep_other_files(target, staging, script)
        shutil.copymode(target, staging)
        _swap(staging, target)
        return written


@contextlib.contextmanager
def _new_directory_beside(path, prefix):
    """A new empty directory `<prefix><random>` in the folder of `path` (created if
    missing), locked (`remove_stale_staging` keeps it) until the block ends, then removed."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    directory = os.path.join(parent, f"{prefix}{uuid.uuid4().hex[:12]}")
    os.mkdir(directory)
    try:
        with _held(directory):
            yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _keep_other_files(output_dir, staging, script):
    """Hard-links (else copies) each entry of `output_dir` that is not an output of
    `script` into `staging`; directories are recreated, symlinks kept as links."""
    outputs = set(run_outputs(output_dir, script))
    for name in os.listdir(output_dir):
        source, copy = os.path.join(output_dir, name), os.path.join(staging, name)
        if source in outputs:
            continue
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, copy, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, copy)


def _link_or_copy(source, copy):
    try:
        os.link(source, copy, follow_symlinks=False)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, copy, follow_symlinks=False)


def _swap(staging, output_dir):
    """Renames `output_dir` aside and `staging` into its place, then removes the old one."""
    old, swapped = staging + "-old", False
    try:
        with _signals_held_back():
            os.rename(output_dir, old)
            try:
                os.rename(staging, output_dir)
            except BaseException:
                os.rename(old, output_dir)
                raise
            swapped = True
    finally:
        if swapped:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _signals_held_back(signals=(signal.SIGINT, signal.SIGTERM)):
    """Runs the block with `signals` recorded instead of handled, then raises the first
    one received under its own handler. Only the main thread can set handlers; in
    another thread the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {number: signal.getsignal(number) for number in signals}
    for number in signals:
        signal.signal(number, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        if received:  # a Python handler runs here, synchronously (Ctrl-C raises now)
            handler = signal.getsignal(received[0])
            if callable(handler):
                handler(received[0], None)
            else:
                signal.raise_signal(received[0])


def partial_directory(output_dir):
    """Where an unfinished run of `output_dir` keeps its finished batches for `--resume`:
    `.<name>.partial` beside it (hidden, and outside it: never a finished run's files).

    Example:
        >>> os.path.basename(partial_directory("runs/example"))
        '.example.partial'
    """
    target = os.path.realpath(output_dir)
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.partial")


def write_atomically(path, write):
    """Makes `path` hold what `write(temporary path)` writes there, as one step: a hidden
    temporary file beside `path` with its suffix (so `model.save` and `np.savez` take it),
    flushed to disk, then renamed over `path` (a crash leaves the old file or the new).

    A failure or an interruption while writing leaves any earlier `path` as it was and
    removes the temporary file (a SIGTERM too where it is turned into KeyboardInterrupt,
    as train.py does; a SIGKILL cannot be cleaned up).

    Example:
        >>> write_atomically("model.keras", model.save)
    """
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}-",
                                         suffix=os.path.splitext(name)[1])
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
