"""Test-time augmentation: the logits of a few transformed views of each image, averaged.

`flip` averages an image and its mirror image. `flip_shift` is the CIFAR-10 speed-run recipe
(Keller Jordan's airbench, `infer_mirror_translate`): half the mirror average of the image,
plus a quarter each of the mirror averages of the image shifted by one pixel down-right and by
one pixel up-left (reflect-padded), six views in all. Each function takes f(images) -> logits
and images [N, H, W, C] (normalised floats: flips and reflect-padded shifts commute with the
per-channel normalisation) and returns averaged logits, so the eval step, --mode=eval, predict,
export and serve all call the same code. Views run one after another, so memory is that of
one view; the cost is one forward pass per view.
"""

import jax.numpy as jnp

from imgcls.config.choices import TTA_MODES as MODES

SHIFT = 1  # pixels, each way, in flip_shift


def mirror(images):
    """Left-right mirror images of [N, H, W, C]."""
    return jnp.flip(images, axis=2)


def shift(images, pixels: int):
    """[N, H, W, C] moved `pixels` down and right (up and left when negative); the pixels
    that move in are the reflection of the border (reflect padding, as airbench)."""
    p = abs(pixels)
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    height, width = images.shape[1:3]
    start = 0 if pixels > 0 else 2 * p
    return padded[:, start : start + height, start : start + width]


def flip(logits_fn, images):
    """The average logits of the images and their mirror images."""
    return 0.5 * (logits_fn(images) + logits_fn(mirror(images)))


def flip_shift(logits_fn, images):
    """0.5 flip(x) + 0.25 flip(x shifted +1 pixel) + 0.25 flip(x shifted -1 pixel)."""
    shifted = 0.5 * (flip(logits_fn, shift(images, SHIFT)) + flip(logits_fn, shift(images, -SHIFT)))
    return 0.5 * flip(logits_fn, images) + 0.5 * shifted


def logits(mode: str, logits_fn, images):
    """logits_fn(images) averaged over the views of `mode` (one of MODES)."""
    if mode in (None, "", "none"):
        return logits_fn(images)
    if mode == "flip":
        return flip(logits_fn, images)
    if mode == "flip_shift":
        return flip_shift(logits_fn, images)
    raise ValueError(f"Unknown test-time augmentation {mode!r}: use one of {', '.join(MODES)}.")


def check_mode(mode: str | None, config) -> str:
    """The TTA to use: `mode` (a --tta flag), else the run's config.eval_tta; ValueError
    naming the choices for any other value."""
    mode = mode or config.eval_tta
    if mode not in MODES:
        raise ValueError(f"Test-time augmentation {mode!r}: use one of {', '.join(MODES)}.")
    return mode


def describe(result: dict) -> list[str]:
    """The non-default weights and TTA of an eval or predict result, for console summaries:
    e.g. ['ema weights', 'TTA flip']; [] for the trained weights without TTA."""
    options = [f"{result['weights']} weights"] if result.get("weights", "raw") != "raw" else []
    return options + ([f"TTA {result['tta']}"] if result.get("tta", "none") != "none" else [])
