"""Tests for imgcls.models: shapes, exact parameter counts, init, precision, registry errors."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from imgcls.models import (
    CNN,
    MODELS,
    BottleneckResNetBlock,
    ResNet,
    ResNet18,
    ResNetBlock,
    count_params,
    create_model,
)


def _config(**kwargs):
    config = ml_collections.ConfigDict()
    for key, value in kwargs.items():
        config[key] = value
    return config


def test_cnn_output_shape_and_dtype():
    model = create_model(_config(name="cnn", features=(8, 16), dense_features=16), num_classes=10)
    assert isinstance(model, CNN)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    logits = model.apply(variables, x)
    assert logits.shape == (2, 10)
    assert logits.dtype == jnp.float32
    assert "head" in variables["params"]


def test_cnn_three_layers_on_8x8():
    model = CNN(num_classes=3, features=(4, 4, 4), dense_features=8)
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, mutable=["intermediates"])
    # 8 -> 4 -> 2 -> 1 with SAME pooling.
    assert state["intermediates"]["features"][0].shape == (2, 1, 1, 4)


@pytest.fixture(scope="module")
def resnet18_small():
    """A narrow resnet18 with the 32x32 stem, shared by the tests that only read it."""
    model = create_model(_config(name="resnet18", stem="small", num_filters=8), num_classes=10)
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    return model, x, model.init(jax.random.key(0), x)


@pytest.fixture(scope="module")
def resnet50_tiny():
    """A narrow resnet50 (bottleneck blocks) with the imagenet stem."""
    model = create_model(_config(name="resnet50", num_filters=4), num_classes=7)
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    return model, x, model.init(jax.random.key(0), x)


def test_resnet18_small_stem_shape(resnet18_small):
    model, x, variables = resnet18_small
    logits, state = model.apply(variables, x, mutable=["intermediates"])
    assert logits.shape == (2, 10)
    assert logits.dtype == jnp.float32
    # No downsampling in the small stem: 32 -> 32 -> 16 -> 8 -> 4 over the four stages.
    assert state["intermediates"]["features"][0].shape == (2, 4, 4, 64)
    assert "batch_stats" in variables
    assert variables["params"]["head"]["kernel"].shape == (64, 10)


def test_resnet50_bottleneck_imagenet_stem_shape(resnet50_tiny):
    model, x, variables = resnet50_tiny
    logits, state = model.apply(variables, x, mutable=["intermediates"])
    assert logits.shape == (2, 7)
    assert logits.dtype == jnp.float32
    # 64 -> 32 (conv) -> 16 (pool) -> 16, 8, 4, 2; bottleneck output width is 4 * 4 * 8.
    assert state["intermediates"]["features"][0].shape == (2, 2, 2, 128)
    assert "BottleneckResNetBlock_0" in variables["params"]


@pytest.mark.parametrize("name, expected", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_parameter_counts_match_torchvision(name, expected):
    model = create_model(_config(name=name), num_classes=1000)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    assert count_params(shapes["params"]) == expected


@pytest.mark.parametrize(
    "fixture, block, num_blocks",
    [("resnet18_small", "ResNetBlock_", 8), ("resnet50_tiny", "BottleneckResNetBlock_", 16)],
)
def test_last_batchnorm_scale_of_each_block_is_zero(request, fixture, block, num_blocks):
    params = request.getfixturevalue(fixture)[2]["params"]
    blocks = {k: v for k, v in params.items() if k.startswith(block)}
    assert len(blocks) == num_blocks
    for block_params in blocks.values():
        bns = sorted(
            (k for k in block_params if re.fullmatch(r"BatchNorm_\d+", k)),
            key=lambda k: int(k.split("_")[1]),
        )
        *others, last = bns
        np.testing.assert_array_equal(block_params[last]["scale"], 0.0)
        for other in others:
            np.testing.assert_array_equal(block_params[other]["scale"], 1.0)
        if "norm_proj" in block_params:
            np.testing.assert_array_equal(block_params["norm_proj"]["scale"], 1.0)


@pytest.mark.parametrize("block_cls, filters", [(ResNetBlock, 8), (BottleneckResNetBlock, 2)])
def test_fresh_block_is_identity_on_residual_path(block_cls, filters):
    block = block_cls(
        filters,
        conv=functools.partial(nn.Conv, use_bias=False),
        norm=functools.partial(nn.BatchNorm, use_running_average=False, axis_name=None),
        act=nn.relu,
    )
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 8))
    variables = block.init(jax.random.key(0), x)
    y, _ = block.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, jax.nn.relu(x), atol=1e-6)


@pytest.mark.parametrize(
    "config",
    [
        _config(name="cnn", features=(4, 8), dense_features=8),
        _config(name="resnet18", stem="small", num_filters=4),
    ],
)
def test_half_precision(config):
    model = create_model(config, num_classes=5, half_precision=True)
    assert model.dtype == jnp.bfloat16
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)
    for leaf in jax.tree.leaves(variables["params"]):
        assert leaf.dtype == jnp.float32
    logits, state = model.apply(variables, x, mutable=["intermediates"])
    assert logits.dtype == jnp.float32
    assert state["intermediates"]["features"][0].dtype == jnp.bfloat16


def test_unknown_model_name():
    with pytest.raises(ValueError) as info:
        create_model(_config(name="resnet19"), num_classes=10)
    message = str(info.value)
    assert "'resnet19'" in message
    assert "config.model.name" in message
    for name in MODELS:
        assert name in message


def test_unknown_model_key():
    with pytest.raises(ValueError) as info:
        create_model(_config(name="cnn", featurs=(8,), dropout=0.1), num_classes=10)
    message = str(info.value)
    assert "featurs" in message and "dropout" in message
    assert "'cnn'" in message
    for key in ("features", "dense_features", "dropout_rate"):
        assert key in message


def test_reserved_key_and_bad_stem():
    with pytest.raises(ValueError, match="num_classes"):
        create_model(_config(name="cnn", num_classes=3), num_classes=10)
    with pytest.raises(ValueError, match="imagenet, small"):
        create_model(_config(name="resnet18", stem="tiny"), num_classes=10)


def test_plain_mapping_lists_and_overrides():
    model = create_model(
        {"name": "resnet18", "num_filters": 4, "stem": "small"}, num_classes=2, axis_name=None
    )
    assert isinstance(model, ResNet) and model.axis_name is None
    model = create_model({"name": "cnn", "features": [4, 8]}, num_classes=2)
    assert model.features == (4, 8)


def test_dropout_train_vs_eval():
    model = CNN(num_classes=4, features=(4,), dense_features=32, dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    eval_a = model.apply(variables, x)
    eval_b = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    train_b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(train_a, eval_a)
    assert not np.allclose(train_a, train_b)


def test_features_sow_only_when_mutable():
    model = CNN(num_classes=4, features=(4, 8), dense_features=8)
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    assert "intermediates" not in variables
    logits, state = model.apply(variables, x, mutable=["intermediates"])
    features = state["intermediates"]["features"]
    assert isinstance(features, tuple) and features[0].shape == (2, 2, 2, 8)
    np.testing.assert_array_equal(logits, model.apply(variables, x))


def test_batchnorm_train_inside_shard_map():
    mesh = Mesh(jax.devices()[:1], ("data",))
    model = ResNet18(num_classes=3, num_filters=4, stem="small", axis_name="data")
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)

    def step(variables, x):
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return logits, updates["batch_stats"]

    sharded = jax.jit(
        jax.shard_map(step, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P()))
    )
    logits, batch_stats = sharded(variables, x)
    assert logits.shape == (4, 3)
    assert np.all(np.isfinite(logits))
    old = traverse_util.flatten_dict(variables["batch_stats"])
    new = traverse_util.flatten_dict(batch_stats)
    assert old.keys() == new.keys()
    # Running mean of the stem BN moves from 0 towards the batch mean (momentum 0.9).
    stem_mean = new[("bn_init", "mean")]
    np.testing.assert_array_equal(old[("bn_init", "mean")], 0.0)
    assert np.all(np.abs(stem_mean) > 0)
    assert any(not np.array_equal(old[k], new[k]) for k in old)


@pytest.mark.parametrize(
    "shape,window,strides,padding",
    [
        ((4, 28, 28, 3), (2, 2), (2, 2), "SAME"),  # the cnn: 28 -> 14 -> 7 -> 4
        ((4, 7, 7, 3), (2, 2), (2, 2), "SAME"),
        ((2, 9, 6, 2), (2, 2), (2, 2), "SAME"),
        ((2, 15, 13, 4), (3, 3), (2, 2), "SAME"),  # the ResNet stem
        ((2, 16, 16, 4), (3, 3), (2, 2), ((1, 1), (1, 1))),  # resnet_v1's (Keras) stem
        ((2, 31, 31, 3), (2, 2), (2, 2), "VALID"),  # airbench: 31 -> 15 -> 7 -> 3, the last
        ((2, 7, 9, 3), (2, 2), (2, 2), "VALID"),  # row and column in no window
        ((2, 7, 7, 3), (3, 3), (3, 3), "VALID"),  # airbench's final 3x3 pool (7 -> 2)
    ],
)
def test_max_pool_equals_flax_in_values_and_gradients_with_ties(shape, window, strides, padding):
    """Inputs after ReLU are full of ties (zeros, and equal positives): the gradient must go
    where nn.max_pool's select-and-scatter sends it, not be split between tied elements."""
    from imgcls.models.pooling import max_pool

    rng = np.random.default_rng(0)
    x = jnp.asarray(np.maximum(rng.integers(-2, 3, shape), 0).astype(np.float32))
    ours, our_vjp = jax.vjp(lambda v: max_pool(v, window, strides, padding), x)
    flax, flax_vjp = jax.vjp(lambda v: nn.max_pool(v, window, strides, padding), x)
    np.testing.assert_array_equal(ours, flax)
    g = jnp.asarray(rng.normal(size=flax.shape).astype(np.float32))
    if window == strides:  # every element in one window: exactly the same gradient
        np.testing.assert_array_equal(our_vjp(g)[0], flax_vjp(g)[0])
    else:  # overlapping windows: the same routing, shares added in another order
        np.testing.assert_allclose(our_vjp(g)[0], flax_vjp(g)[0], atol=1e-6)
    assert int((our_vjp(g)[0] != 0).sum()) == int((flax_vjp(g)[0] != 0).sum())
