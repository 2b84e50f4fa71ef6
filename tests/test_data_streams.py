"""data.image_batches: every dataset format streamed in preprocessed batches, pixel for
pixel what decoding each image alone gives; and the bad input of an ImageNet folder or tar."""

import io
import os
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

from bsnn_tf import data
from conftest import REPO

pytestmark = pytest.mark.jax

WNIDS = ("n01440764", "n01443537", "n01484850")


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


def write_folder(root, shared_data, per_class=3, wnids=WNIDS):
    """imagenet/val/<wnid>/*.JPEG from the sample's JPEG files, of various sizes; returns
    the paths in file order."""
    with np.load(shared_data / "imagenet_sample_0.npz") as sample:
        blob, offsets = sample["test_jpeg"], sample["test_offsets"]
    paths, image = [], 0
    for wnid in wnids:
        folder = root / "imagenet" / "val" / wnid
        folder.mkdir(parents=True)
        for k in range(per_class):
            path = folder / f"ILSVRC2012_val_{image:08d}.JPEG"
            path.write_bytes(blob[offsets[image]:offsets[image + 1]].tobytes())
            paths.append(path)
            image += 1
    return paths


def reference(name, images, indices):
    """Each image decoded alone (`LabeledImages.pixel`), then `data.preprocess`."""
    return data.preprocess(name, np.stack([images.pixel(i) for i in indices]))


def streamed(name, images, indices, batch_size, **kwargs):
    batches = list(data.image_batches(name, images, indices, batch_size, **kwargs))
    return (np.concatenate([b.x for b in batches]), np.concatenate([b.y for b in batches]),
            batches)


def test_folder_stream_equals_each_image_decoded_alone(tmp_path, shared_data):
    write_folder(tmp_path, shared_data)
    images = data.find("imagenet", "val", tmp_path)
    indices = [0, 2, 3, 4, 7, 8]
    x, y, batches = streamed("imagenet", images, indices, batch_size=4)
    assert [len(b.x) for b in batches] == [4, 2]
    np.testing.assert_array_equal(x, reference("imagenet", images, indices))
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.concatenate([b.indices for b in batches]).tolist() == indices


def test_sample_shards_and_npz_streams_equal_each_image_decoded_alone(shared_data):
    for name, split in (("imagenet", "val"), ("cifar10", "test"), ("mnist", "test")):
        images = data.find(name, split, shared_data)
        indices = np.arange(0, len(images), len(images) // 7)[:7]
        x, y, _ = streamed(name, images, indices, batch_size=3)
        np.testing.assert_array_equal(x, reference(name, images, indices))
        np.testing.assert_array_equal(y, images.labels[indices])


def test_the_numpy_stream_without_tensorflow_gives_the_same_pixels(tmp_path, shared_data):
    write_folder(tmp_path, shared_data)
    expected = reference("imagenet", data.find("imagenet", "val", tmp_path), range(9))
    np.save(tmp_path / "expected.npy", expected)
    script = f"""
        import sys
        sys.modules["tensorflow"] = sys.modules["tensorflow_datasets"] = None
        import numpy as np
        from bsnn_tf import data
        images = data.find("imagenet", "val", {str(tmp_path)!r})
        batches = list(data.image_batches("imagenet", images, range(9), 4))
        x = np.concatenate([b.x for b in batches])
        assert [len(b.x) for b in batches] == [4, 4, 1]
        assert np.array_equal(x, np.load({str(tmp_path / "expected.npy")!r}))
        print("ok")
    """
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok"]


def test_tfds_split_streams_lazily_with_the_pixels_of_today(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        images = data.find("cifar10", "test", data_dir=str(tmp_path))
        x, y, _ = streamed("cifar10", images, [1, 4, 5, 9], batch_size=3)
        pixels, labels = zip(*tfds.as_numpy(
            tfds.load("cifar10", split="test", as_supervised=True)))
    assert isinstance(images, data.LabeledImages) and len(images) == 10
    indices = [1, 4, 5, 9]
    np.testing.assert_array_equal(x, data.preprocess("cifar10", np.stack(pixels)[indices]))
    np.testing.assert_array_equal(y, np.array(labels)[indices])


def test_a_truncated_image_mid_folder_is_named_after_the_batches_before_it(
        tmp_path, shared_data):
    paths = write_folder(tmp_path, shared_data)
    paths[5].write_bytes(paths[5].read_bytes()[:600])  # truncated
    images = data.find("imagenet", "val", tmp_path)
    stream = data.image_batches("imagenet", images, range(9), batch_size=2)
    assert [len(next(stream).x) for _ in range(2)] == [2, 2]
    with pytest.raises(data.CorruptDataError, match=str(paths[5])):
        next(stream)
    x, y, batches = streamed("imagenet", images, range(9), batch_size=2, skip_unreadable=True)
    kept = [0, 1, 2, 3, 4, 6, 7, 8]
    np.testing.assert_array_equal(x, reference("imagenet", images, kept))
    unreadable = [u for b in batches for u in b.unreadable]
    assert [index for index, _ in unreadable] == [5] and str(paths[5]) in unreadable[0][1]
    assert sum(b.count for b in batches) == 9


@pytest.mark.parametrize("folder", ["my_cats", "Backup", "n0144076"])
def test_a_class_folder_that_is_not_a_wnid_is_refused(tmp_path, shared_data, folder):
    write_folder(tmp_path, shared_data, per_class=1, wnids=WNIDS[:1] + (folder,))
    with pytest.raises(data.CorruptDataError, match=f"{folder}: not an ImageNet class folder"):
        data.find("imagenet", "val", tmp_path)


def test_a_wnid_the_class_list_does_not_know_is_refused(tmp_path, shared_data):
    (tmp_path / "imagenet_classes.txt").write_text(
        (shared_data / "imagenet_classes.txt").read_text())
    write_folder(tmp_path, shared_data, per_class=1, wnids=("n01440764", "n99999999"))
    with pytest.raises(data.CorruptDataError, match="n99999999: not an ImageNet class"):
        data.find("imagenet", "val", tmp_path)


def test_a_class_folder_with_no_image_is_refused(tmp_path, shared_data):
    write_folder(tmp_path, shared_data, per_class=1)
    empty = tmp_path / "imagenet" / "val" / "n01530575"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(data.CorruptDataError, match="n01530575: holds no image"):
        data.find("imagenet", "val", tmp_path)


@pytest.mark.parametrize("member", ["holiday.jpg", None])
def test_a_tar_that_is_not_ilsvrc2012_is_refused(tmp_path, member):
    path = tmp_path / "ILSVRC2012_img_val.tar"
    if member is None:
        path.write_bytes(b"not a tar file at all" * 100)
    else:
        with tarfile.open(path, "w") as tar:
            content = b"\xff\xd8 not really a jpeg"
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with pytest.raises(data.CorruptDataError, match="ILSVRC2012_img_val.tar: not"):
        data.find("imagenet", "val", tmp_path)


def test_calibration_images_are_drawn_as_before():
    """convert.py's calibration images: seed 0's draw of training images, decoded whole."""
    from bsnn_tf import runs

    images = runs.load_images(runs.RunConfig(limit=10, calibration_size=50))
    train = data.find("mnist", "train")
    drawn = np.sort(np.random.default_rng(0).choice(len(train), size=50, replace=False))
    np.testing.assert_array_equal(images.x_calibration,
                                  data.preprocess("mnist", train.array[drawn]))
    np.testing.assert_array_equal(images.y_calibration, train.labels[drawn])
    assert images.evaluated.tolist() == list(range(10))
