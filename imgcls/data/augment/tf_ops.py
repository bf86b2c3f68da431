"""Training-split augmentations of one uint8 image in TensorFlow, keyed by a stateless seed.

Every random draw comes from a stateless op seeded by `key`, so the augmented image is a pure
function of (image, key) and a resumed run reproduces it. It runs inside tf.data's map (graph
mode): only TF ops on tensors, and Python `if` only on config values. The erasing constants
are shared with the JAX twin, imgcls.data.augment.jax_ops (which does not import TensorFlow).
"""

import math

from imgcls.data._tf import tf
from imgcls.data.augment import autoaugment, table
from imgcls.data.augment.jax_ops import ERASING_AREA_RANGE, ERASING_ASPECT_RANGE, UINT8_LEVELS

UINT8_MAX = 255.0
# config.augment.policy's key is folded in from the example's key, not split off with the others,
# so that the keys (and results) of every other augmentation stay what they were without it.
POLICY_KEY = 6


def _affine(image, key, aug):
    """Rotation, zoom and translation about the center as one bilinear, reflect-filled warp.

    `image` is float32 [H, W, C]. ImageProjectiveTransformV3 maps each output pixel (x, y) to
    the input point M (p - c - t) + c, with M the inverse of (zoom * rotation).
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    u = tf.random.stateless_uniform([4], key, minval=-1.0, maxval=1.0)
    angle = u[0] * aug.rotation * (math.pi / 180.0)
    scale = 1.0 + u[1] * aug.zoom
    shift_x, shift_y = u[2] * aug.translation * width, u[3] * aug.translation * height
    center_x, center_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    origin_x, origin_y = center_x + shift_x, center_y + shift_y
    transform = tf.stack(
        [
            cos,
            sin,
            center_x - cos * origin_x - sin * origin_y,
            -sin,
            cos,
            center_y + sin * origin_x - cos * origin_y,
            0.0,
            0.0,
        ]
    )
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return warped[0]


def _color(image, key, aug):
    """Brightness, contrast, saturation and hue jitter of float32 [H, W, C] in [0, 1]."""
    keys = tf.unstack(tf.random.experimental.stateless_split(key, 4))
    if aug.brightness > 0:
        image = tf.image.stateless_random_brightness(image, aug.brightness, keys[0])
        image = tf.clip_by_value(image, 0.0, 1.0)
    if aug.contrast > 0:
        lower, upper = 1.0 - aug.contrast, 1.0 + aug.contrast
        image = tf.image.stateless_random_contrast(image, lower, upper, keys[1])
        image = tf.clip_by_value(image, 0.0, 1.0)
    if aug.saturation > 0:
        lower, upper = 1.0 - aug.saturation, 1.0 + aug.saturation
        image = tf.image.stateless_random_saturation(image, lower, upper, keys[2])
        image = tf.clip_by_value(image, 0.0, 1.0)
    if aug.hue > 0:
        image = tf.image.stateless_random_hue(image, aug.hue, keys[3])
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image


def random_erasing(image, key, probability):
    """With `probability`, fills a random box of uint8 [H, W, C] with uniform noise.

    Same box distribution as imgcls.data.augment.jax_ops.erasing_boxes: area fraction in
    ERASING_AREA_RANGE, log-uniform aspect ratio in ERASING_ASPECT_RANGE, clipped to the image.
    """
    box_key, noise_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    u = tf.random.stateless_uniform([5], box_key)
    (area_lo, area_hi), (ratio_lo, ratio_hi) = ERASING_AREA_RANGE, ERASING_ASPECT_RANGE
    area = (area_lo + (area_hi - area_lo) * u[0]) * height * width
    log_lo, log_hi = math.log(ratio_lo), math.log(ratio_hi)
    ratio = tf.exp(log_lo + (log_hi - log_lo) * u[1])
    box_h = tf.clip_by_value(tf.round(tf.sqrt(area * ratio)), 1.0, height)
    box_w = tf.clip_by_value(tf.round(tf.sqrt(area / ratio)), 1.0, width)
    top = tf.floor(u[2] * (height - box_h + 1.0))
    left = tf.floor(u[3] * (width - box_w + 1.0))
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    mask = inside & (u[4] < probability)
    noise = tf.random.stateless_uniform(shape, noise_key, 0, UINT8_LEVELS, dtype=tf.int32)
    return tf.where(mask, tf.cast(noise, image.dtype), image)


def augment_image(image, key, aug):
    """Applies config.augment `aug` to uint8 [H, W, C] (C = 1 or 3), keyed by a [2] seed.

    Order: flips, the augmentation policy (config.augment.policy: RandAugment, TrivialAugment,
    AutoAugment), one affine warp, color jitter, random erasing (last, as in Zhong et al.).
    Raises ValueError at trace time for values the augmentation table's rules reject, or
    RGB-only jitter on 1 channel.
    """
    table.check(aug, image.shape[-1] if image.shape.rank else None)
    static_shape = image.shape
    hflip_key, vflip_key, affine_key, color_key, erase_key = tf.unstack(
        tf.random.experimental.stateless_split(key, 5)
    )
    if aug.horizontal_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=hflip_key)
    if aug.vertical_flip:
        image = tf.image.stateless_random_flip_up_down(image, seed=vflip_key)
    if aug.policy != "none":
        policy_key = tf.random.experimental.stateless_fold_in(key, POLICY_KEY)
        image = autoaugment.apply_policy(image, policy_key, aug)
    affine = aug.rotation > 0 or aug.zoom > 0 or aug.translation > 0
    color = any(getattr(aug, n) > 0 for n in ("brightness", "contrast", "saturation", "hue"))
    if affine or color:
        image = tf.cast(image, tf.float32) / UINT8_MAX
        if affine:
            image = _affine(image, affine_key, aug)
        if color:
            image = _color(image, color_key, aug)
        image = tf.cast(tf.clip_by_value(tf.round(image * UINT8_MAX), 0.0, UINT8_MAX), tf.uint8)
    if aug.erasing > 0:
        image = random_erasing(image, erase_key, float(aug.erasing))
    return tf.ensure_shape(image, static_shape)
