"""WideResNet and PreAct ResNet (sizes against the papers), and stochastic depth (drop-path)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgcls import models
from imgcls.models.drop_path import DropPath, block_rates


def param_count(name, **kwargs):
    model = models.create_model({"name": name, **kwargs}, 10)
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros((1, 32, 32, 3))
    )
    return models.count_params(shapes["params"])


@pytest.mark.parametrize(
    "name, kwargs, paper",
    [
        ("wrn28_10", {}, 36.5e6),  # Zagoruyko & Komodakis 2016, table 1/4: 36.5M
        ("wrn16_8", {}, 11.0e6),  # 11.0M
    ],
)
def test_wide_resnet_sizes_match_the_paper(name, kwargs, paper):
    count = param_count(name, **kwargs)
    assert abs(count - paper) / paper < 0.005  # the paper rounds to 0.1M
    assert count == {"wrn28_10": 36_479_194, "wrn16_8": 10_961_370}[name]


def test_preact_resnet18_size():
    """The widely used CIFAR PreActResNet18 has 11,171,146 parameters; ours adds the final
    BN (512 scales + 512 offsets) that He et al.'s pre-activation design ends with."""
    assert param_count("preact_resnet18", stem="small") == 11_171_146 + 2 * 512


def random_variables(model, x, seed=0):
    """Variables of `model` drawn with numpy from jax.eval_shape's shapes: compiling the
    initialisers (threefry per array) costs XLA:CPU seconds per model. The BatchNorm
    variances are 1; every residual branch is non-zero (unlike a fresh ResNet block's)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)

    def draw(path, shape):
        if jax.tree_util.keystr(path).endswith("['var']"):
            return np.ones(shape.shape, np.float32)
        return (0.3 * rng.normal(size=shape.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def outputs(name, **kwargs):
    """(eval logits, train logits with dropout key 0, with key 1) of a tiny model with
    random_variables, eval and train compiled together (eager Flax compiles op by op)."""
    model = models.create_model({"name": name, **kwargs}, 3, axis_name=None)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 16, 16, 3)), jnp.float32)
    variables = random_variables(model, x)

    @jax.jit
    def run(key):
        rngs = {"dropout": key}
        train, _ = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
        return model.apply(variables, x), train

    (logits, train_0), (_, train_1) = run(jax.random.key(0)), run(jax.random.key(1))
    return np.asarray(logits), np.asarray(train_0), np.asarray(train_1)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("wrn16_8", {"depth": 10, "widen_factor": 1, "dropout_rate": 0.3}),
        ("preact_resnet18", {"num_filters": 4, "stage_sizes": (1, 1), "stem": "imagenet"}),
    ],
)
def test_forward_and_drop_path(name, kwargs):
    logits, train_0, train_1 = outputs(name, drop_path_rate=0.5, **kwargs)
    assert logits.shape == train_0.shape == (6, 3) and logits.dtype == np.float32
    assert np.isfinite(logits).all() and np.isfinite(train_0).all()
    assert not np.array_equal(train_0, train_1)  # drop-path (and dropout) draw per key


def test_wide_resnet_depth_must_be_6n_plus_4():
    with pytest.raises(ValueError, match="depth 27.*6n \\+ 4"):
        models.create_model({"name": "wrn28_10", "depth": 27}, 10)


def test_drop_path_rates_grow_linearly_with_depth():
    assert block_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert block_rates(0.3, 1) == [0.3]


def test_drop_path_is_identity_at_eval_and_drops_the_rate_in_training():
    layer = DropPath(rate=0.3)
    x = jnp.ones((20_000, 2, 2, 1))
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
    out = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}))
    dropped = (out == 0).all(axis=(1, 2, 3))
    kept = ~dropped
    # whole examples: every value of an example is dropped, or all are scaled by 1 / (1 - rate)
    assert ((out == 0) == dropped[:, None, None, None]).all()
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    assert dropped.mean() == pytest.approx(0.3, abs=4 * np.sqrt(0.3 * 0.7 / 20_000))


def test_resnet_with_drop_path_evaluates_as_without():
    kwargs = {"num_filters": 4, "stem": "small", "stage_sizes": (1, 1)}
    plain = outputs("resnet18", **kwargs)
    dropping = outputs("resnet18", drop_path_rate=0.5, **kwargs)
    np.testing.assert_array_equal(dropping[0], plain[0])  # identity at eval
    assert np.array_equal(plain[1], plain[2])  # nothing random without drop-path
    assert not np.array_equal(dropping[1], dropping[2])
    model = models.create_model({"name": "resnet18", **kwargs}, 3)
    other = models.create_model({"name": "resnet18", "drop_path_rate": 0.5, **kwargs}, 3)
    x = jnp.zeros((1, 16, 16, 3))  # and the same variables: drop-path has none
    assert jax.tree.structure(jax.eval_shape(other.init, jax.random.key(0), x)) == (
        jax.tree.structure(jax.eval_shape(model.init, jax.random.key(0), x))
    )
