"""config.dataset.pipeline='auto': the device-resident pipeline when it can, else tf.data.

The device pipeline (imgcls.data.pipelines.device) keeps the decoded training split on the
accelerators and augments batches inside jit: no host work per step, which makes small models
several times faster end to end. It needs the split to fit in device memory and every
configured augmentation to have a JAX implementation; 'auto' checks both and says which it
chose and why. TF-free.
"""

import math
import os

import jax
from absl import logging

from imgcls.data import batching
from imgcls.data.augment import table
from imgcls.data.info import split_size

PIPELINES = ("auto", "tf", "device")
# The decoded split may take at most this share of a device's memory (or, on CPUs, of the
# host's memory per device): the rest is for the model, its activations and the optimizer.
DEVICE_MEMORY_FRACTION = 0.25


def device_memory_bytes() -> int:
    """The memory of one local device (accelerators report it; CPUs share the host's RAM)."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001  (not every backend implements memory_stats)
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return host // max(1, jax.local_device_count())


def choose(config, info) -> tuple[str, str]:
    """('device' or 'tf', why) for config and its dataset info, as 'auto' decides."""
    if config.dataset.pipeline != "auto":
        return config.dataset.pipeline, "config.dataset.pipeline"
    tf_only = table.unsupported(config.augment, table.DEVICE, config.dataset.image_size == 0)
    device_only = table.unsupported(config.augment, table.TF)
    if device_only:
        names = ", ".join(f"config.augment.{name}" for name in device_only)
        return "device", f"{names} only run in the device pipeline"
    if tf_only:
        names = ", ".join(f"config.augment.{name}" for name in tf_only)
        return "tf", f"{names} only run in tf.data"
    if any(d is None for d in info.image_shape):
        return "tf", "the images have no common size (set config.dataset.image_size)"
    _, processes = batching.process_index_and_count()
    examples = split_size(info, config.dataset.train_split) / processes
    needed = examples * math.prod(info.image_shape) / jax.local_device_count()
    budget = DEVICE_MEMORY_FRACTION * device_memory_bytes()
    size = f"{needed / 2**20:,.1f} MiB per device"
    if needed > budget:
        return "tf", (
            f"the decoded training split ({size}) is more than "
            f"{DEVICE_MEMORY_FRACTION:.0%} of a device's memory ({budget / 2**30:,.1f} GiB)"
        )
    return "device", f"the decoded training split ({size}) fits and every augmentation runs there"


def resolve(config, info, log=True):
    """A copy of config with pipeline 'auto' replaced by the choice (logged when `log`)."""
    pipeline, why = choose(config, info)
    if config.dataset.pipeline == pipeline:
        return config
    config = config.copy_and_resolve_references()
    config.dataset.pipeline = pipeline
    if log:
        logging.info("Input pipeline: %s (config.dataset.pipeline='auto': %s).", pipeline, why)
    return config
