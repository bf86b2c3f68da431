"""imgcls.transfer.keras_import and resnet50_v1: Keras ResNet50 weights give Keras' logits.

The Keras model is randomly initialised (no download): its BatchNorm statistics and affine
parameters and its conv biases are randomized, since Keras initialises them to no-ops.
"""

import os

import h5py
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import load_config

from imgcls import models
from imgcls.data.normalize import normalize
from imgcls.models import ResNetV1, count_params, create_model
from imgcls.transfer import keras_weights
from imgcls.transfer.keras_import import (
    KERAS_RESNET50_FILE,
    KERAS_RESNET50_MEAN,
    KERAS_RESNET50_STD,
    load_keras_resnet50,
)

keras = pytest.importorskip("keras")

ATOL = 1e-4  # absolute, on logits of magnitude up to ~40 (measured max |diff| ~2e-5)


@pytest.fixture(scope="module")
def keras_resnet50(tmp_path_factory):
    """Keras' ResNet50 (logits) with random BatchNorm and biases, saved as Keras 3 .weights.h5."""
    model = keras.applications.ResNet50(weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, shape),  # gamma
                    rng.normal(0.0, 0.1, shape),  # beta
                    rng.normal(0.0, 0.1, shape),  # moving mean
                    rng.uniform(0.5, 2.0, shape),  # moving variance
                ]
            )
        elif isinstance(layer, keras.layers.Conv2D):
            layer.set_weights(
                [keras.ops.convert_to_numpy(layer.kernel), rng.normal(0.0, 0.1, layer.bias.shape)]
            )
    path = tmp_path_factory.mktemp("keras") / "resnet50.weights.h5"
    model.save_weights(str(path))
    return model, str(path)


@pytest.fixture(scope="module")
def imported(keras_resnet50):
    return load_keras_resnet50(keras_resnet50[1])


def _keras_weights(model):
    """{layer: [(Keras 2 weight name, array)]} for the layers that have weights."""
    return {
        layer.name: [
            (f"{layer.name}/{w.name}:0", keras.ops.convert_to_numpy(w)) for w in layer.weights
        ]
        for layer in model.layers
        if layer.weights
    }


def _write_legacy(path, layer_names, weights):
    """Keras 2's HDF5 layout, as in resnet50_weights_tf_dim_ordering_tf_kernels.h5."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in layer_names:
            group = f.create_group(layer)
            entries = weights.get(layer, [])
            group.attrs["weight_names"] = np.array([n.encode() for n, _ in entries], dtype="S")
            for name, array in entries:
                group.create_dataset(name, data=array)


def _assert_same_variables(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


def test_resnet50_v1_matches_keras_logits(keras_resnet50, imported):
    keras_model, _ = keras_resnet50
    model = create_model(ml_collections.ConfigDict({"name": "resnet50_v1"}), num_classes=1000)
    assert isinstance(model, ResNetV1)
    assert count_params(imported) == keras_model.count_params() == 25_636_712
    assert set(imported) == {"params", "batch_stats"} and "head" in imported["params"]

    forward = jax.jit(
        lambda v, x: model.apply(
            v, normalize(x, KERAS_RESNET50_MEAN, KERAS_RESNET50_STD), train=False
        )
    )
    # 160: odd feature maps (5x5 at the end) check the padding; Keras needs a model per size.
    keras_160 = keras.applications.ResNet50(
        weights=None, input_shape=(160, 160, 3), classifier_activation=None
    )
    keras_160.set_weights(keras_model.get_weights())
    rng = np.random.default_rng(1)
    for size, reference in ((224, keras_model), (160, keras_160)):
        images = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
        caffe = keras.applications.resnet50.preprocess_input(images.astype(np.float32))
        expected = keras.ops.convert_to_numpy(reference(caffe, training=False))
        logits = np.asarray(forward(imported, images))
        assert logits.dtype == np.float32 and logits.shape == (2, 1000)
        assert np.abs(expected).max() > 5.0  # the comparison is not between near-zero outputs
        np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)
        assert (logits.argmax(-1) == expected.argmax(-1)).all()


def test_legacy_layouts_and_keras_cache(keras_resnet50, imported, tmp_path, monkeypatch):
    keras_model, _ = keras_resnet50
    legacy = tmp_path / "models" / KERAS_RESNET50_FILE
    legacy.parent.mkdir()
    _write_legacy(legacy, [layer.name for layer in keras_model.layers], _keras_weights(keras_model))
    _assert_same_variables(load_keras_resnet50(str(legacy)), imported)

    # h5_path=None reads the file Keras caches in $KERAS_HOME/models (default ~/.keras/models).
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _assert_same_variables(load_keras_resnet50(), imported)

    # Keras 3's model.save('x.h5') writes the legacy layout under 'model_weights'.
    full = tmp_path / "full_model.h5"
    keras_model.save(str(full))
    _assert_same_variables(load_keras_resnet50(str(full)), imported)


def test_missing_file_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        load_keras_resnet50(str(tmp_path / "nowhere.h5"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    if os.path.isfile(os.path.join("/tmp", ".keras", "models", KERAS_RESNET50_FILE)):
        pytest.skip("Keras' /tmp/.keras cache holds the ResNet50 weights")
    # Not cached: downloaded, here from a port nobody listens on (never the internet).
    monkeypatch.setattr(keras_weights, "URL", "http://127.0.0.1:9/" + KERAS_RESNET50_FILE)
    with pytest.raises(keras_weights.DownloadError) as info:
        load_keras_resnet50()
    assert f"put it at {tmp_path / 'models' / KERAS_RESNET50_FILE}" in str(info.value)


def test_wrong_file_errors(keras_resnet50, tmp_path):
    keras_model, _ = keras_resnet50
    names = [layer.name for layer in keras_model.layers]
    weights = _keras_weights(keras_model)

    # A ResNet with another layer set: conv4 with 5 blocks, conv5 with 4.
    other = {k: v for k, v in weights.items() if not k.startswith("conv4_block6")}
    other["conv5_block4_1_conv"] = weights["conv5_block3_1_conv"]
    path = tmp_path / "other.h5"
    _write_legacy(path, [*names, "conv5_block4_1_conv"], other)
    with pytest.raises(ValueError) as info:
        load_keras_resnet50(str(path))
    message = str(info.value)
    assert "missing layer(s) conv4_block6_1_conv" in message
    assert "conv4_block6_3_bn" in message
    assert "unexpected layer(s) conv5_block4_1_conv" in message

    # Another number of classes: the shape error names the Flax variable and both shapes.
    head = dict(weights, predictions=[(n, a[..., :10]) for n, a in weights["predictions"]])
    _write_legacy(path, names, head)
    with pytest.raises(ValueError, match=r"head/kernel: file \(2048, 10\), model \(2048, 1000\)"):
        load_keras_resnet50(str(path))

    # A BatchNorm without its moving statistics.
    _write_legacy(path, names, dict(weights, conv1_bn=weights["conv1_bn"][:2]))
    with pytest.raises(ValueError, match="'conv1_bn' has 2 weights"):
        load_keras_resnet50(str(path))

    # A Keras 3 file of another model; an HDF5 file that is not Keras'; not HDF5 at all.
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense_out")])
    small.save_weights(str(tmp_path / "small.weights.h5"))
    with pytest.raises(ValueError, match=r"missing layer\(s\) conv1_conv.*unexpected.*dense_out"):
        load_keras_resnet50(str(tmp_path / "small.weights.h5"))
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras weights file"):
        load_keras_resnet50(str(tmp_path / "plain.h5"))
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        load_keras_resnet50(str(tmp_path / "text.h5"))


@pytest.mark.parametrize(
    "config",
    [
        {"name": "resnet18", "stem": "small", "num_filters": 4, "stage_sizes": (1, 1)},
        {"name": "resnet50_v1", "num_filters": 4, "stage_sizes": (1, 1)},
    ],
    ids=["resnet18_v1.5", "resnet_v1"],
)
def test_frozen_backbone_keeps_batch_stats(config):
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    frozen = create_model({**config, "frozen_backbone": True}, num_classes=3)
    variables = frozen.init(jax.random.key(0), images, train=False)
    stats = variables["batch_stats"]
    # Keep a per-device BatchNorm axis ('data'): unused, so this runs outside shard_map.
    logits, state = frozen.apply(variables, images, train=True, mutable=["batch_stats"])
    _assert_same_variables(state["batch_stats"], stats)
    np.testing.assert_array_equal(logits, frozen.apply(variables, images, train=False))

    trained = create_model(config, num_classes=3, axis_name=None)
    _, state = trained.apply(variables, images, train=True, mutable=["batch_stats"])
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state["batch_stats"], stats)
    assert all(jax.tree.leaves(changed))
    assert jnp.isfinite(logits).all()


def test_warm_start_from_keras_weights(keras_resnet50, imported, tmp_path):
    """config.init_from='keras:<file>' into resnet50_v1 with 5 classes: head fresh, rest Keras'."""
    import optax

    from imgcls import parallel
    from imgcls.training import state as state_lib
    from imgcls.transfer import warm_start

    _, path = keras_resnet50
    config = load_config()
    config.model = ml_collections.ConfigDict({"name": "resnet50_v1"})
    config.init_from = f"keras:{path}"
    model = models.from_config(config, num_classes=5)
    mesh = parallel.create_mesh()
    state = state_lib.create_train_state(0, model, (32, 32, 3), optax.sgd(0.1), mesh)
    head = jax.tree.map(np.asarray, state.params["head"])
    state, report = warm_start.warm_start(config, state, str(tmp_path))

    assert sorted(report["reinitialised"]) == ["params/head/bias", "params/head/kernel"]
    assert report["reinitialised_shapes"]["params/head/kernel"] == {
        "source": [2048, 1000],
        "target": [2048, 5],
    }
    assert report["left_out"] == report["missing"] == []
    assert report["source"] == {"kind": "keras", "path": path, "model": "resnet50_v1"}
    _assert_same_variables(state.params["head"], head)
    backbone = {k: v for k, v in imported["params"].items() if k != "head"}
    _assert_same_variables({k: v for k, v in state.params.items() if k != "head"}, backbone)
    _assert_same_variables(state.batch_stats, imported["batch_stats"])
    assert (tmp_path / warm_start.REPORT_FILE).exists()

    # Another model family (v1.5) is an error that names the mismatch, not a deep traceback.
    config.model.name = "resnet50"
    other = state_lib.create_train_state(
        0, models.from_config(config, 5), (32, 32, 3), optax.sgd(0.1), mesh
    )
    with pytest.raises(ValueError, match=r"only 5 of the \d+ arrays .* Keras' ResNet50 .*v1'"):
        warm_start.warm_start(config, other)
