"""Test-time augmentation: the views each mode averages, on models whose answers are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from imgcls import models
from imgcls.config import schema
from imgcls.evaluation import tta


def images(n=3, h=6, w=5, c=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, h, w, c)), jnp.float32)


def pixels(x):
    """A 'model' whose logits are its input pixels: TTA's output shows which views it took."""
    return x.reshape(x.shape[0], -1)


def test_shift_moves_content_and_reflects_the_border():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    down_right = np.asarray(tta.shift(x, 1))[0, :, :, 0]
    up_left = np.asarray(tta.shift(x, -1))[0, :, :, 0]
    grid = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(down_right[1:, 1:], grid[:-1, :-1])  # moved by (+1, +1)
    np.testing.assert_array_equal(up_left[:-1, :-1], grid[1:, 1:])
    # reflect padding: the row/column that moves in mirrors the one next to the border
    np.testing.assert_array_equal(down_right[0, 1:], grid[1, :-1])
    np.testing.assert_array_equal(up_left[-1, :-1], grid[-2, 1:])


def test_flip_of_a_flip_invariant_model_is_its_own_logits():
    """A model of x + mirror(x) answers a mirror image exactly as the image (addition
    commutes bitwise), so flip TTA must give its logits unchanged, bit for bit."""
    model = models.create_model({"name": "cnn", "features": (4,), "dense_features": 8}, 5)
    x = images(c=1)
    variables = jax.jit(model.init)(jax.random.key(0), x)

    def invariant(v):
        return model.apply(variables, v + tta.mirror(v))

    with_tta = jax.jit(lambda v: tta.logits("flip", invariant, v))
    np.testing.assert_array_equal(with_tta(x), jax.jit(invariant)(x))

    # ... while a model that is not invariant gets the average of the two views
    def plain(v):
        return model.apply(variables, v)

    averaged = jax.jit(lambda v: tta.logits("flip", plain, v))(x)
    views = jax.jit(plain)(x), jax.jit(plain)(x[:, :, ::-1])
    np.testing.assert_allclose(averaged, 0.5 * (views[0] + views[1]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(averaged, views[0])


def test_flip_shift_averages_the_six_stated_views():
    x = images()
    padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    down_right, up_left = padded[:, :6, :5], padded[:, 2:, 2:]

    def mirror_avg(v):
        return 0.5 * (v + v[:, :, ::-1])

    expected = 0.5 * mirror_avg(np.asarray(x)) + 0.25 * (
        mirror_avg(down_right) + mirror_avg(up_left)
    )
    got = tta.flip_shift(pixels, x)
    np.testing.assert_allclose(got, expected.reshape(3, -1), rtol=1e-6)
    np.testing.assert_array_equal(tta.logits("none", pixels, x), pixels(x))


def test_modes_from_the_config_and_flags():
    config = load_config()
    assert tta.check_mode(None, config) == "none"
    assert tta.check_mode("flip", config) == "flip"
    config.eval_tta = "flip_shift"
    assert tta.check_mode(None, config) == "flip_shift"
    del config["eval_tta"]  # a workdir trained before the option existed: completed on load
    assert tta.check_mode(None, schema.complete(config)) == "none"
    with pytest.raises(ValueError, match="'rotate'.*none, flip, flip_shift"):
        tta.check_mode("rotate", config)
    assert tta.describe({"weights": "ema", "tta": "flip"}) == ["ema weights", "TTA flip"]
    assert tta.describe({"weights": "raw", "tta": "none"}) == tta.describe({}) == []
