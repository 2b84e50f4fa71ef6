"""docs/API.md is what docs/make_api.py writes from the docstrings: a changed signature or
docstring fails here until `python docs/make_api.py` rewrites the page."""

import importlib.util
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _make_api():
    spec = importlib.util.spec_from_file_location("make_api", REPO / "docs" / "make_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_page_is_generated_from_the_current_docstrings():
    make_api = _make_api()
    assert (REPO / "docs" / "API.md").read_text() == make_api.generate(), (
        "docs/API.md is stale: run `python docs/make_api.py` and commit docs/API.md")


def test_the_api_page_lists_every_public_name_and_no_address_or_path():
    import bsnn_tf

    text = (REPO / "docs" / "API.md").read_text()
    for name in bsnn_tf.__all__:
        assert f"`bsnn_tf.{name}`" in text, name
    assert " at 0x" not in text and str(REPO) not in text


def test_check_mode_exits_1_on_a_stale_page(tmp_path, monkeypatch):
    make_api = _make_api()
    stale = tmp_path / "API.md"
    stale.write_text("# API reference\n")
    monkeypatch.setattr(make_api, "API_MD", stale)
    monkeypatch.setattr(sys, "argv", ["make_api.py", "--check"])
    assert make_api.main() == 1
    stale.write_text(make_api.generate())
    assert make_api.main() == 0


def test_the_script_runs_from_the_command_line():
    done = subprocess.run([sys.executable, "docs/make_api.py", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_readme_lists_every_public_name_and_convert_s_whole_signature():
    import inspect

    import bsnn_tf

    readme = (REPO / "README.md").read_text()
    for name in bsnn_tf.__all__:
        assert f"bsnn_tf.{name}" in readme, name
    block = readme.split("bsnn_tf.convert(model, calibration_data, *,", 1)[1].split("```", 1)[0]
    for name, parameter in inspect.signature(bsnn_tf.convert).parameters.items():
        if parameter.kind is parameter.KEYWORD_ONLY:
            assert f"{name}={parameter.default!r}".replace("'", '"') in block, name
