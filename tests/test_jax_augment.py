"""Tests of imgcls.data.augment.jax_ops: TF-free batch augmentations, mixup and cutmix.

Same properties as tests/test_augment.py (shape, dtype, determinism per key, variation across
keys, the op does what it says), plus jittability and mixing arithmetic checked on batches of
constant-valued distinct images, where each pixel tells which example it came from.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import erased_fraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import default  # noqa: E402
from imgcls.data.augment import jax_ops as ja  # noqa: E402
from imgcls.data.augment import table  # noqa: E402

BATCH = 16


def make_aug(**overrides):
    config = default.get_config()
    for name, value in overrides.items():
        setattr(config.augment, name, value)
    return config.augment


def random_images(shape=(BATCH, 8, 8, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape), jnp.uint8)


def constant_batch(height=8, width=8, channels=3):
    """Example i is the constant image i; targets one-hot(i), so K = BATCH."""
    values = jnp.arange(BATCH, dtype=jnp.float32)
    images = jnp.broadcast_to(values[:, None, None, None], (BATCH, height, width, channels))
    return images, jnp.eye(BATCH, dtype=jnp.float32)


def check_common(fn, images):
    """uint8 kept, shape kept, bitwise deterministic per key, varies across keys."""
    out = np.asarray(fn(images, jax.random.key(0)))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(fn(images, jax.random.key(0))))
    others = [np.asarray(fn(images, jax.random.key(k))) for k in range(1, 4)]
    assert any(not np.array_equal(out, other) for other in others)
    return out


def test_pad_and_random_crop_takes_windows_of_the_padded_image():
    padding, images = 2, random_images()
    fn = jax.jit(functools.partial(ja.pad_and_random_crop, padding=padding))
    out = check_common(fn, images)
    padded = np.pad(np.asarray(images), ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)))
    offsets = set()
    for i in range(BATCH):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(out[i], padded[i, dy : dy + 8, dx : dx + 8])
        ]
        assert matches, f"example {i} is not a window of its padded image"
        offsets.update(matches)
    assert len(offsets) > 3
    assert ja.pad_and_random_crop(images, jax.random.key(0), 0) is images


@pytest.mark.parametrize("horizontal, axis", [(True, 2), (False, 1)])
def test_random_flip_mirrors_or_keeps(horizontal, axis):
    images = random_images()
    out = check_common(jax.jit(functools.partial(ja.random_flip, horizontal=horizontal)), images)
    images = np.asarray(images)
    flipped = [np.array_equal(out[i], np.flip(images[i], axis - 1)) for i in range(BATCH)]
    kept = [np.array_equal(out[i], images[i]) for i in range(BATCH)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


def test_random_erasing_erases_rectangles_with_probability():
    images = jnp.full((BATCH, 32, 32, 3), 100, jnp.uint8)
    erase = jax.jit(functools.partial(ja.random_erasing, probability=0.5))
    check_common(erase, images)
    outs = np.concatenate([erase(images, jax.random.key(k)) for k in range(4)])
    fractions = [erased_fraction(out, 100) for out in outs]
    erased = [f for f in fractions if f > 0]
    assert 0.25 < len(erased) / len(fractions) < 0.75
    low, high = ja.ERASING_AREA_RANGE
    assert low / 2 <= min(erased) and max(erased) <= high * 1.1
    assert len(set(erased)) > 1
    assert ja.random_erasing(images, jax.random.key(1), 0.0) is images


def test_augment_batch_under_jit():
    aug = make_aug(random_crop_padding=2, horizontal_flip=True, vertical_flip=True, erasing=1.0)
    images = jnp.full((BATCH, 8, 8, 3), 100, jnp.uint8)
    out = check_common(jax.jit(lambda x, k: ja.augment_batch(x, k, aug)), images)
    # Padding zeros or noise reach every example; the padded border is 0 before erasing.
    assert all(np.any(out[i] != 100) for i in range(BATCH))


def test_augment_batch_all_off_is_identity():
    images = random_images()
    out = ja.augment_batch(images, jax.random.key(0), make_aug(random_crop_padding=0))
    np.testing.assert_array_equal(out, images)


TF_ONLY = [
    k
    for k, row in table.ROWS.items()
    if row.off is not None and table.TF in row.pipelines and table.DEVICE not in row.pipelines
]


@pytest.mark.parametrize("name", TF_ONLY)
def test_tf_only_augmentations_raise(name):
    aug = make_aug(**{name: table.ROWS[name].example})
    with pytest.raises(ValueError, match=rf"config\.augment\.{name}=.*pipeline='tf'"):
        table.check_implemented(aug, table.DEVICE)
    with pytest.raises(ValueError, match=rf"config\.augment\.{name}"):
        ja.augment_batch(random_images(), jax.random.key(0), aug)
    table.check_implemented(make_aug(erasing=0.5, horizontal_flip=True), table.DEVICE)


def mix_jit(mixup, cutmix):
    return jax.jit(functools.partial(ja.mix, mixup_alpha=mixup, cutmix_alpha=cutmix))


def check_cutmix(images, targets):
    """Every example's target weight of k is the fraction of its pixels that came from k."""
    for i in range(BATCH):
        fractions = np.bincount(images[i].astype(int).ravel(), minlength=BATCH) / images[i].size
        np.testing.assert_allclose(fractions, targets[i], atol=1e-6)


def check_mixup(images, targets):
    """Every image is lam * x_i + (1 - lam) * x_perm(i), one lam per batch, as its target."""
    expected = targets @ np.arange(BATCH, dtype=np.float32)
    np.testing.assert_allclose(
        images, np.broadcast_to(expected[:, None, None, None], images.shape), rtol=1e-5
    )
    partnered = np.max(targets, axis=1) < 1 - 1e-6  # perm(i) != i
    lams = targets[np.arange(BATCH), np.arange(BATCH)][partnered]
    assert np.ptp(lams) < 1e-5  # one lam per batch


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mix(mixup, cutmix):
    images, targets = constant_batch()
    fn, kinds = mix_jit(mixup, cutmix), set()
    for k in range(6):
        out_images, out_targets = (np.asarray(a) for a in fn(images, targets, jax.random.key(k)))
        again = fn(images, targets, jax.random.key(k))
        np.testing.assert_array_equal(out_images, again[0])
        np.testing.assert_array_equal(out_targets, again[1])
        assert out_images.shape == images.shape and out_images.dtype == np.float32
        np.testing.assert_allclose(out_targets.sum(axis=1), 1.0, atol=1e-6)
        assert not np.array_equal(out_targets, targets)  # a permutation has moved something
        is_cutmix = np.array_equal(out_images, np.round(out_images))
        if is_cutmix:
            check_cutmix(out_images, out_targets)
        else:
            check_mixup(out_images, out_targets)
        kinds.add("cutmix" if is_cutmix else "mixup")
    assert kinds == {name for name, alpha in (("mixup", mixup), ("cutmix", cutmix)) if alpha > 0}


def test_mix_off_is_identity():
    images, targets = constant_batch()
    out_images, out_targets = ja.mix(images, targets, jax.random.key(0), 0.0, 0.0)
    assert out_images is images and out_targets is targets


def test_no_tensorflow_import():
    code = "import sys, imgcls.data.augment.jax_ops; assert 'tensorflow' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_random_resized_crop_keeps_the_size_and_zooms_into_a_box():
    """A horizontal ramp: each output row is a stretched window of the input's values, so it
    is increasing and inside the input's range; a quarter of the area shows about half the
    ramp. area_range (1, 1) with a square image keeps it almost whole."""
    ramp = jnp.tile(jnp.arange(0, 256, 8, dtype=jnp.uint8)[None, None, :, None], (BATCH, 32, 1, 3))
    out = np.asarray(ja.random_resized_crop(ramp, jax.random.key(0), (0.25, 0.25)))
    assert out.shape == ramp.shape and out.dtype == np.uint8
    assert (np.diff(out[..., 0].astype(int), axis=2) >= 0).all()  # still a ramp, left to right
    spans = out[:, :, -1, 0].astype(int) - out[:, :, 0, 0].astype(int)
    assert 60 < spans.mean() < 200  # the full ramp spans 248
    assert len({tuple(image[0, :, 0]) for image in out}) > BATCH // 2  # boxes differ per example
    whole = np.asarray(ja.random_resized_crop(ramp, jax.random.key(1), (1.0, 1.0)))
    assert np.abs(whole.astype(int) - np.asarray(ramp, int)).mean() < 16


def test_random_resized_crop_runs_on_the_device_at_the_native_size_only():
    aug = make_aug(random_resized_crop=True, random_crop_padding=0)
    with pytest.raises(ValueError, match="random_resized_crop=True"):
        table.check_implemented(aug, table.DEVICE)  # resized on loading: needs the originals
    table.check_implemented(aug, table.DEVICE, native_size=True)
    out = ja.augment_batch(
        random_images((BATCH, 16, 16, 3)), jax.random.key(0), aug, native_size=True
    )
    assert out.shape == (BATCH, 16, 16, 3)
