"""Runs a Python script in this process and reports its peak resident memory at exit.

    python benchmarks/peak_rss.py OUT.json convert.py --limit 16 ...

runs `convert.py --limit 16 ...` as `python convert.py ...` would (as
`__main__`, with that argv) and writes {"peak_rss_bytes", "seconds",
"exit_code", "argv"} to OUT.json, also when the script exits with an error.
The peak is the kernel's (`ru_maxrss`): every allocation of the process,
TensorFlow's and XLA's included.
"""

import json
import os
import resource
import runpy
import sys
import time


def main(argv):
    if len(argv) < 3:
        sys.exit("usage: python benchmarks/peak_rss.py OUT.json SCRIPT.py [ARGS...]")
    out, script, args = argv[1], argv[2], argv[3:]
    sys.argv = [script] + args
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    start, code = time.time(), 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
        with open(out, "w") as f:
            json.dump({"peak_rss_bytes": peak, "seconds": round(time.time() - start, 1),
                       "exit_code": code, "argv": [script] + args}, f)
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv)
