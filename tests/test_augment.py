"""Tests of imgcls.data.augment.tf_ops: per-image TF augmentations keyed by stateless seeds.

Each augmentation is switched on alone (and all together) and checked for shape, dtype,
determinism per key, variation across keys, and that it does what it says on crafted images.
"""

import math
import os
import sys

import numpy as np
import pytest
from conftest import erased_fraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import default  # noqa: E402
from imgcls.data._tf import tf  # noqa: E402
from imgcls.data.augment import tf_ops  # noqa: E402

NUM_KEYS = 12
ALL_ON = dict(
    horizontal_flip=True,
    vertical_flip=True,
    rotation=30.0,
    zoom=0.3,
    translation=0.2,
    brightness=0.3,
    contrast=0.5,
    saturation=0.5,
    hue=0.2,
    erasing=0.5,
)
SINGLE = [{name: value} for name, value in ALL_ON.items()]


def make_aug(**overrides):
    config = default.get_config()
    for name, value in overrides.items():
        setattr(config.augment, name, value)
    return config.augment


def key(k):
    return tf.constant([k, 7], tf.int64)


def run(image, k, aug):
    return tf_ops.augment_image(tf.constant(image, tf.uint8), key(k), aug).numpy()


def runs(image, aug, n=NUM_KEYS):
    return [run(image, k, aug) for k in range(n)]


def random_image(shape=(16, 16, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def centroid(image):
    mass = image[..., 0].astype(np.float64)
    rows, cols = np.indices(mass.shape)
    return (rows * mass).sum() / mass.sum(), (cols * mass).sum() / mass.sum(), mass.sum()


@pytest.mark.parametrize("overrides", [*SINGLE, ALL_ON], ids=lambda o: "+".join(o)[:40])
def test_shape_dtype_determinism_and_variation(overrides):
    aug, image = make_aug(**overrides), random_image()
    outputs = runs(image, aug, n=8)
    for out in outputs:
        assert out.shape == image.shape and out.dtype == np.uint8
        assert 0 <= out.min() and out.max() <= 255
    assert np.array_equal(run(image, 0, aug), outputs[0])  # bitwise, same key
    assert any(not np.array_equal(out, outputs[0]) for out in outputs[1:])


def test_all_off_is_identity():
    image = random_image()
    assert np.array_equal(run(image, 3, make_aug()), image)


def test_graph_mode_in_dataset_map_matches_eager():
    aug, image = make_aug(**ALL_ON), random_image()
    ds = tf.data.Dataset.range(4).map(
        lambda k: tf_ops.augment_image(tf.constant(image), tf.stack([k, 7]), aug)
    )
    assert ds.element_spec.shape == image.shape and ds.element_spec.dtype == tf.uint8
    for k, out in enumerate(ds.as_numpy_iterator()):
        np.testing.assert_array_equal(out, run(image, k, aug))


def test_grayscale_geometry_and_brightness():
    aug = make_aug(rotation=20.0, translation=0.1, brightness=0.2, contrast=0.2, erasing=1.0)
    image = random_image((12, 12, 1))
    out = run(image, 1, aug)
    assert out.shape == (12, 12, 1) and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["hue", "saturation"])
def test_rgb_only_jitter_on_grayscale_raises(name):
    with pytest.raises(ValueError, match=rf"config\.augment\.{name}.*1 channel"):
        run(random_image((8, 8, 1)), 0, make_aug(**{name: 0.1}))


@pytest.mark.parametrize("name, value", [("hue", 0.6), ("zoom", 1.0), ("contrast", 1.5)])
def test_out_of_range_values_raise(name, value):
    with pytest.raises(ValueError, match=rf"config\.augment\.{name}"):
        run(random_image(), 0, make_aug(**{name: value}))


@pytest.mark.parametrize("name, axis", [("horizontal_flip", 1), ("vertical_flip", 0)])
def test_flips_mirror_or_keep(name, axis):
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4, :4] = 200  # top-left quadrant bright
    outputs = runs(image, make_aug(**{name: True}))
    flipped = [np.array_equal(out, np.flip(image, axis)) for out in outputs]
    kept = [np.array_equal(out, image) for out in outputs]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


def test_translation_moves_content_within_bounds():
    image = np.zeros((32, 32, 1), np.uint8)
    image[14:18, 14:18] = 255  # centroid (15.5, 15.5)
    translation = 0.2
    shifts = []
    for out in runs(image, make_aug(translation=translation)):
        row, col, mass = centroid(out)
        assert mass == pytest.approx(255 * 16, rel=0.05)
        shifts.append((row - 15.5, col - 15.5))
    shifts = np.abs(np.array(shifts))
    assert shifts.max() <= translation * 32 + 0.5
    assert shifts.max() > 1.0


def test_zoom_scales_about_the_center():
    image = np.zeros((32, 32, 1), np.uint8)
    image[12:20, 12:20] = 255
    zoom, ratios = 0.3, []
    for out in runs(image, make_aug(zoom=zoom)):
        row, col, mass = centroid(out)
        assert abs(row - 15.5) < 0.3 and abs(col - 15.5) < 0.3
        ratios.append(mass / (255 * 64))
    assert (1 - zoom) ** 2 - 0.1 <= min(ratios) and max(ratios) <= (1 + zoom) ** 2 + 0.1
    assert max(ratios) - min(ratios) > 0.2


def test_rotation_turns_about_the_center():
    image = np.zeros((33, 33, 1), np.uint8)
    image[15:18, 25:28] = 255  # centroid 10 px right of the center (16, 16)
    rotation, angles = 40.0, []
    for out in runs(image, make_aug(rotation=rotation)):
        row, col, _ = centroid(out)
        assert math.hypot(row - 16, col - 16) == pytest.approx(10.0, abs=0.5)
        angles.append(math.degrees(math.atan2(row - 16, col - 16)))
    assert max(abs(a) for a in angles) <= rotation + 2.0
    assert max(abs(a) for a in angles) > 5.0


def test_brightness_shifts_mean_both_ways():
    brightness = 0.2
    image = np.full((8, 8, 3), 128, np.uint8)
    deltas = [
        out.astype(float).mean() - 128 for out in runs(image, make_aug(brightness=brightness))
    ]
    assert max(abs(d) for d in deltas) <= brightness * 255 + 1
    assert min(deltas) < -3 and max(deltas) > 3


def test_contrast_scales_spread_keeps_mean():
    contrast = 0.5
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4], image[:, 4:] = 96, 160
    ratios = []
    for out in runs(image, make_aug(contrast=contrast)):
        assert out.astype(float).mean() == pytest.approx(128, abs=1)
        ratios.append(out.astype(float).std() / image.astype(float).std())
    assert 1 - contrast - 0.05 <= min(ratios) and max(ratios) <= 1 + contrast + 0.05
    assert max(ratios) - min(ratios) > 0.2


@pytest.mark.parametrize("name", ["saturation", "hue"])
def test_saturation_and_hue_keep_gray_change_color(name):
    aug = make_aug(**{name: 0.3})
    gray = np.full((4, 4, 3), 100, np.uint8)
    assert all(np.array_equal(out, gray) for out in runs(gray, aug, n=4))
    color = np.zeros((4, 4, 3), np.uint8)
    color[..., 0], color[..., 1], color[..., 2] = 200, 120, 40
    assert any(not np.array_equal(out, color) for out in runs(color, aug, n=4))


def test_hue_rotates_hue_within_bound():
    hue, red = 0.2, np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    shifts = []
    for out in runs(red, make_aug(hue=hue)):
        hsv = tf.image.rgb_to_hsv(out.astype(np.float32) / 255).numpy()
        assert np.allclose(hsv[..., 1:], 1.0, atol=0.01)  # saturation and value kept
        shift = (hsv[0, 0, 0] + 0.5) % 1.0 - 0.5  # signed turns, from red (0)
        shifts.append(shift)
    assert max(abs(s) for s in shifts) <= hue + 0.01
    assert min(shifts) < -0.02 and max(shifts) > 0.02


def test_erasing_always_erases_a_rectangle():
    image = np.full((32, 32, 3), 100, np.uint8)
    fractions = [erased_fraction(out, image) for out in runs(image, make_aug(erasing=1.0))]
    assert 0.01 <= min(fractions) and max(fractions) <= 0.27
    assert len(set(fractions)) > 1


def test_erasing_probability():
    image = random_image()
    assert all(np.array_equal(out, image) for out in runs(image, make_aug(erasing=0.0), n=4))
    erased = [not np.array_equal(out, image) for out in runs(image, make_aug(erasing=0.5))]
    assert any(erased) and not all(erased)
