"""RandAugment, TrivialAugment-Wide and AutoAugment (ImageNet policy) for the tf.data pipeline.

No maintained TensorFlow or JAX library implements these any more, so they are written here
once, over one set of ops (`OP_FUNCTIONS`, each f(uint8 image [H, W, C], magnitude) -> uint8
image, C = 1 or 3), with the tables of imgcls.data.augment.policies. The ops follow PIL's ImageOps /
ImageEnhance and torchvision: geometric ops sample nearest pixels and fill with 0; rotate(+d)
turns the image d degrees counter-clockwise about its center; shear_x(m) maps output (x, y)
to input (x + m y, y) (shear_y likewise); translate_x(t) moves the content t pixels right;
enhancements blend with a degenerate image (black, grey, mean grey, smoothed) by factor 1 + m.
A policy is a pure function of (image, key): every random choice (op, sign, level,
probability) comes from stateless ops seeded by the example's key, so a resumed run replays it.
"""

import math

from imgcls.data._tf import tf
from imgcls.data.augment import policies

UINT8_MAX = 255.0
FILL = 0.0  # torchvision's default fill of geometric ops
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL and torchvision
SMOOTH_KERNEL = ((1, 1, 1), (1, 5, 1), (1, 1, 1))  # PIL's ImageFilter.SMOOTH (sharpness), / 13


def _as_float(image):
    return tf.cast(image, tf.float32)


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, UINT8_MAX), tf.uint8)


def _warp(image, transform):
    """Samples uint8 [H, W, C] at transform(output pixel) (ImageProjectiveTransformV3's 8
    coefficients), nearest pixel, FILL outside."""
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=_as_float(image)[None],
        transforms=tf.cast(tf.stack(transform), tf.float32)[None],
        output_shape=tf.shape(image)[:2],
        fill_value=FILL,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return tf.cast(warped[0], tf.uint8)


def shear_x(image, m):
    return _warp(image, [1.0, m, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, m):
    return _warp(image, [1.0, 0.0, 0.0, m, 1.0, 0.0, 0.0, 0.0])


def _whole(pixels):
    """Truncated towards 0, as torchvision's int(magnitude)."""
    return tf.sign(pixels) * tf.floor(tf.abs(pixels))


def translate_x(image, pixels):
    """Content moves `pixels` right (left when negative), truncated to whole pixels."""
    return _warp(image, [1.0, 0.0, -_whole(pixels), 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, pixels):
    """Content moves `pixels` down (up when negative), truncated to whole pixels."""
    return _warp(image, [1.0, 0.0, 0.0, 0.0, 1.0, -_whole(pixels), 0.0, 0.0])


def rotate(image, degrees):
    """Counter-clockwise by `degrees` about the image center ((W - 1) / 2, (H - 1) / 2)."""
    shape = tf.cast(tf.shape(image), tf.float32)
    cx, cy = (shape[1] - 1.0) / 2.0, (shape[0] - 1.0) / 2.0
    angle = degrees * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # input = R^-1 (output - c) + c, with y pointing down.
    return _warp(
        image, [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )


def _grayscale(image):
    """float32 [H, W, 1] luma of a uint8 image (1 or 3 channels), truncated as PIL's 'L'."""
    x = _as_float(image)
    if image.shape[-1] == 1:
        return x
    return tf.floor(tf.reduce_sum(x * tf.constant(GRAY_WEIGHTS), axis=-1, keepdims=True))


def _blend(image, degenerate, factor):
    """degenerate + factor (image - degenerate), rounded and clipped to uint8 (ImageEnhance)."""
    x = _as_float(image)
    return _to_uint8(degenerate + factor * (x - degenerate))


def brightness(image, m):
    return _blend(image, tf.zeros([], tf.float32), 1.0 + m)


def color(image, m):
    """Saturation: blend with the grayscale image (a grayscale image stays as it is)."""
    return _blend(image, _grayscale(image), 1.0 + m)


def contrast(image, m):
    return _blend(image, tf.reduce_mean(_grayscale(image)), 1.0 + m)


def sharpness(image, m):
    """Blend with the 3x3-smoothed image; the border pixels are left as they are (as PIL)."""
    x = _as_float(image)
    channels = tf.shape(image)[-1]
    kernel = tf.constant(SMOOTH_KERNEL, tf.float32)[:, :, None, None] / 13.0
    kernel = tf.tile(kernel, [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.round(smooth)
    inner = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    degenerate = inner * degenerate + (1.0 - inner) * x
    return _blend(image, degenerate, 1.0 + m)


def posterize(image, bits):
    """Keeps the top `bits` bits of every value."""
    shift = tf.cast(8 - tf.cast(bits, tf.int32), tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
    """Inverts the values >= threshold."""
    return tf.where(_as_float(image) >= threshold, invert(image), image)


def autocontrast(image, _=None):
    """Stretches each channel's range to 0-255 (a constant channel is left as it is)."""
    x = _as_float(image)
    low = tf.reduce_min(x, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(x, axis=[0, 1], keepdims=True)
    scale = tf.where(high > low, UINT8_MAX / tf.maximum(high - low, 1.0), 1.0)
    offset = tf.where(high > low, low, 0.0)
    return _to_uint8(tf.floor((x - offset) * scale))


def _equalize_channel(channel):
    """PIL's ImageOps.equalize of one uint8 channel [H, W]."""
    histogram = tf.histogram_fixed_width(tf.cast(channel, tf.int32), [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

    def equalized():
        lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        return tf.cast(tf.gather(lut, tf.cast(channel, tf.int32)), tf.uint8)

    return tf.cond(step > 0, equalized, lambda: channel)


def equalize(image, _=None):
    """Histogram equalisation of each channel."""
    channels = [_equalize_channel(image[:, :, c]) for c in range(image.shape[-1])]
    return tf.stack(channels, axis=-1)


def invert(image, _=None):
    return tf.constant(255, tf.uint8) - image


def identity(image, _=None):
    return image


OP_FUNCTIONS = {
    "identity": identity,
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": translate_x,
    "translate_y": translate_y,
    "rotate": rotate,
    "brightness": brightness,
    "color": color,
    "contrast": contrast,
    "sharpness": sharpness,
    "posterize": posterize,
    "solarize": solarize,
    "autocontrast": autocontrast,
    "equalize": equalize,
    "invert": invert,
}
assert tuple(OP_FUNCTIONS) == policies.OPS  # the op index is the position in both


def apply_op(image, index, magnitude):
    """OP_FUNCTIONS[policies.OPS[index]](image, magnitude), with a traced op index."""
    static_shape = image.shape
    branches = [
        (lambda fn=fn: tf.ensure_shape(fn(image, magnitude), static_shape))
        for fn in OP_FUNCTIONS.values()
    ]
    return tf.switch_case(tf.cast(index, tf.int32), branches)


def _signed_magnitude(image, table, index, level, sign_uniform, wide):
    """The op's magnitude at `level` (a column of `table`), with a random sign for SIGNED ops;
    relative translations (all but the wide space's) become pixels of this image."""
    magnitude = tf.gather_nd(table, tf.stack([index, level]))
    translations = ("translate_x", "translate_y")
    relative = tf.constant([not wide and name in translations for name in policies.OPS])
    shape = tf.cast(tf.shape(image), tf.float32)
    side = tf.where(tf.equal(index, policies.OPS.index("translate_x")), shape[1], shape[0])
    magnitude = tf.where(tf.gather(relative, index), magnitude * side, magnitude)
    signed = tf.gather(tf.constant([name in policies.SIGNED for name in policies.OPS]), index)
    return tf.where(signed & (sign_uniform < 0.5), -magnitude, magnitude)


def randaugment(image, key, num_ops: int, level: int):
    """`num_ops` ops drawn uniformly (with replacement), each at magnitude `level` of 31."""
    table = tf.constant(policies.magnitudes(policies.RANDAUGMENT_BINS))
    for op_key in tf.unstack(tf.random.experimental.stateless_split(key, num_ops)):
        u = tf.random.stateless_uniform([2], op_key)
        index = tf.cast(tf.floor(u[0] * policies.UNIFORM_OPS), tf.int32)
        magnitude = _signed_magnitude(image, table, index, level, u[1], wide=False)
        image = apply_op(image, index, magnitude)
    return image


def trivialaugment_wide(image, key):
    """One op drawn uniformly, at a uniformly drawn level of 31, in the wide op space."""
    table = tf.constant(policies.magnitudes(policies.RANDAUGMENT_BINS, wide=True))
    u = tf.random.stateless_uniform([3], key)
    index = tf.cast(tf.floor(u[0] * policies.UNIFORM_OPS), tf.int32)
    level = tf.cast(tf.floor(u[1] * policies.RANDAUGMENT_BINS), tf.int32)
    return apply_op(image, index, _signed_magnitude(image, table, index, level, u[2], wide=True))


def autoaugment_imagenet(image, key):
    """One of the 25 sub-policies drawn uniformly; each of its two ops applied with its
    probability, at its level of 10."""
    table = tf.constant(policies.magnitudes(policies.AUTOAUGMENT_BINS))
    ops, probs, levels = (tf.constant(t) for t in policies.autoaugment_tables())
    u = tf.random.stateless_uniform([5], key)
    chosen = tf.cast(tf.floor(u[0] * len(policies.AUTOAUGMENT_IMAGENET)), tf.int32)
    for slot in range(2):
        index, level = ops[chosen, slot], levels[chosen, slot]
        magnitude = _signed_magnitude(image, table, index, level, u[3 + slot], wide=False)
        index = tf.where(u[1 + slot] < probs[chosen, slot], index, policies.OPS.index("identity"))
        image = apply_op(image, index, magnitude)
    return image


def apply_policy(image, key, aug):
    """config.augment.policy of `aug` applied to uint8 [H, W, C], keyed by a [2] seed."""
    policy = aug.policy
    if policy == "randaugment":
        return randaugment(image, key, int(aug.randaugment_num_ops), int(aug.randaugment_magnitude))
    if policy == "trivialaugment_wide":
        return trivialaugment_wide(image, key)
    if policy == "autoaugment_imagenet":
        return autoaugment_imagenet(image, key)
    if policy != "none":
        raise ValueError(
            f"Unknown augmentation policy {policy!r} (config.augment.policy). Valid policies: "
            f"{', '.join(policies.POLICIES)}."
        )
    return image
