"""Writes docs/API.md, the API reference, from the public names' signatures and docstrings.

Usage (from the repository root):
    python docs/make_api.py           # rewrite docs/API.md
    python docs/make_api.py --check   # exit 1 if docs/API.md is not what this writes

The page lists, module by module in the order of `SECTIONS`, each public name with
its signature and docstring; for a class, its own public methods and properties
(not those it inherits, e.g. from keras.Model). Only `inspect` is used: the output
depends on the signatures and docstrings, not on the Keras backend, the machine
or the path of the checkout. tests/test_api_doc.py runs the check.
"""

import argparse
import importlib
import inspect
import os
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "API.md"

# (module, names or None for the module's __all__, what the section is for). The first
# section is the package itself; the others are the modules a user reaches by name.
SECTIONS = [
    ("bsnn_tf", None, "Convert, simulate, evaluate and verify (`bsnn_tf.__all__`)."),
    ("bsnn_tf.conversion", ["FineTuning", "LatencySearch"],
     "The settings records `convert` takes (`finetuning=`, `latency=`)."),
    ("bsnn_tf.quantized", ["QuantizedReLU", "quantize_relus", "set_thresholds"],
     "A ReLU with the BSNN's first-readout quantiser in the loop (`train.py --snn_phases`)."),
    ("bsnn_tf.metrics", ["summary", "layer_table", "write_tensorboard", "energy",
                         "synaptic_operations", "ann_macs", "real_input_macs",
                         "count_window_note", "PJ_PER_AC", "PJ_PER_MAC"],
     "Synaptic operations, energy, per-layer tables and TensorBoard logging."),
    ("bsnn_tf.models", ["get", "names", "register", "load_keras", "load_torchvision_weights",
                        "mnist_cnn", "vgg16", "resnet20", "resnet18", "resnet34"],
     "The model zoo and weight loaders."),
    ("bsnn_tf.data", None, "Datasets: finding, decoding, preprocessing, streaming."),
    ("bsnn_tf.validation", ["EarlyReadoutWarning", "InputRangeWarning"],
     "Warnings the library emits."),
]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _clean(text):
    """`text` without memory addresses or the absolute path of the checkout (or of the
    installed package, e.g. `bsnn_tf.data.DEMO_DIR`)."""
    import bsnn_tf

    text = _ADDRESS.sub("", text)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(bsnn_tf.__file__)))
    for root in sorted({str(ROOT), os.path.realpath(ROOT), package_parent,
                        os.path.realpath(package_parent)}, key=len, reverse=True):
        text = text.replace(root + os.sep, "")
    return text


def _docstring(obj):
    doc = obj.__doc__ if (isinstance(obj, (type, property)) or callable(obj)
                          or inspect.ismodule(obj)) else None
    return inspect.cleandoc(doc) if doc else "(no docstring)"


def _signature(name, obj):
    try:
        return f"{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        return f"{name}(...)"


def _fenced_doc(doc):
    return f"```text\n{doc}\n```"


def _constant(qualified, value):
    shown = repr(value)
    if len(shown) > 100:
        shown = f"<{type(value).__name__}>"
    return [f"### `{qualified}`", "", f"Constant: `{_clean(shown)}`", ""]


def _members(cls):
    """The public methods and properties `cls` itself defines, in source order; an
    undocumented override of a base class's (Keras's `build`, `call`, `get_config`, ...)
    is plumbing, left out."""
    members = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        overrides = any(name in vars(base) for base in cls.__mro__[1:])
        if overrides and not getattr(member, "__doc__", None):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property) or inspect.isfunction(member):
            members.append((name, member))
    return members


def _entry(qualified, obj):
    """The markdown of one public name."""
    if inspect.ismodule(obj):
        anchor = obj.__name__.replace(".", "")
        return [f"### `{qualified}` (module)", "",
                f"See [`{obj.__name__}`](#{anchor}) below.", ""]
    if not (inspect.isclass(obj) or callable(obj)):
        return _constant(qualified, obj)
    kind = "class" if inspect.isclass(obj) else "function"
    lines = [f"### `{qualified}`", "", "```python",
             f"{kind} {_signature(qualified.rsplit('.', 1)[-1], obj)}" if kind == "class"
             else _signature(qualified.rsplit(".", 1)[-1], obj), "```", "",
             _fenced_doc(_docstring(obj)), ""]
    if inspect.isclass(obj):
        for name, member in _members(obj):
            if isinstance(member, property):
                lines += [f"#### `{qualified}.{name}` (property)", ""]
            else:
                signature = _signature(name, member).replace("(self, ", "(").replace(
                    "(self)", "()").replace("(cls, ", "(").replace("(cls)", "()")
                lines += [f"#### `{qualified}.{name}`", "", "```python", signature, "```", ""]
            lines += [_fenced_doc(_docstring(member)), ""]
    return lines


def _names(module, names):
    if names is not None:
        return names
    return list(getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")]))


def generate():
    """The text of docs/API.md."""
    sys.path.insert(0, str(ROOT))
    lines = ["# API reference", "",
             "<!-- generated by docs/make_api.py from the docstrings; do not edit by hand: "
             "run `python docs/make_api.py` -->", "",
             "Every public name, with its signature and docstring. The guide is "
             "[README.md](../README.md); the semantics are in [DESIGN.md](DESIGN.md).", ""]
    modules = [(importlib.import_module(name), names, purpose) for name, names, purpose in SECTIONS]
    lines += ["## Contents", ""]
    for module, names, purpose in modules:
        anchor = module.__name__.replace(".", "")
        lines.append(f"- [`{module.__name__}`](#{anchor}): {purpose}")
    lines.append("")
    for module, names, purpose in modules:
        lines += [f"## {module.__name__}", "", purpose, ""]
        if module.__doc__:
            lines += [_fenced_doc(inspect.cleandoc(module.__doc__)), ""]
        for name in _names(module, names):
            lines += _entry(f"{module.__name__}.{name}", getattr(module, name))
    return _clean("\n".join(lines).rstrip() + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/API.md differs from what would be written")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if not API_MD.exists() or API_MD.read_text() != text:
            print("docs/API.md is stale: it differs from the docstrings. "
                  "Run `python docs/make_api.py` and commit docs/API.md.", file=sys.stderr)
            return 1
        print("docs/API.md is up to date.")
        return 0
    API_MD.write_text(text)
    print(f"Wrote {API_MD.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
