"""torchvision ResNet state dicts (.pth and .safetensors) give the same logits in the Keras zoo models."""

import json
import struct
import sys

import numpy as np
import pytest
import torch
from torch import nn

from bsnn_tf import models, runs
from bsnn_tf.models import load_torchvision_weights

RELATIVE_TOLERANCE = 1e-4


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock, with its module names."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision.models.ResNet with BasicBlocks; the CIFAR stem is the usual 3x3 conv, no max-pool."""

    def __init__(self, blocks_per_stage, num_classes, stem="imagenet"):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        inplanes = 64
        for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), 1):
            stride = 1 if stage == 1 else 2
            layers = [BasicBlock(inplanes, planes, stride)]
            layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def random_torch_resnet(name, num_classes, stem, seed=0):
    """A ResNet in eval mode with random weights and random BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ResNet(BLOCKS[name], num_classes, stem)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, std=0.1)
            module.running_mean.normal_(std=0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(100)
    return model.eval()


def save_safetensors(state_dict, path):
    """A minimal safetensors writer: u64 header length, JSON header, little-endian tensor bytes."""
    dtypes = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    header, chunks, offset = {}, [], 0
    for key, tensor in state_dict.items():
        array = tensor.numpy()
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[key] = {"dtype": dtypes[array.dtype], "shape": list(array.shape),
                       "data_offsets": [offset, offset + len(data)]}  # fmt: skip
        chunks.append(data)
        offset += len(data)
    header_bytes = json.dumps(header).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks))


def save(state_dict, path):
    if path.suffix == ".safetensors":
        save_safetensors(state_dict, path)
    else:
        torch.save(state_dict, path)


def relative_error(keras_model, torch_model, input_size, seed=1):
    images = np.random.default_rng(seed).standard_normal((2, input_size, input_size, 3), np.float32)
    expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).detach().numpy()
    logits = np.asarray(keras_model(images, training=False))
    return np.abs(logits - expected).max() / np.abs(expected).max()


@pytest.fixture(scope="module")
def resnet18_64px():
    """A random torchvision-layout ResNet-18 (ImageNet stem, 10 classes) and its state dict."""
    torch_model = random_torch_resnet("resnet18", num_classes=10, stem="imagenet")
    return torch_model, torch_model.state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_resnet18_imagenet_stem_matches_torch(resnet18_64px, tmp_path, suffix):
    torch_model, state_dict = resnet18_64px
    path = tmp_path / f"resnet18{suffix}"
    save(state_dict, path)
    model = models.get("resnet18", num_classes=10, input_shape=(64, 64, 3), stem="imagenet")

    load_torchvision_weights(model, path)

    assert relative_error(model, torch_model, 64) <= RELATIVE_TOLERANCE


def test_resnet34_cifar_stem_matches_torch(tmp_path):
    torch_model = random_torch_resnet("resnet34", num_classes=100, stem="cifar", seed=2)
    path = tmp_path / "resnet34.pt"
    torch.save(torch_model.state_dict(), path)
    model = models.get("resnet34", num_classes=100, input_shape=(32, 32, 3))

    load_torchvision_weights(model, path)

    assert relative_error(model, torch_model, 32) <= RELATIVE_TOLERANCE


def test_convert_py_loads_a_torchvision_resnet34_file_for_imagenet(tmp_path):
    """The mission's --weights: a torchvision-layout ResNet-34 ImageNet state dict (218 keys,
    with num_batches_tracked), read by convert.py's loader, gives torch's logits at 224 px.
    (The rest of the run is test_cli's ResNet-34 run, with random weights.)"""
    torch_model = random_torch_resnet("resnet34", num_classes=1000, stem="imagenet", seed=3)
    assert len(torch_model.state_dict()) == 218
    path = tmp_path / "resnet34-0123abcd.pth"
    torch.save(torch_model.state_dict(), path)
    config = runs.RunConfig(model="resnet34", dataset="imagenet", weights=str(path),
                            output_dir=str(tmp_path / "run"))

    ann = runs.load_ann(config)

    runs.check_fits(ann, "imagenet")
    assert relative_error(ann, torch_model, 224) <= RELATIVE_TOLERANCE


def test_wrapped_state_dict_with_module_prefix(resnet18_64px, tmp_path):
    torch_model, state_dict = resnet18_64px
    path = tmp_path / "data_parallel.pth"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, path)
    model = models.get("resnet18", num_classes=10, input_shape=(64, 64, 3))

    load_torchvision_weights(model, path)

    assert relative_error(model, torch_model, 64) <= RELATIVE_TOLERANCE


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_torchvision_weights(models.get("resnet18"), path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file_names_it(resnet18_64px, tmp_path, suffix):
    path = tmp_path / f"whole{suffix}"
    save(resnet18_64px[1], path)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(ValueError, match=f"truncated{suffix}.*complete"):
        load_torchvision_weights(models.get("resnet18", input_shape=(64, 64, 3)), truncated)


def test_garbage_safetensors_header(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(struct.pack("<Q", 12) + b"not json at all")

    with pytest.raises(ValueError, match="garbage.safetensors"):
        load_torchvision_weights(models.get("resnet18"), path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"")

    with pytest.raises(ValueError, match=r"weights.bin.*\.safetensors"):
        load_torchvision_weights(models.get("resnet18"), path)


def test_wrong_keys_are_listed(resnet18_64px, tmp_path):
    state_dict = dict(resnet18_64px[1])
    state_dict["head.weight"] = state_dict.pop("fc.weight")
    path = tmp_path / "renamed_head.pth"
    torch.save(state_dict, path)
    model = models.get("resnet18", num_classes=10, input_shape=(64, 64, 3))

    with pytest.raises(
        ValueError,
        match=r"renamed_head.pth .*missing keys \(1\): fc.weight; unexpected keys \(1\): head.weight",
    ):
        load_torchvision_weights(model, path)


def test_other_architecture_is_refused(resnet18_64px, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_64px[1], path)

    with pytest.raises(ValueError, match=r"missing keys \(80\): layer1.2.bn1.bias.* and 70 more"):
        load_torchvision_weights(models.get("resnet34", input_shape=(64, 64, 3)), path)


def test_shape_mismatch_names_tensor_and_shapes_and_changes_nothing(resnet18_64px, tmp_path):
    path = tmp_path / "ten_classes.pth"
    torch.save(resnet18_64px[1], path)
    model = models.get("resnet18", num_classes=100, input_shape=(64, 64, 3))
    before = [w.copy() for w in model.get_weights()]

    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(10, 512\).*expects \(100, 512\)"):
        load_torchvision_weights(model, path)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail

    with pytest.raises(ImportError, match="pip install torch.*safetensors"):
        load_torchvision_weights(models.get("resnet18"), path)
