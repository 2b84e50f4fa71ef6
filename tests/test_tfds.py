"""The tensorflow-datasets fallback of `bsnn_tf.data`, offline.

With no local files, `data.find` reads tensorflow-datasets: a prepared copy,
else a download. `tfds.testing.mock_data` checks what `data.load` makes of
tfds's examples. It replaces the whole download, so the download path itself
(which imports `importlib_resources`, a dependency tfds does not declare on
Python >= 3.9) runs for real on a fake CIFAR-10 archive: only the network fetch
(`DownloadManager.download_and_extract`) is replaced, and tfds's data
directory is a temporary one. `$BSNN_OFFLINE`, which conftest.py sets for
every other test, is unset here.
"""

import numpy as np
import pytest

from bsnn_tf import data

tfds = pytest.importorskip("tensorflow_datasets")
from tensorflow_datasets.core import constants  # noqa: E402  (after the importorskip)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_FILES = {"test_batch.bin": 3, **{f"data_batch_{i}.bin": 1 for i in range(1, 6)}}


@pytest.fixture(autouse=True)
def no_local_data(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)  # the tests' conftest sets it


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_tfds_mock_data_reaches_data_load(name, tmp_path):
    spec = data.DATASETS[name]
    with tfds.testing.mock_data(num_examples=6):
        x, y = data.load(name, "test", data_dir=str(tmp_path))
        found = data.find(name, "test", data_dir=str(tmp_path))
        pixels, labels = zip(*tfds.as_numpy(
            tfds.load(spec.tfds_name, split="test", as_supervised=True)))
    assert x.shape == (6, *spec.input_shape) and x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    assert ((0 <= y) & (y < spec.num_classes)).all()
    np.testing.assert_allclose(x, data.preprocess(name, np.stack(pixels)), rtol=1e-6)
    assert found.source == f"tensorflow-datasets {spec.tfds_name}[test]"


def write_cifar10_archive(folder, rng):
    """The extracted cifar-10-binary.tar.gz, with CIFAR10_FILES images per file; returns
    {file: (uint8 NHWC pixels, labels)}."""
    batches = folder / "cifar-10-batches-bin"
    batches.mkdir(parents=True)
    (batches / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    contents = {}
    for name, count in CIFAR10_FILES.items():
        pixels = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        records = [np.concatenate([[label], image.transpose(2, 0, 1).ravel()])
                   for label, image in zip(labels, pixels)]
        (batches / name).write_bytes(np.stack(records).astype(np.uint8).tobytes())
        contents[name] = (pixels, labels)
    return contents


@pytest.fixture
def offline_tfds(tmp_path, monkeypatch):
    """tfds with an empty data directory and its network fetch replaced by `fetch(urls)`;
    returns the list of fetched URLs."""
    monkeypatch.setattr(constants, "DATA_DIR", str(tmp_path / "tensorflow_datasets"))
    fetched = []

    def install(fetch):
        def download_and_extract(manager, urls):
            fetched.append(urls)
            return fetch(urls)

        monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                            download_and_extract)
        return fetched

    return install


def test_tfds_downloads_and_prepares_cifar10_when_nothing_is_local(offline_tfds, tmp_path):
    archive = tmp_path / "archive"
    contents = write_cifar10_archive(archive, np.random.default_rng(0))
    fetched = offline_tfds(lambda urls: str(archive))
    (tmp_path / "empty").mkdir()

    x, y = data.load("cifar10", "test", data_dir=str(tmp_path / "empty"))
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int64
    assert fetched == [CIFAR10_URL]
    test = data.find("cifar10", "test", data_dir=str(tmp_path / "empty"))
    np.testing.assert_allclose(x, data.preprocess("cifar10", test.pixels(range(3))), rtol=1e-6)
    assert labeled_images(test) == labeled_images_of(contents["test_batch.bin"])
    # The training split was prepared with it, and is read without a second download.
    train = data.find("cifar10", "train", data_dir=str(tmp_path / "empty"))
    assert fetched == [CIFAR10_URL]
    assert labeled_images(train) == labeled_images_of(*(
        contents[f"data_batch_{i}.bin"] for i in range(1, 6)))


def labeled_images(images):
    """{image bytes: label} of a `data.LabeledImages` (tfds shuffles the order)."""
    return {images.pixel(i).tobytes(): int(images.labels[i]) for i in range(len(images))}


def labeled_images_of(*batches):
    """{image bytes: label} of (pixels, labels) batches."""
    return {image.tobytes(): int(label) for pixels, labels in batches
            for image, label in zip(pixels, labels)}


def test_a_failed_download_is_reported_with_what_was_searched(offline_tfds, tmp_path):
    def offline(urls):
        raise ConnectionError(f"no network to fetch {urls}")

    offline_tfds(offline)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load("cifar10", "test", data_dir=str(tmp_path / "empty"))
    message = str(error.value)
    assert f"{tmp_path / 'empty'}: expected cifar10_test.npz" in message
    assert f"ConnectionError: no network to fetch {CIFAR10_URL}" in message
    assert "--data_dir DIR" in message


def test_a_missing_module_of_tfds_is_named_with_its_install_command(monkeypatch, tmp_path):
    def without_module(name, split, manual_dir=None):
        raise ModuleNotFoundError("No module named 'importlib_resources'",
                                  name="importlib_resources")

    monkeypatch.setattr(data.tfds_splits, "tfds_images", without_module)
    with pytest.raises(data.DatasetNotFoundError, match=(
            "ModuleNotFoundError: No module named 'importlib_resources' "
            r"\(pip install importlib_resources\)")):
        data.find("mnist", "test", data_dir=str(tmp_path))


def test_with_downloads_off_nothing_is_fetched(offline_tfds, monkeypatch, tmp_path):
    fetched = offline_tfds(lambda urls: pytest.fail(f"fetched {urls}"))
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load("cifar10", "test", data_dir=str(tmp_path))
    assert ("DatasetNotFoundError: no prepared copy, and no download: $BSNN_OFFLINE is set"
            in str(error.value))
    assert fetched == []
