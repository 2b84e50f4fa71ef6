"""README.md quotes measured results only as recorded: its demo table is the one
convert.py prints for the recorded demo run (benchmarks/readme_tables.py writes
both)."""

import json
import pathlib

from bsnn_tf import data, pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_RESULTS = REPO / "benchmarks" / "results" / "demo.json"
DEMO_MARKER = "<!-- demo table: benchmarks/readme_tables.py from benchmarks/results/demo.json -->"


def quoted_block(text, marker):
    """The fenced block that follows `marker` in `text`."""
    after = text.split(marker, 1)[1]
    body = after.split("```", 2)[1]
    return body.split("\n", 1)[1].rstrip("\n")


def test_readme_demo_table_is_the_recorded_demo_run():
    results = json.loads(DEMO_RESULTS.read_text())
    # The record is a run of the demo with its defaults: the embedded MNIST test set.
    program, *flags = results["command"].split()
    assert program == "convert.py" and all(f.startswith("--output_dir=") for f in flags)
    assert results["dataset"] == "mnist" and results["test_images"] == len(
        data.load("mnist", "test", data.DEMO_DIR)[1])
    readme = (REPO / "README.md").read_text()
    assert quoted_block(readme, DEMO_MARKER) == pipeline.accuracy_table(results)
