"""bsnn_tf.data: finding, decoding, preprocessing and augmenting datasets."""

import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

from bsnn_tf import data

pytestmark = pytest.mark.jax

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


def test_mnist_comes_from_the_shipped_demo():
    x_test, y_test = data.load("mnist", "test")
    x_train, y_train = data.load("mnist", "train")
    assert x_test.shape == (10000, 28, 28, 1) and x_test.dtype == np.float32
    assert x_train.shape == (1000, 28, 28, 1)
    assert 0.0 == x_test.min() and x_test.max() == 1.0  # pixels / 255, nothing else
    np.testing.assert_array_equal(y_test[:5], [7, 2, 1, 0, 4])
    np.testing.assert_array_equal(y_train[:5], [5, 0, 4, 1, 9])
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_demo_checkpoint_matches_its_record():
    record = json.loads((REPO / "bsnn_tf" / "demo" / "mnist_cnn.json").read_text())
    assert record["test_accuracy"] >= 0.992 and record["test_images"] == 10000
    model = keras.models.load_model(REPO / "bsnn_tf" / "demo" / "mnist_cnn.keras")
    x, y = data.load("mnist", "test", limit=2000)
    accuracy = np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y)
    assert accuracy >= 0.985


def test_environment_variable_points_at_data(tmp_path, monkeypatch):
    white = np.full((2, 28, 28, 1), 255, np.uint8)
    _save_plain_npz(tmp_path / "mnist_test.npz", "test", white, [3, 4])
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    x, y = data.load("mnist", "test")
    assert x.shape == (2, 28, 28, 1) and (x == 1.0).all() and y.tolist() == [3, 4]


def test_cifar10_jpeg_decodes_close_to_the_lossless_pixels(shared_data):
    x, y = data.load("cifar10", "test", shared_data, limit=4)
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32
    assert y.tolist() == [0, 0, 0, 0]  # the JPEG files are grouped by class

    lossless = np.load(shared_data / "cifar10_test_lossless.npz")
    rows = lossless["jpeg_index"][:3]
    jpeg_pixels = data.find("cifar10", "test", shared_data).pixels(rows).astype(float)
    mse = np.mean((jpeg_pixels - lossless["x_test"][:3]) ** 2)
    assert 10 * np.log10(255**2 / mse) > 23  # PSNR range given in the data README


def test_cifar10_lossless_subset_is_normalised_per_channel(shared_data):
    x, y = data.load("cifar10", "test_lossless", shared_data, limit=10)
    np.testing.assert_array_equal(y, [3, 8, 8, 0, 6, 6, 1, 6, 3, 1])
    pixels = np.load(shared_data / "cifar10_test_lossless.npz")["x_test"][:10]
    spec = data.DATASETS["cifar10"]
    expected = (pixels / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(x, expected, atol=1e-5)


def test_cifar100_plain_array_file(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    _save_plain_npz(tmp_path / "cifar100_train.npz", "train", pixels, [0, 17, 42, 99, 5, 5])
    x, y = data.load("cifar100", "train", tmp_path, limit=5)
    assert y.tolist() == [0, 17, 42, 99, 5]
    spec = data.DATASETS["cifar100"]
    np.testing.assert_allclose(x, (pixels[:5] / 255.0 - spec.mean) / spec.std, atol=1e-5)
    assert data.calibration_batch("cifar100", 4, tmp_path).shape == (4, 32, 32, 3)


def test_cifar100_jpeg_blob_file(tmp_path):
    encoded = [_jpeg_bytes(np.full((32, 32, 3), v, np.uint8)) for v in (10, 200)]
    np.savez_compressed(
        tmp_path / "cifar100_test.npz",
        test_jpeg=np.frombuffer(b"".join(encoded), np.uint8),
        test_offsets=np.cumsum([0] + [len(e) for e in encoded]),
        y_test=np.array([7, 8], np.uint8),
    )
    images = data.find("cifar100", "test", tmp_path)
    assert images.labels.tolist() == [7, 8]
    np.testing.assert_allclose(images.pixels([0, 1]).mean(axis=(1, 2, 3)), [10, 200], atol=2)


def test_imagenet_folder_labels_follow_sorted_wnids(tmp_path):
    rng = np.random.default_rng(0)
    layout = {
        "train": {"n01443537": 1, "n01440764": 1, "n15075141": 1},
        "val": {"n15075141": 2, "n01440764": 1},  # n01443537 missing: labels still global
    }
    sizes = iter([(300, 200), (64, 96), (500, 375), (80, 60), (40, 90), (256, 256)])
    for split, classes in layout.items():
        for wnid, count in classes.items():
            folder = tmp_path / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for k in range(count):
                width, height = next(sizes)
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{k}.JPEG")
    x, y = data.load("imagenet", "val", tmp_path)
    assert x.shape == (3, 224, 224, 3) and x.dtype == np.float32
    assert y.tolist() == [0, 2, 2]
    assert data.load("imagenet", "test", tmp_path)[1].tolist() == [0, 2, 2]
    assert data.load("imagenet", "train", tmp_path)[1].tolist() == [0, 1, 2]


def test_imagenet_folder_decodes_grayscale_to_rgb(tmp_path):
    folder = tmp_path / "imagenet" / "val" / "n01440764"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((30, 50), 128, np.uint8), mode="L").save(folder / "gray.JPEG")
    x, y = data.load("imagenet", "val", tmp_path)
    assert x.shape == (1, 224, 224, 3) and y.tolist() == [0]
    spec = data.DATASETS["imagenet"]
    gray = (128 / 255 - np.array(spec.mean)) / spec.std
    np.testing.assert_allclose(x[0, 100, 100], gray, atol=0.05)


def test_imagenet_sample_shards(shared_data):
    x, y = data.load("imagenet", "val", shared_data, limit=2)
    assert x.shape == (2, 224, 224, 3) and y.tolist() == [0, 1]


def test_augment_keeps_shapes_and_is_random():
    pixels = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    first = data.augment("cifar10", pixels, np.random.default_rng(1))
    second = data.augment("cifar10", pixels, np.random.default_rng(2))
    assert first.shape == second.shape == (16, 32, 32, 3) and first.dtype == np.float32
    assert not np.allclose(first, second)
    assert (first == 0).all(axis=-1).sum() >= 16 * 8 * 8  # Cutout squares (partly clipped)


def test_imagenet_augmentation_crops_the_stored_square_randomly():
    stored = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    first = data.augment("imagenet", stored, np.random.default_rng(1))
    second = data.augment("imagenet", stored, np.random.default_rng(2))
    assert first.shape == (2, 224, 224, 3) and not np.allclose(first, second)
    assert data.preprocess("imagenet", stored).shape == (2, 224, 224, 3)


def test_mnist_is_never_augmented():
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    augmented = data.augment("mnist", pixels, np.random.default_rng(0))
    np.testing.assert_array_equal(augmented, data.preprocess("mnist", pixels))


def test_train_dataset_batches_are_shuffled_and_augmented(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    _save_plain_npz(tmp_path / "cifar10_train.npz", "train", pixels, np.arange(20) % 10)
    batches = data.train_dataset("cifar10", 8, tmp_path, seed=0)
    epochs = [[(np.asarray(x), np.asarray(y)) for x, y in batches] for _ in range(2)]
    assert [x.shape for x, _ in epochs[0]] == [(8, 32, 32, 3), (8, 32, 32, 3), (4, 32, 32, 3)]
    assert sorted(np.concatenate([y for _, y in epochs[0]])) == sorted(np.arange(20) % 10)
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])


def test_numpy_pipeline_without_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    _save_plain_npz(tmp_path / "cifar10_train.npz", "train",
                    rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10))
    script = f"""
        import sys
        sys.modules["tensorflow"] = sys.modules["tensorflow_datasets"] = None
        import keras
        from bsnn_tf import data
        batches = data.train_dataset("cifar10", 4, {str(tmp_path)!r}, seed=0)
        assert isinstance(batches, keras.utils.PyDataset), type(batches)
        shapes = [batches[i][0].shape for i in range(len(batches))]
        assert shapes == [(4, 32, 32, 3)] * 2 + [(2, 32, 32, 3)], shapes
        try:
            data.load("cifar10", "test", {str(tmp_path)!r})
        except data.DatasetNotFoundError as error:
            assert "tensorflow-datasets: not installed" in str(error), error
        print("ok", keras.backend.backend())
    """
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "jax"]


def test_missing_data_offline_says_where_it_looked(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load("cifar100", "train", tmp_path)
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    for expected in (str(tmp_path), "cifar100_train.npz", "tensorflow-datasets",
                     "--data_dir", data.DATA_DIR_ENV):
        assert expected in message


def test_missing_imagenet_names_all_layouts(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match=r"imagenet/val/<wnid>/\*\.JPEG"):
        data.find("imagenet", "val", tmp_path)


@pytest.mark.parametrize("content", [b"not an npz at all", b"PK\x03\x04truncated zip"])
def test_corrupt_npz_names_the_file(tmp_path, content):
    path = tmp_path / "mnist_test.npz"
    path.write_bytes(content)
    with pytest.raises(data.CorruptDataError, match="mnist_test.npz"):
        data.load("mnist", "test", tmp_path)


def test_npz_with_wrong_keys_names_the_expected_ones(tmp_path):
    np.savez(tmp_path / "mnist_test.npz", images=np.zeros((1, 28, 28, 1), np.uint8))
    with pytest.raises(data.CorruptDataError, match="x_test and y_test"):
        data.load("mnist", "test", tmp_path)


def test_corrupt_jpeg_names_the_file_and_image(tmp_path):
    np.savez(tmp_path / "cifar10_test.npz", test_jpeg=np.frombuffer(b"garbage!", np.uint8),
             test_offsets=np.array([0, 8]), y_test=np.array([1]))
    with pytest.raises(data.CorruptDataError, match=r"cifar10_test.npz: image 0: cannot decode"):
        data.load("cifar10", "test", tmp_path)


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_limit_must_be_positive(limit):
    with pytest.raises(ValueError, match="limit must be >= 1"):
        data.load("mnist", "test", limit=limit)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        data.dataset("mnist", "test", batch_size=8, limit=limit)


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((3, 28, 28, 1), np.uint8), [1, 2], r"labels have shape \(2,\) for 3 images"),
    (np.zeros((2, 28, 28, 1), np.uint8), [1, 2, 3], r"labels have shape \(3,\) for 2 images"),
    (np.zeros((2, 28, 28, 1), np.uint8), [[1], [2]], r"labels have shape \(2, 1\) .*"
                                                     r"\(e.g. y.ravel\(\)\)"),
    (np.zeros((2, 28, 28, 1), np.uint8), [3, 10], r"labels range over \[3, 10\], outside \[0, 10\)"),
    (np.zeros((2, 28, 28, 1), np.uint8), [-1, 2], r"outside \[0, 10\)"),
    (np.zeros((2, 28, 28, 1), np.uint8), [0.5, 2], "labels have dtype float"),
    (np.zeros((2, 28, 27), np.uint8), [1, 2], r"images have shape \(2, 28, 27\); expected "
                                              r"\(N, 28, 28, 1\)"),
    (np.zeros((2, 28, 28, 1), np.uint8), np.eye(10, dtype=int)[[1, 2]],
     r"labels have shape \(2, 10\) .*\(one-hot labels: y.argmax\(axis=1\)\)"),
    (np.zeros((0, 28, 28, 1), np.uint8), np.zeros(0, int),
     r"holds no images \(x_test, y_test hold none\); store at least one image"),
    (np.full((2, 28, 28, 1), 255.0, np.float32), [1, 2], r"dtype float32 in \[255.0, 255.0\]"),
    (np.zeros((2, 28, 28, 1), np.int64), [1, 2], "pixels have dtype int64"),
])
def test_npz_contents_are_checked(tmp_path, x, y, match):
    np.savez(tmp_path / "mnist_test.npz", x_test=x, y_test=np.asarray(y))
    with pytest.raises(data.CorruptDataError, match="mnist_test.npz: .*" + match):
        data.load("mnist", "test", tmp_path)


def test_mnist_without_a_channel_axis_gets_one(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist_test.npz", x_test=pixels, y_test=np.array([1, 2, 3]))
    x, y = data.load("mnist", "test", tmp_path)
    np.testing.assert_array_equal(x[..., 0], pixels / np.float32(255))
    assert x.shape == (3, 28, 28, 1) and y.tolist() == [1, 2, 3]


def test_an_empty_jpeg_npz_is_named(tmp_path):
    np.savez(tmp_path / "cifar10_test.npz", test_jpeg=np.zeros(0, np.uint8),
             test_offsets=np.array([0]), y_test=np.zeros(0, int))
    with pytest.raises(data.CorruptDataError, match=r"cifar10_test.npz: holds no images "
                                                    r"\(test_jpeg, test_offsets, y_test hold"):
        data.find("cifar10", "test", tmp_path)


def test_jpeg_npz_labels_are_checked(tmp_path):
    encoded = _jpeg_bytes(np.full((32, 32, 3), 10, np.uint8))
    np.savez(tmp_path / "cifar10_test.npz", test_jpeg=np.frombuffer(encoded, np.uint8),
             test_offsets=np.array([0, len(encoded)]), y_test=np.array([10]))
    with pytest.raises(data.CorruptDataError, match=r"outside \[0, 10\)"):
        data.find("cifar10", "test", tmp_path)


def test_float_pixels_in_the_unit_interval_are_not_rescaled_twice(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    _save_plain_npz(tmp_path / "cifar10_test.npz", "test", pixels / 255.0, [0, 1, 2])
    x, _ = data.load("cifar10", "test", tmp_path)
    spec = data.DATASETS["cifar10"]
    np.testing.assert_allclose(x, (pixels / 255.0 - spec.mean) / spec.std, atol=1e-5)


def test_unknown_names_are_value_errors():
    with pytest.raises(ValueError, match="Known datasets"):
        data.load("svhn", "test")
    with pytest.raises(ValueError, match="Known: train, test"):
        data.load("mnist", "test_lossless")


def _save_plain_npz(path, split, x, y):
    np.savez_compressed(path, **{f"x_{split}": x, f"y_{split}": np.asarray(y, np.uint8)})


def _jpeg_bytes(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
