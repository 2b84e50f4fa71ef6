"""PyTorch state dicts (torchvision ResNet-18/34 and the like) loaded into the zoo's Keras models.

A state-dict key "layer1.0.conv1.weight" names the Keras layer "layer1.0.conv1"
and its parameter. Conv kernels go from PyTorch's (out, in, kh, kw) to Keras's
(kh, kw, in, out), linear weights from (out, in) to (in, out); BatchNorm's
weight, bias, running_mean and running_var become gamma, beta, moving_mean and
moving_variance. `.pth`/`.pt` files need torch; `.safetensors` files are parsed
here with numpy alone.

Example:
    >>> from bsnn_tf import models
    >>> ann = models.get("resnet18", num_classes=1000, input_shape=(224, 224, 3))
    >>> tuple(ann.get_layer("layer1.0.conv1").kernel.shape)    # torch's (64, 64, 3, 3)
    (3, 3, 64, 64)

Then `models.load_torchvision_weights(ann, "resnet18-f37072fd.pth")` loads
torchvision's file into it.
"""

import json
import pathlib
import struct

import keras
import numpy as np

TORCH_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"

# Parameters of each layer type: (PyTorch name, Keras attribute, axes taking PyTorch layout to Keras).
_CONV_PARAMETERS = (("weight", "kernel", (2, 3, 1, 0)), ("bias", "bias", (0,)))
_DENSE_PARAMETERS = (("weight", "kernel", (1, 0)), ("bias", "bias", (0,)))
_BATCH_NORM_PARAMETERS = (
    ("weight", "gamma", (0,)),
    ("bias", "beta", (0,)),
    ("running_mean", "moving_mean", (0,)),
    ("running_var", "moving_variance", (0,)),
)

_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}  # fmt: skip

_MAX_KEYS_LISTED = 10


def load_torchvision_weights(model, path):
    """Sets `model`'s weights from a torchvision ResNet state dict saved as .pth, .pt or .safetensors.

    The model must have the checkpoint's architecture and layer names, e.g.
    `resnet18(1000, (224, 224, 3))` for torchvision's ImageNet ResNet-18. A
    `module.` prefix (DataParallel) and a {"state_dict": ...} wrapper are accepted.

    Raises:
        FileNotFoundError: no file at `path`.
        ImportError: a .pth/.pt file and no torch installed.
        ValueError: unreadable file, or keys or shapes that do not match `model`.
    """
    load_state_dict(model, read_state_dict(path), source=str(path))


def read_state_dict(path):
    """{key: numpy array} from a .pth/.pt (torch.save) or .safetensors file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}: check the path.")
    if path.suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    raise ValueError(
        f"Cannot tell the format of {path}: expected a name ending in "
        f"{', '.join(TORCH_SUFFIXES)} or {SAFETENSORS_SUFFIX}."
    )


def load_state_dict(model, state_dict, source="the state dict", fixed_layers=()):
    """Assigns a PyTorch-layout `state_dict` to the Conv2D, Dense and BatchNormalization layers.

    Every key is checked before any weight changes, so a failed load leaves
    `model` as it was.

    Args:
        source: what the state dict came from, for error messages.
        fixed_layers: names of layers whose weights belong to the architecture
            and have no state-dict entry (they keep their values).
    """
    state = _strip_prefix(
        {key: value for key, value in state_dict.items() if not key.endswith("num_batches_tracked")},
        "module.",
    )
    targets = _parameters(model, fixed_layers)
    _check_keys(set(state), set(targets), source)
    updates = [_keras_value(key, state[key], *targets[key], source) for key in targets]
    for variable, value in updates:
        variable.assign(value)


def _parameters(model, fixed_layers):
    """{state-dict key: (Keras variable, axes)} for every layer that holds PyTorch parameters."""
    layer_parameters = (
        (keras.layers.Conv2D, _CONV_PARAMETERS),
        (keras.layers.Dense, _DENSE_PARAMETERS),
        (keras.layers.BatchNormalization, _BATCH_NORM_PARAMETERS),
    )
    targets = {}
    for layer in model.layers:
        if layer.name in fixed_layers:
            continue
        for layer_type, parameters in layer_parameters:
            if isinstance(layer, layer_type):
                for torch_name, attribute, axes in parameters:
                    variable = getattr(layer, attribute)
                    if variable is not None:
                        targets[f"{layer.name}.{torch_name}"] = (variable, axes)
    return targets


def _keras_value(key, value, variable, axes, source):
    value = np.asarray(value)
    expected = tuple(int(variable.shape[axis]) for axis in np.argsort(axes))  # in PyTorch layout
    if value.shape != expected:
        raise ValueError(
            f"{source}: tensor {key!r} has shape {value.shape}, the model expects {expected}. "
            "Build the model with the checkpoint's architecture and number of classes."
        )
    return variable, np.transpose(value, axes).astype(variable.dtype)


def _check_keys(found, expected, source):
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the model: {_listing('missing', missing)}; "
            f"{_listing('unexpected', unexpected)}. Build the model the checkpoint was saved "
            "from (e.g. resnet18 vs resnet34, ImageNet vs CIFAR stem)."
        )


def _listing(kind, keys):
    shown = ", ".join(keys[:_MAX_KEYS_LISTED])
    more = f" and {len(keys) - _MAX_KEYS_LISTED} more" if len(keys) > _MAX_KEYS_LISTED else ""
    return f"{kind} keys ({len(keys)})" + (f": {shown}{more}" if keys else "")


def _strip_prefix(state, prefix):
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _read_torch(path):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading {path} needs PyTorch: `pip install torch`, or convert the file to "
            f"{SAFETENSORS_SUFFIX}, which needs no extra package."
        ) from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (pickle, zip, EOF, runtime) for bad files
        raise ValueError(
            f"Cannot read {path} as a PyTorch checkpoint ({type(error).__name__}: {error}). "
            "Check that the file is complete, and that it holds a state dict "
            "(torch.save(model.state_dict(), path)), not a whole pickled model."
        ) from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(
        isinstance(value, torch.Tensor) for value in checkpoint.values()
    ):
        raise ValueError(
            f"{path} does not hold a state dict (a dict of tensors): "
            "save it with torch.save(model.state_dict(), path)."
        )
    return {key: _to_numpy(value) for key, value in checkpoint.items()}


def _to_numpy(tensor):
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()  # numpy lacks bfloat16


def _read_safetensors(path):
    """The safetensors format: u64 header length, JSON header, then raw little-endian tensors."""
    data = path.read_bytes()
    try:
        (header_length,) = struct.unpack("<Q", data[:8])
        if header_length > len(data) - 8:
            raise ValueError(f"header length {header_length} exceeds the file size {len(data)}")
        header = json.loads(data[8 : 8 + header_length])
        header.pop("__metadata__", None)
        body = memoryview(data)[8 + header_length :]
        return {name: _safetensors_tensor(body, entry) for name, entry in header.items()}
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"Cannot read {path} as a .safetensors file ({error}). Check that the file is "
            "complete, or save it again."
        ) from error


def _safetensors_tensor(body, entry):
    start, end = entry["data_offsets"]
    if not 0 <= start <= end <= len(body):
        raise ValueError(f"data offsets {start}..{end} lie outside the {len(body)} data bytes")
    raw = body[start:end]
    if entry["dtype"] == "BF16":  # bfloat16 is the top half of a float32
        values = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    elif entry["dtype"] in _SAFETENSORS_DTYPES:
        values = np.frombuffer(raw, _SAFETENSORS_DTYPES[entry["dtype"]])
    else:
        raise ValueError(f"unsupported dtype {entry['dtype']!r}")
    return values.reshape(entry["shape"])
