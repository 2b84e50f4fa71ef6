"""README.md and docs/RESULTS.md quote measured results only as recorded: every table
benchmarks/doc_tables.py generates reads, between its markers, as its record in
benchmarks/results says (the demo's is the table convert.py prints for the recorded run)."""

import importlib.util
import json
import pathlib
import sys

import pytest

from bsnn_tf import data, runs

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="module")
def doc_tables():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("doc_tables", BENCHMARKS / "doc_tables.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_generated_table_reads_as_its_record(doc_tables):
    assert {"demo", "finetune", "calibration", "calibrated rate", "memory", "peer compare",
            "sim speed"} <= set(doc_tables.TABLES)
    for name, table in doc_tables.TABLES.items():
        quoted = doc_tables.quoted(table.document.read_text(), name)
        assert quoted == doc_tables.table_text(name), f"{name} in {table.document.name}"


def test_the_readme_demo_table_is_what_convert_py_printed_for_the_recorded_run(doc_tables):
    results = json.loads((BENCHMARKS / "results" / "demo.json").read_text())
    # The record is a run of the demo with its defaults: the embedded MNIST test set.
    program, *flags = results["command"].split()
    assert program == "convert.py" and all(f.startswith("--output_dir=") for f in flags)
    assert results["dataset"] == "mnist" and results["test_images"] == len(
        data.load("mnist", "test", data.DEMO_DIR)[1])
    readme = (REPO / "README.md").read_text()
    assert doc_tables.quoted(readme, "demo") == f"```\n{runs.accuracy_table(results)}\n```"


def test_a_table_edited_by_hand_is_caught(doc_tables):
    name, table = "finetune", doc_tables.TABLES["finetune"]
    text = table.document.read_text()
    quoted = doc_tables.quoted(text, name)
    edited = text.replace(quoted, quoted.replace("| 90.89 |", "| 90.99 |", 1))
    assert doc_tables.quoted(edited, name) != doc_tables.table_text(name)
    assert doc_tables.quoted(doc_tables.with_table(edited, name), name) == \
        doc_tables.table_text(name)
