"""Batch augmentations in JAX, for the device-resident input pipeline and the train step.

No TensorFlow here: a GPU machine may have JAX only. Every function is pure and jittable and
its randomness comes from explicit jax.random keys: one per example (a [B] key array), so that
an example's augmentation does not depend on how the batch is cut over devices, or one key for
the whole batch (split into one per example). Configuration values (padding, flags,
probabilities, alphas) are Python values read at trace time: pass them (or the config.augment
ConfigDict) by closure or functools.partial, never as traced arguments. The random-erasing
constants live here so that the TF twin (imgcls.data.augment.tf_ops) shares them without this
module importing TensorFlow.
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

from imgcls.data.augment import table

# Random erasing (Zhong et al. 2017): area fraction and aspect ratio (log-uniform) of the box.
ERASING_AREA_RANGE = (0.02, 0.25)
ERASING_ASPECT_RANGE = (0.3, 3.3)
UINT8_LEVELS = 256  # erased pixels are uniform over the uint8 values


def erasing_boxes(uniforms, height, width):
    """Maps uniforms [..., 4] in [0, 1) to erasing boxes (top, left, box_h, box_w), int32.

    The size is clipped to the image and the position drawn so the box fits; the TF twin
    (imgcls.data.augment.tf_ops) does the same arithmetic, so both draw the same distribution.
    """
    lo, hi = ERASING_AREA_RANGE
    log_lo, log_hi = math.log(ERASING_ASPECT_RANGE[0]), math.log(ERASING_ASPECT_RANGE[1])
    area = (lo + (hi - lo) * uniforms[..., 0]) * height * width
    ratio = jnp.exp(log_lo + (log_hi - log_lo) * uniforms[..., 1])
    box_h = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, height).astype(jnp.int32)
    box_w = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, width).astype(jnp.int32)
    top = jnp.floor(uniforms[..., 2] * (height - box_h + 1)).astype(jnp.int32)
    left = jnp.floor(uniforms[..., 3] * (width - box_w + 1)).astype(jnp.int32)
    return top, left, box_h, box_w


def _box_mask(top, left, box_h, box_w, height, width):
    """[B, H, W, 1] bool mask of per-example boxes given as [B] int arrays."""
    rows = jnp.arange(height)[None, :, None, None]
    cols = jnp.arange(width)[None, None, :, None]
    top, left = top[:, None, None, None], left[:, None, None, None]
    box_h, box_w = box_h[:, None, None, None], box_w[:, None, None, None]
    inside_rows = (rows >= top) & (rows < top + box_h)
    return inside_rows & (cols >= left) & (cols < left + box_w)


def example_keys(keys, count: int):
    """One key per example: `keys` itself when it is a [count] key array, else the one key
    split into `count`."""
    return jax.random.split(keys, count) if keys.ndim == 0 else keys


def _per_example(keys, draw):
    """draw(key) for every example's key, stacked: [B, ...]."""
    return jax.vmap(draw)(keys)


def pad_and_random_crop(images, keys, padding, mode="constant"):
    """Pads [B, H, W, C] by `padding` per side (zeros, or 'reflect': the mirror image of the
    border, as airbench translates), then crops a random H x W per example."""
    if padding <= 0:
        return images
    batch, height, width, channels = images.shape
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = jnp.pad(images, pads, mode=mode)
    keys = example_keys(keys, batch)
    offsets = _per_example(keys, lambda k: jax.random.randint(k, (2,), 0, 2 * padding + 1))

    def crop(image, offset):
        start = (offset[0], offset[1], 0)
        return lax.dynamic_slice(image, start, (height, width, channels))

    return jax.vmap(crop)(padded, offsets)


def random_flip(images, keys, horizontal=True):
    """Flips each example of [B, H, W, C] with probability 0.5 (along W, or H if vertical)."""
    keys = example_keys(keys, images.shape[0])
    flip = _per_example(keys, lambda k: jax.random.bernoulli(k, 0.5))[:, None, None, None]
    return jnp.where(flip, jnp.flip(images, axis=2 if horizontal else 1), images)


def alternating_flip_mask(key, count: int, epoch):
    """Which of `count` examples to mirror in `epoch` (bool [count]): a fixed random half in
    even epochs and the other half in odd ones, so every image is seen both ways in any two
    consecutive epochs (airbench's alternating flip; `key` fixes the first choice)."""
    first = jax.random.bernoulli(key, 0.5, (count,))
    return first ^ (epoch % 2 == 1)


def cutout(images, keys, size: int, fill):
    """Fills a random size x size square of each example of [B, H, W, C], inside the image,
    with `fill` (one value per channel); airbench96's cutout fills the mean (0 once
    normalized)."""
    if size <= 0:
        return images
    batch, height, width, _ = images.shape
    keys = example_keys(keys, batch)
    top, left = _per_example(
        keys,
        lambda k: jax.random.randint(k, (2,), 0, jnp.array([height, width]) - size + 1),
    ).T
    square = jnp.full((batch,), size, jnp.int32)
    mask = _box_mask(top, left, square, square, height, width)
    return jnp.where(mask, jnp.asarray(fill, images.dtype), images)


def random_erasing(images, keys, probability):
    """With `probability` per example, fills a random box of uint8 [B, H, W, C] with noise."""
    if probability <= 0:
        return images
    batch, height, width, _ = images.shape
    keys = example_keys(keys, batch)

    def draw(key):
        box_key, apply_key, noise_key = jax.random.split(key, 3)
        noise = jax.random.randint(noise_key, images.shape[1:], 0, UINT8_LEVELS)
        return (
            jax.random.uniform(box_key, (4,)),
            jax.random.bernoulli(apply_key, probability),
            noise,
        )

    uniforms, apply, noise = _per_example(keys, draw)
    top, left, box_h, box_w = erasing_boxes(uniforms, height, width)
    mask = _box_mask(top, left, box_h, box_w, height, width) & apply[:, None, None, None]
    return jnp.where(mask, noise.astype(images.dtype), images)


INCEPTION_LOG_ASPECT = (math.log(3.0 / 4.0), math.log(4.0 / 3.0))  # as imgcls.data.preprocess


def random_resized_crop(images, keys, area_range):
    """Inception-style crop of each example of uint8 [B, H, W, C], resized back to H x W.

    A box of a uniform share of the area (area_range) and a log-uniform aspect ratio in
    [3/4, 4/3] (torchvision's RandomResizedCrop draws), clipped to the image, at a uniform
    position, resized bilinearly. The tf.data twin (imgcls.data.preprocess, TF's
    sample_distorted_bounding_box) draws boxes of the same area and aspect ranges from a
    slightly different distribution, and retries a box that does not fit."""
    batch, height, width, _ = images.shape
    low, high = area_range
    lows = jnp.array([low, INCEPTION_LOG_ASPECT[0], 0.0, 0.0])
    highs = jnp.array([high, INCEPTION_LOG_ASPECT[1], 1.0, 1.0])
    keys = example_keys(keys, batch)
    uniforms = _per_example(keys, lambda k: jax.random.uniform(k, (4,), minval=lows, maxval=highs))
    area = uniforms[:, 0] * height * width
    ratio = jnp.exp(uniforms[:, 1])
    box_h = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, height)
    box_w = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, width)
    top = jnp.floor(uniforms[:, 2] * (height - box_h + 1))
    left = jnp.floor(uniforms[:, 3] * (width - box_w + 1))

    def crop(image, top, left, box_h, box_w):
        scale = jnp.stack([height / box_h, width / box_w])
        out = jax.image.scale_and_translate(
            image.astype(jnp.float32),
            image.shape,
            (0, 1),
            scale,
            -jnp.stack([top, left]) * scale,
            method="linear",
        )
        return jnp.clip(jnp.round(out), 0, 255).astype(images.dtype)

    return jax.vmap(crop)(images, top, left, box_h, box_w)


def augment_batch(images, keys, aug, mirror=None, fill=(0,), native_size=False):
    """Random-resized crop (native_size only), pad-and-crop, flips, cutout and erasing of
    uint8 [B, H, W, C], as config.augment `aug` says; `keys` is one key per example (or one
    key for the batch).

    `aug` is read at trace time: under jax.jit close over it (or functools.partial) rather
    than passing it as an argument. `mirror` (bool [B]) mirrors those examples first (the
    pipeline's alternating flip); `fill` is cutout's uint8 value per channel. Raises
    ValueError for what the augmentation table says this pipeline does not implement.
    """
    table.check_implemented(aug, table.DEVICE, native_size)
    keys = example_keys(keys, images.shape[0])
    crop_key, hflip_key, vflip_key, erase_key = jnp.moveaxis(
        jax.vmap(lambda k: jax.random.split(k, 4))(keys), 1, 0
    )
    cutout_key = jax.vmap(lambda k: jax.random.fold_in(k, 5))(keys)
    if aug.random_resized_crop:
        rrc_key = jax.vmap(lambda k: jax.random.fold_in(k, 6))(keys)
        images = random_resized_crop(images, rrc_key, aug.area_range)
    if mirror is not None:
        images = jnp.where(mirror[:, None, None, None], jnp.flip(images, axis=2), images)
    padding, mode = int(aug.random_crop_padding), aug.crop_padding_mode
    images = pad_and_random_crop(images, crop_key, padding, mode)
    if aug.horizontal_flip:
        images = random_flip(images, hflip_key, horizontal=True)
    if aug.vertical_flip:
        images = random_flip(images, vflip_key, horizontal=False)
    images = cutout(images, cutout_key, int(aug.cutout), fill)
    return random_erasing(images, erase_key, float(aug.erasing))


def _mixup(images, targets, partner_images, partner_targets, key, alpha):
    lam = jax.random.beta(key, alpha, alpha)
    mixed = lam.astype(images.dtype) * images + (1 - lam).astype(images.dtype) * partner_images
    lam = lam.astype(targets.dtype)
    return mixed, lam * targets + (1 - lam) * partner_targets


def _cutmix(images, targets, partner_images, partner_targets, key, alpha):
    """Pastes a box of area ~(1 - lam) from the partner; targets use the clipped box's area."""
    _, height, width, _ = images.shape
    lam_key, row_key, col_key = jax.random.split(key, 3)
    cut = jnp.sqrt(1.0 - jax.random.beta(lam_key, alpha, alpha))
    cut_h = jnp.round(cut * height).astype(jnp.int32)
    cut_w = jnp.round(cut * width).astype(jnp.int32)
    center_row = jax.random.randint(row_key, (), 0, height)
    center_col = jax.random.randint(col_key, (), 0, width)
    top = jnp.clip(center_row - cut_h // 2, 0, height)
    bottom = jnp.clip(center_row - cut_h // 2 + cut_h, 0, height)
    left = jnp.clip(center_col - cut_w // 2, 0, width)
    right = jnp.clip(center_col - cut_w // 2 + cut_w, 0, width)
    mask = _box_mask(
        top[None], left[None], (bottom - top)[None], (right - left)[None], height, width
    )
    pasted = ((bottom - top) * (right - left)).astype(targets.dtype) / (height * width)
    mixed = jnp.where(mask, partner_images, images)
    return mixed, (1 - pasted) * targets + pasted * partner_targets


def mix(images, targets, key, mixup_alpha, cutmix_alpha):
    """Mixup and/or cutmix of float images [B, H, W, C] and targets [B, K] with a permutation.

    One lam per batch; with both alphas > 0 each batch uses one of them with probability 0.5.
    The alphas are Python floats; both 0 returns the inputs unchanged.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, targets
    perm_key, choice_key, mixup_key, cutmix_key = jax.random.split(key, 4)
    perm = jax.random.permutation(perm_key, images.shape[0])
    args = (images, targets, images[perm], targets[perm])
    if cutmix_alpha <= 0:
        return _mixup(*args, mixup_key, mixup_alpha)
    if mixup_alpha <= 0:
        return _cutmix(*args, cutmix_key, cutmix_alpha)
    return lax.cond(
        jax.random.bernoulli(choice_key, 0.5),
        lambda a: _mixup(*a, mixup_key, mixup_alpha),
        lambda a: _cutmix(*a, cutmix_key, cutmix_alpha),
        args,
    )
