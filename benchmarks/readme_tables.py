"""README.md's demo table, written from a recorded run of the demo (issue 24).

`python convert.py` (the embedded MNIST demo, every default) prints an accuracy
table; README.md quotes it. This script keeps the quote true: `--run` runs the
demo and records its results.json as benchmarks/results/demo.json; then the
README block after DEMO_MARKER is rewritten from that record with the table
convert.py prints (`pipeline.accuracy_table`). tests/test_readme.py fails when
the README and the record disagree.

Usage (from the repository root):
    python benchmarks/readme_tables.py --run    # run the demo (about 2 minutes), then write
    python benchmarks/readme_tables.py          # rewrite README.md from the record
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import common

from bsnn_tf import pipeline

README = common.ROOT / "README.md"
DEMO_RESULTS = common.RESULTS_DIR / "demo.json"
DEMO_MARKER = "<!-- demo table: benchmarks/readme_tables.py from benchmarks/results/demo.json -->"


def run_demo():
    """Runs `python convert.py` with its defaults; records its results.json."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "convert.py", f"--output_dir={scratch}/demo"],
                       cwd=common.ROOT, check=True)
        results = json.loads(open(os.path.join(scratch, "demo", "results.json")).read())
    common.write_atomically(DEMO_RESULTS, json.dumps(results, indent=1) + "\n")


def with_demo_table(readme, results):
    """`readme` with the fenced block after DEMO_MARKER replaced by the demo's table."""
    head, marker, tail = readme.partition(DEMO_MARKER)
    if not marker:
        sys.exit(f"README.md has no line {DEMO_MARKER!r}")
    opening = tail.index("```")
    body_start = tail.index("\n", opening) + 1
    body_end = tail.index("```", body_start)
    table = pipeline.accuracy_table(results)
    return head + marker + tail[:body_start] + table + "\n" + tail[body_end:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the demo first")
    args = parser.parse_args()
    if args.run:
        run_demo()
    results = json.loads(DEMO_RESULTS.read_text())
    common.write_atomically(README, with_demo_table(README.read_text(), results))
    print(f"Wrote the demo table of {README} from {DEMO_RESULTS}")


if __name__ == "__main__":
    main()
