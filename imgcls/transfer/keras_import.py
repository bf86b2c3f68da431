"""Keras Applications' ImageNet ResNet50 weights as Flax variables for `resnet50_v1`.

`load_keras_resnet50(path)` reads a Keras ResNet50 weights file with h5py (no Keras or
TensorFlow needed) and returns {'params': ..., 'batch_stats': ...} for
`create_model({'name': 'resnet50_v1'}, num_classes=1000)`. Both files Keras writes are read:

- the legacy HDF5 layout of the downloadable `resnet50_weights_tf_dim_ordering_tf_kernels.h5`
  (what `keras.applications.ResNet50(weights='imagenet')` caches in ~/.keras/models/) and of
  Keras 2's `save_weights('x.h5')` / `model.save('x.h5')`: one group per layer name with a
  'weight_names' attribute, the arrays at <layer>/<weight name>, e.g. conv1_conv/conv1_conv/
  kernel:0 (under 'model_weights' for a whole saved model);
- Keras 3's `model.save_weights('x.weights.h5')`: layers/<group>/vars/0, 1, ..., the group named
  after the layer class (conv2d_7) and the Keras layer name in the 'name' attribute of `vars`.

Keras' ResNet50 expects BGR images with the 'caffe' preprocessing x_bgr - [103.939, 116.779,
123.68] (no scaling). The imported model takes RGB instead (the first conv kernel's input-channel
axis is reversed), and with config.dataset.mean = KERAS_RESNET50_MEAN and config.dataset.std =
KERAS_RESNET50_STD, `imgcls.data.normalize` ((uint8 / 255 - mean) / std) computes x_rgb - the
same means, so the Flax logits equal Keras' (tests/test_keras_import.py: max |diff| ~2e-5 on
logits up to ~40).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from imgcls.models import create_model
from imgcls.transfer import keras_weights

# config.dataset.mean / std, in [0, 1] units and RGB order, that reproduce caffe preprocessing.
KERAS_RESNET50_MEAN = (123.68 / 255.0, 116.779 / 255.0, 103.939 / 255.0)
KERAS_RESNET50_STD = (1.0 / 255.0,) * 3

KERAS_RESNET50_FILE = keras_weights.FILE
MODEL_NAME = "resnet50_v1"
NUM_CLASSES = 1000
STAGE_SIZES = (3, 4, 6, 3)  # Keras stacks conv2 .. conv5
BLOCK = "BottleneckResNetV1Block"

# The Keras weights of each layer kind, in the order the layer stores them, and where each goes.
_ROLES = {
    "conv": (("kernel", "params", "kernel"), ("bias", "params", "bias")),
    "dense": (("kernel", "params", "kernel"), ("bias", "params", "bias")),
    "bn": (
        ("gamma", "params", "scale"),
        ("beta", "params", "bias"),
        ("moving_mean", "batch_stats", "mean"),
        ("moving_variance", "batch_stats", "var"),
    ),
}


def keras_resnet_v1_layers(stage_sizes=STAGE_SIZES) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Keras layer name -> (kind, Flax module path) for Keras' ResNet v1 with these stages."""
    layers = {"conv1_conv": ("conv", ("conv_init",)), "conv1_bn": ("bn", ("bn_init",))}
    index = 0
    for stage, size in enumerate(stage_sizes, start=2):
        for block in range(1, size + 1):
            module = f"{BLOCK}_{index}"
            for k in (0, 1, 2, 3) if block == 1 else (1, 2, 3):
                conv, bn = (
                    ("conv_proj", "norm_proj")
                    if k == 0
                    else (f"Conv_{k - 1}", f"BatchNorm_{k - 1}")
                )
                layers[f"conv{stage}_block{block}_{k}_conv"] = ("conv", (module, conv))
                layers[f"conv{stage}_block{block}_{k}_bn"] = ("bn", (module, bn))
            index += 1
    layers["predictions"] = ("dense", ("head",))
    return layers


def _attr_list(group, name) -> list[str]:
    """A legacy string-list attribute, which Keras splits into name0, name1, ... when large."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_legacy(root) -> dict[str, list[tuple[str, np.ndarray]]]:
    if "layer_names" not in root.attrs and "layer_names0" not in root.attrs:
        root = root["model_weights"]
    weights = {}
    for layer in _attr_list(root, "layer_names"):
        names = _attr_list(root[layer], "weight_names")
        if names:
            weights[layer] = [(n, np.asarray(root[layer][n][()])) for n in names]
    return weights


def _read_keras3(root, path) -> dict[str, list[tuple[str, np.ndarray]]]:
    weights = {}

    def visit(name, obj):
        if name.rsplit("/", 1)[-1] != "vars" or not hasattr(obj, "keys") or len(obj) == 0:
            return
        if "name" not in obj.attrs:
            raise ValueError(
                f"{path} has no Keras layer name at {name}/ (Keras 3 files written before layer "
                "names were recorded). Re-save it with a current Keras, or pass the legacy "
                f"{KERAS_RESNET50_FILE}."
            )
        layer = obj.attrs["name"]
        layer = layer.decode("utf8") if isinstance(layer, bytes) else str(layer)
        if layer in weights:
            raise ValueError(f"{path} holds two Keras layers named {layer!r}.")
        weights[layer] = [(k, np.asarray(obj[k][()])) for k in sorted(obj, key=int)]

    root["layers"].visititems(visit)
    return weights


def read_keras_weights(path: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Keras layer name -> [(weight name, array)] in the layer's order, from either layout."""
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py comes with TensorFlow and Keras
        raise ImportError("Reading Keras weights needs h5py: pip install h5py.") from e
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Keras weights file {path!r} does not exist.")
    try:
        with h5py.File(path, "r") as f:
            if "layers" in f:
                return _read_keras3(f, path)
            if {"layer_names", "layer_names0"} & set(f.attrs) or "model_weights" in f:
                return _read_legacy(f)
    except OSError as e:
        raise ValueError(f"{path} is not an HDF5 file ({e}).") from e
    raise ValueError(
        f"{path} is not a Keras weights file: it has neither Keras 3's 'layers' group nor the "
        "legacy 'layer_names' attribute."
    )


def _ordered(layer: str, kind: str, entries) -> list[np.ndarray]:
    """The layer's arrays in `_ROLES` order: by weight name where the names say, else as stored."""
    roles = [role for role, _, _ in _ROLES[kind]]
    if len(entries) != len(roles):
        raise ValueError(
            f"Keras layer {layer!r} has {len(entries)} weights "
            f"({', '.join(name for name, _ in entries)}); "
            f"a ResNet50 {kind} layer has {len(roles)} ({', '.join(roles)})."
        )
    base = [name.rsplit("/", 1)[-1].split(":")[0] for name, _ in entries]
    if sorted(base) == sorted(roles):
        return [entries[base.index(role)][1] for role in roles]
    return [array for _, array in entries]


def keras_to_flax(weights, model, image_size: int = 224) -> dict:
    """Maps Keras ResNet v1 weights {layer: [(name, array)]} onto `model`'s Flax variables."""
    layers = keras_resnet_v1_layers(model.stage_sizes)
    missing = [name for name in layers if name not in weights]
    extra = sorted(name for name in weights if name not in layers)
    if missing or extra:
        raise ValueError(
            f"The Keras weights are not Keras Applications' ResNet50 ({MODEL_NAME}): "
            + (f"missing layer(s) {', '.join(missing)}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected layer(s) {', '.join(extra)}" if extra else "")
            + "."
        )
    flat = {}
    for layer, (kind, module) in layers.items():
        arrays = _ordered(layer, kind, weights[layer])
        for (_, collection, leaf), array in zip(_ROLES[kind], arrays, strict=True):
            flat[(collection, *module, leaf)] = np.asarray(array, np.float32)
    # Keras' first conv reads BGR; reversing its input channels makes the model read RGB.
    kernel = ("params", "conv_init", "kernel")
    flat[kernel] = np.ascontiguousarray(flat[kernel][:, :, ::-1, :])

    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, train=False))
    expected = traverse_util.flatten_dict(jax.tree.map(lambda s: s.shape, shapes))
    unassigned = sorted("/".join(k) for k in expected if k not in flat)
    unknown = sorted("/".join(k) for k in flat if k not in expected)
    if unassigned or unknown:
        raise ValueError(
            f"Keras -> Flax mapping does not cover {type(model).__name__}: unassigned Flax "
            f"variables {unassigned or 'none'}; variables the model lacks {unknown or 'none'}."
        )
    wrong = [
        f"{'/'.join(k)}: file {flat[k].shape}, model {expected[k]}"
        for k in expected
        if flat[k].shape != tuple(expected[k])
    ]
    if wrong:
        raise ValueError(
            f"Keras weights have the wrong shapes for {MODEL_NAME} with {NUM_CLASSES} classes: "
            + "; ".join(wrong)
        )
    return traverse_util.unflatten_dict(flat)


def load_keras_resnet50(h5_path: str | None = None) -> dict:
    """Flax variables {'params', 'batch_stats'} (numpy float32) of `resnet50_v1`, 1000 classes.

    `h5_path` is a Keras ResNet50 weights file in either layout (module docstring); None uses the
    one Keras caches in ~/.keras/models/, downloading it there first if it is not cached
    (imgcls.transfer.keras_weights). The model then takes RGB images normalized with
    KERAS_RESNET50_MEAN / KERAS_RESNET50_STD.
    """
    if h5_path is None:
        h5_path = keras_weights.resnet50_weights()
    model = create_model({"name": MODEL_NAME}, num_classes=NUM_CLASSES, axis_name=None)
    return keras_to_flax(read_keras_weights(os.fspath(h5_path)), model)
