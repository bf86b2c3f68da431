"""RandAugment / TrivialAugment-Wide / AutoAugment: each op on constructed images, the policy
tables, and the policies' determinism per key (so that resume replays them)."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from conftest import load_config

from imgcls.config import check as config_check
from imgcls.data import preprocess
from imgcls.data.augment import autoaugment, policies, table
from imgcls.evaluation import inspection


def const(x, dtype=tf.float32):
    return tf.constant(x, dtype)


def op(name, image, magnitude=0.0):
    return autoaugment.OP_FUNCTIONS[name](tf.constant(image, tf.uint8), const(magnitude)).numpy()


def noise(shape=(9, 12, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def dot(row, col, shape=(9, 9, 1)):
    image = np.zeros(shape, np.uint8)
    image[row, col] = 200
    return image


def where(image):
    return [tuple(p) for p in np.argwhere(image[..., 0] > 0)]


@pytest.mark.parametrize("name", policies.OPS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_keeps_shape_dtype_and_range(name, channels):
    image = noise((9, 12, channels))
    magnitude = float(policies.magnitudes(policies.RANDAUGMENT_BINS)[policies.OPS.index(name), 20])
    out = op(name, image, magnitude)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(op(name, image, magnitude), out)  # deterministic


def test_geometric_ops_move_a_known_pixel_where_expected():
    # rotate: +90 degrees turns counter-clockwise about the center (4, 4)
    assert where(op("rotate", dot(1, 4), 90.0)) == [(4, 1)]
    assert where(op("rotate", dot(4, 8), 90.0)) == [(0, 4)]
    assert where(op("rotate", dot(4, 8), -90.0)) == [(8, 4)]
    # shear_x(m): output (x, y) samples input (x + m y, y); shear_y alike along y
    assert where(op("shear_x", dot(4, 6), 0.5)) == [(4, 4)]
    assert where(op("shear_y", dot(6, 4), 0.5)) == [(4, 4)]
    # translations move the content, truncated to whole pixels; what moves in is 0
    assert where(op("translate_x", dot(2, 3), 2.9)) == [(2, 5)]
    assert where(op("translate_y", dot(2, 3), -2.0)) == [(0, 3)]
    shifted = op("translate_x", np.full((4, 4, 1), 9, np.uint8), 1.0)
    assert (shifted[:, 0] == 0).all() and (shifted[:, 1:] == 9).all()


def test_color_ops_do_what_they_say():
    image = noise()
    np.testing.assert_array_equal(op("identity", image), image)
    np.testing.assert_array_equal(op("invert", image), 255 - image)
    assert (op("brightness", image, -1.0) == 0).all()  # factor 0: black
    np.testing.assert_array_equal(op("brightness", image, 0.0), image)  # factor 1: unchanged
    gray = op("color", image, -1.0)  # factor 0: the grayscale image in every channel
    assert (gray == gray[..., :1]).all()
    luma = np.floor(image.astype(np.float64) @ np.array(autoaugment.GRAY_WEIGHTS))
    np.testing.assert_allclose(gray[..., 0], luma, atol=1)
    flat = op("contrast", image, -1.0)  # factor 0: one mean gray everywhere
    assert len(np.unique(flat)) == 1 and abs(int(flat[0, 0, 0]) - luma.mean()) <= 1
    posterized = op("posterize", image, 3.0)
    np.testing.assert_array_equal(posterized, image & 0b11100000)
    solarized = op("solarize", image, 128.0)
    np.testing.assert_array_equal(solarized, np.where(image >= 128, 255 - image, image))


def test_sharpness_blends_with_the_smoothed_image_and_keeps_the_border():
    image = np.zeros((5, 5, 1), np.uint8)
    image[2, 2] = 130
    smooth = op("sharpness", image, -1.0)  # factor 0: the smoothed image itself
    assert smooth[2, 2, 0] == 50 and smooth[1, 1, 0] == 10  # 130 * 5/13, 130 * 1/13
    assert (smooth[0] == 0).all() and (smooth[:, 0] == 0).all()  # border left as it was
    sharper = op("sharpness", image, 1.0)  # factor 2: away from the smoothed image
    assert sharper[2, 2, 0] == 210 and sharper[1, 1, 0] == 0


def test_autocontrast_and_equalize_stretch_the_histogram():
    image = np.stack([np.full((4, 4), 100), np.full((4, 4), 50)], -1).astype(np.uint8)
    image[0, 0] = (120, 60)
    stretched = op("autocontrast", image)
    assert stretched[..., 0].min() == 0 and stretched[..., 0].max() == 255
    assert stretched[..., 1].min() == 0 and stretched[..., 1].max() == 255
    constant = np.full((3, 3, 1), 77, np.uint8)  # nothing to stretch: unchanged
    np.testing.assert_array_equal(op("autocontrast", constant), constant)
    ramp = np.repeat(np.arange(100, 116, dtype=np.uint8), 64).reshape(32, 32, 1)  # 16 levels
    equalized = op("equalize", ramp)
    mapped = [int(equalized[ramp == v][0]) for v in range(100, 116)]
    assert mapped[0] == 0 and mapped[-1] == 255 and mapped == sorted(mapped)  # over 0-255
    assert mapped[:4] == [0, 21, 43, 64]  # PIL's lookup table: (step // 2 + count below) // step
    np.testing.assert_array_equal(op("equalize", constant), constant)
    few = ramp[:4, :4]  # too few pixels for a step (PIL leaves such images as they are)
    np.testing.assert_array_equal(op("equalize", few), few)


def test_policy_tables_are_torchvisions():
    standard = policies.magnitudes(policies.RANDAUGMENT_BINS)
    wide = policies.magnitudes(policies.RANDAUGMENT_BINS, wide=True)
    row = policies.OPS.index
    assert standard[row("rotate"), -1] == pytest.approx(30.0)
    assert wide[row("rotate"), -1] == pytest.approx(135.0)
    assert standard[row("shear_x"), 9] == pytest.approx(0.3 * 9 / 30)
    assert list(standard[row("posterize"), [0, 30]]) == [8, 4]
    assert list(wide[row("posterize"), [0, 30]]) == [8, 2]
    assert wide[row("translate_x"), -1] == 32.0  # pixels
    assert standard[row("translate_x"), -1] == pytest.approx(150 / 331)  # of the side
    ops, probs, levels = policies.autoaugment_tables()
    assert ops.shape == (25, 2)
    assert (policies.OPS[ops[0, 0]], float(probs[0, 0]), int(levels[0, 0])) == (
        "posterize",
        pytest.approx(0.4),
        8,
    )
    assert "invert" in {policies.OPS[i] for i in ops.ravel()}


@pytest.mark.parametrize("policy", policies.POLICIES[1:])
def test_policies_are_keyed_by_the_example(policy):
    config = load_config()
    config.augment.policy = policy
    image = noise((12, 12, 3))
    fn = tf.function(lambda x, key: autoaugment.apply_policy(x, key, config.augment))
    outs = [fn(tf.constant(image), tf.constant([3, k], tf.int64)).numpy() for k in range(12)]
    again = fn(tf.constant(image), tf.constant([3, 5], tf.int64)).numpy()
    np.testing.assert_array_equal(again, outs[5])  # same key, same image
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) > 6  # different keys, different ops


def test_the_policy_runs_in_training_preprocessing_only_when_on():
    config = load_config()
    example = {"image": tf.constant(noise((8, 8, 1))), "label": tf.constant(3)}
    key = tf.constant([0, 1], tf.int64)
    off = preprocess.preprocess_train(example, key, config, (8, 8, 1))["image"].numpy()
    config.augment.policy = "trivialaugment_wide"
    on = [
        preprocess.preprocess_train(example, tf.constant([0, k], tf.int64), config, (8, 8, 1))
        for k in range(6)
    ]
    assert any(not np.array_equal(o["image"].numpy(), off) for o in on)
    # the other augmentations keep their keys: pad-and-crop is the same with the policy on
    config.augment.policy = "none"
    np.testing.assert_array_equal(
        preprocess.preprocess_train(example, key, config, (8, 8, 1))["image"].numpy(), off
    )


def test_policy_settings_are_checked():
    config = load_config()
    config.augment.policy = "autoaugment"
    config.augment.randaugment_magnitude = 31
    found = config_check.problems(config)
    assert "config.augment.policy='autoaugment' must be one of 'none', 'randaugment'" in found[0]
    assert found[1] == "config.augment.randaugment_magnitude=31 must be an integer in [0, 30]."
    config.augment.policy = "randaugment"
    with pytest.raises(ValueError, match="policy='randaugment'.*only the tf.data input pipeline"):
        table.check_implemented(config.augment, table.DEVICE)


def test_inspect_shows_the_policy_in_augmentations_png():
    """--mode=inspect's augmented copies go through the training preprocessing, policy included."""
    config, image = load_config(), noise((8, 8, 1))
    config.dataset.pipeline = "tf"  # where the policy runs; both copies from the same pipeline
    info = SimpleNamespace(image_shape=(8, 8, 1))
    plain = inspection.augmented_copies(config, info, image, 3)
    config.augment.policy = "randaugment"
    with_policy = inspection.augmented_copies(config, info, image, 3)
    assert len(with_policy) == inspection.AUGMENTED_COPIES
    assert sum(not np.array_equal(a, b) for a, b in zip(plain, with_policy, strict=True)) > 10
