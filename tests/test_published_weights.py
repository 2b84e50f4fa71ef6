"""Published weights by default: download into Keras's cache, hash check, clear offline errors.

The download runs for real, through `keras.utils.get_file`, from `file://`
URLs: the published table (`models.published.WEIGHTS`) gets an entry for a
small zoo model whose torchvision-format state dict is written with torch, and
`KERAS_HOME` points at a temporary directory, so ~/.keras is never touched.
"""

import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from bsnn_tf import data, models, runs
from bsnn_tf.models import published

torch = pytest.importorskip("torch")

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = "published_cnn"  # the demo CNN's architecture, registered for these tests
RUN_ARGS = dict(model=MODEL, dataset="mnist", phases=4, timesteps=16, limit=50,
                calibration_size=50, batch_size=50)


def write_state_dict(model, folder, stem):
    """`model`'s weights as a torchvision-style .pth named `<stem>-<sha256[:8]>.pth`, as
    torchvision names its files; returns its path."""
    layouts = {keras.layers.Conv2D: (3, 2, 0, 1), keras.layers.Dense: (1, 0)}
    state = {}
    for layer in model.layers:
        if type(layer) in layouts:
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            state[f"{layer.name}.weight"] = torch.from_numpy(
                np.ascontiguousarray(kernel.transpose(layouts[type(layer)])))
            state[f"{layer.name}.bias"] = torch.from_numpy(bias)
    folder.mkdir(parents=True, exist_ok=True)
    draft = folder / f"{stem}.pth"
    torch.save(state, draft)
    path = folder / f"{stem}-{published.sha256(draft)[:8]}.pth"
    draft.rename(path)
    return path


@pytest.fixture
def demo_weights(tmp_path, monkeypatch):
    """The demo checkpoint's weights as the published weights of MODEL on mnist; returns
    (the demo ANN, the published file, the Keras cache folder)."""
    demo = keras.models.load_model(runs.DEMO_CHECKPOINT, compile=False)
    source = write_state_dict(demo, tmp_path / "server", MODEL)
    monkeypatch.setitem(models._REGISTRY, MODEL, models.mnist_cnn)
    publish(monkeypatch, source.as_uri(), source.name.split("-")[-1][:-len(".pth")])
    keras_home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    return demo, source, keras_home / published.CACHE_SUBDIR


def publish(monkeypatch, url, sha256_prefix):
    monkeypatch.setitem(published.WEIGHTS, (MODEL, "mnist"),
                        published.PublishedWeights(url, sha256_prefix))


def cached_files(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def test_published_weights_download_once_load_and_convert(demo_weights, tmp_path, capsys,
                                                          monkeypatch):
    demo, source, cache = demo_weights
    config = runs.RunConfig(**RUN_ARGS, output_dir=str(tmp_path / "run"))
    assert config.weights is None
    results = runs.run(config)
    assert cached_files(cache) == [source.name]
    assert f"(cached at {cache / source.name})" in capsys.readouterr().out
    assert results["ann_accuracy"] > 0.95  # the demo CNN's weights, not random ones
    assert results["methods"]["bsnn"]["accuracy"][-1] > 0.9
    assert (tmp_path / "run" / "snn_bsnn.keras").is_file()
    # Later runs read the cache: the URL is no longer needed, even with downloads off.
    source.unlink()
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    ann = runs.load_ann(config)
    for loaded, expected in zip(ann.get_weights(), demo.get_weights()):
        np.testing.assert_array_equal(loaded, expected)


def test_with_downloads_off_only_the_cache_is_read(demo_weights, monkeypatch, tmp_path):
    _, source, cache = demo_weights
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    config = runs.RunConfig(**RUN_ARGS, output_dir=str(tmp_path / "run"))
    with pytest.raises(runs.ConfigError) as error:
        runs.run(config)
    message = str(error.value)
    assert message.startswith(
        f"Cannot download {source.as_uri()}: ${data.OFFLINE_ENV} is set, and the file is not in "
        f"the cache ({cache / source.name}).")
    assert "pass --weights FILE, or pass --random_weights" in message
    assert cached_files(cache) == []


def test_a_file_with_the_wrong_hash_is_refused_and_deleted(demo_weights, monkeypatch, tmp_path):
    _, source, cache = demo_weights
    publish(monkeypatch, source.as_uri(), "0badc0de")
    config = runs.RunConfig(**RUN_ARGS, output_dir=str(tmp_path / "run"))
    with pytest.raises(runs.ConfigError) as error:
        runs.run(config)
    message = str(error.value)
    assert re.search(f"The file downloaded from {re.escape(source.as_uri())} has SHA-256 "
                     f"{published.sha256(source)}, but the published one starts with 0badc0de",
                     message), message
    assert f"and was deleted ({cache / source.name})" in message
    assert "pass --weights FILE" in message
    assert cached_files(cache) == []
    assert not (tmp_path / "run").exists()


def test_an_unreachable_url_says_what_it_tried_and_how_to_go_on(demo_weights, monkeypatch,
                                                                tmp_path):
    _, source, cache = demo_weights
    url = (tmp_path / "offline" / source.name).as_uri()
    publish(monkeypatch, url, "f37072fd")
    config = runs.RunConfig(**RUN_ARGS, output_dir=str(tmp_path / "run"))
    with pytest.raises(runs.ConfigError) as error:
        runs.run(config)
    message = str(error.value)
    assert message.startswith(f"Cannot download {url}: ")
    assert "download that file elsewhere and pass --weights FILE" in message
    assert "--random_weights" in message
    assert cached_files(cache) == []
    assert not (tmp_path / "run").exists()


# Runs convert.py with resnet18's published URL replaced by argv[1].
OFFLINE_DRIVER = """
import sys
from absl import app
import convert
from bsnn_tf.models import published

entry = published.WEIGHTS[("resnet18", "imagenet")]
published.WEIGHTS[("resnet18", "imagenet")] = published.PublishedWeights(
    sys.argv[1], entry.sha256_prefix)
sys.argv = ["convert.py", *sys.argv[2:]]
app.run(convert.main, argv=sys.argv)
"""


def test_convert_py_offline_is_a_one_line_error(tmp_path):
    url = (tmp_path / "offline" / "resnet18-f37072fd.pth").as_uri()
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_HOME=str(tmp_path / "keras_home"))
    env.pop(data.OFFLINE_ENV, None)
    process = subprocess.run(
        [sys.executable, "-c", OFFLINE_DRIVER, url, "--model=resnet18", "--dataset=imagenet",
         f"--output_dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 1, process.stderr[-3000:]
    assert f"convert.py: error: Cannot download {url}: " in process.stderr
    assert "pass --weights FILE, or pass --random_weights" in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.jax
def test_the_published_table():
    for (model, dataset), weights in published.WEIGHTS.items():
        assert model in models.names() and dataset in data.DATASETS
        assert weights.url.startswith("https://")
        # torchvision's file names end in the first 8 hex digits of the SHA-256.
        stem = weights.url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        assert stem.endswith("-" + weights.sha256_prefix)
        assert re.fullmatch("[0-9a-f]{8}", weights.sha256_prefix)
    assert published.find("resnet34", "imagenet").url == (
        "https://download.pytorch.org/models/resnet34-b627a593.pth")
    assert published.find("resnet34", "cifar10") is None


@pytest.mark.jax
@pytest.mark.parametrize("model", ["resnet18", "resnet34"])
def test_imagenet_resnets_need_no_weights_flag(model, tmp_path):
    runs.check_run_config(runs.RunConfig(model=model, dataset="imagenet",
                                         output_dir=str(tmp_path / "run")))
    with pytest.raises(runs.ConfigError, match=re.escape(
            "Published weights, downloaded when --weights is not given, exist for resnet18 on "
            "imagenet, resnet34 on imagenet.")):
        runs.check_run_config(runs.RunConfig(model=model, dataset="cifar10",
                                             output_dir=str(tmp_path / "run")))
