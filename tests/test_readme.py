"""The README's Python example runs as written and does what it says."""

import ast
import contextlib
import io
import pathlib
import re

import bsnn_tf

README = pathlib.Path(__file__).parents[1] / "README.md"


def readme_example():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), str(README), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    accuracy = ast.literal_eval(next(line for line in lines if line.startswith("{")))
    assert set(accuracy) == {32, 64} and min(accuracy.values()) >= 0.98
    assert "output (logits) after T=64" in printed.getvalue()
    assert isinstance(namespace["snn"], bsnn_tf.SpikingNetwork)
    assert (tmp_path / "mnist_bsnn.keras").stat().st_size > 10_000
