"""Image normalization, applied on device by the training and eval steps.

The input pipeline ships uint8 images (4x less host-to-device traffic than float32), so the
conversion to normalized floats happens here, in jax.numpy, without TensorFlow.
"""

import jax.numpy as jnp


def mean_std(config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of config.dataset as tuples: hashable, so jitted steps can close over them."""
    return tuple(config.dataset.mean), tuple(config.dataset.std)


def normalize(images, mean, std):
    """Maps uint8 images [..., C] to float32 (images / 255 - mean) / std, per channel."""
    images = jnp.asarray(images).astype(jnp.float32) / 255.0
    mean = jnp.asarray(mean, dtype=jnp.float32)
    std = jnp.asarray(std, dtype=jnp.float32)
    return (images - mean) / std
