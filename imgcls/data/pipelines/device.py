"""The device-resident train pipeline: the whole train split as uint8 on the accelerators.

For datasets that fit in accelerator memory (CIFAR-10 is 150 MB), reading, shuffling and
augmenting on the host is the bottleneck of small models. Here the split is decoded once (by the
eval preprocessing, so images already have the model's size), put on the devices of the 'data'
mesh axis, and every batch is gathered and augmented by one jitted function: no TensorFlow and
no host-to-device copy in the training loop.

What runs here of config.augment is the augmentation table's DEVICE column (alternating_flip
and cutout run only here): imgcls.data.augment.table.

Every device holds the whole split (when it fits: DEVICE_MEMORY_FRACTION of a device's memory)
and the epoch's order is one permutation of it keyed by (seed, epoch); device d takes its part
of the global batch, and each example's augmentation is keyed by (seed, step, its position in
the global batch). So the global batches are a pure function of (seed, step), the same on 1, 2
or 8 devices and any number of processes, and a run resumed on another device count continues
on the same data. When the split does not fit on every device, each device holds and shuffles a
shard of it instead (up to devices - 1 examples per process left out), and the order then
depends on the device count (the log says so). Resuming at a step reproduces the batches.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import PartitionSpec as P

from imgcls import parallel
from imgcls.data import batching
from imgcls.data.augment import jax_ops, table
from imgcls.data.balance import balanced_class_weights
from imgcls.data.info import split_size
from imgcls.data.pipelines import tf_data

AXIS = parallel.AXIS
# Keys distinct from the train step's.
_PERMUTATION_SALT, _AUGMENT_SALT, _SAMPLING_SALT, _FLIP_SALT = 3, 4, 5, 6


def load_split(config, info, split, whole=False):
    """(images uint8 [n, H, W, C], labels int32 [n]) of this process's slice of `split`, or of
    all of it (`whole`). Decoded and resized by the tf.data eval pipeline, once.
    """
    images, labels = [], []
    processes = (0, 1) if whole else None
    for batch in tf_data.create_eval_iterator(config, info, split, processes=processes):
        images.append(batch["image"][batch["mask"]])
        labels.append(batch["label"][batch["mask"]])
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def batch_augmenter(config, info):
    """f(uint8 batch, keys, mirror=None) -> the batch augmented as config.augment says (keys:
    one per example, or one), as this pipeline does it (--mode=inspect shows the same):
    random-resized crop when the images are at their native size, cutout filled with the
    dataset's mean."""
    channels = info.image_shape[-1]
    mean = list(config.dataset.mean) * (channels if len(config.dataset.mean) == 1 else 1)
    fill = tuple(int(round(255 * m)) for m in mean)  # cutout: the mean, 0 once normalized
    return functools.partial(
        jax_ops.augment_batch,
        aug=config.augment,
        fill=fill,
        native_size=config.dataset.image_size == 0,
    )


def _key(seed, salt, *data):
    key = jax.random.fold_in(jax.random.key(seed), salt)
    for value in data:
        key = jax.random.fold_in(key, value)
    return key


def fits_replicated(info, split) -> bool:
    """Whether the decoded split fits on every device (within DEVICE_MEMORY_FRACTION)."""
    from imgcls.data.pipelines import choice

    needed = split_size(info, split) * math.prod(info.image_shape)
    return needed <= choice.DEVICE_MEMORY_FRACTION * choice.device_memory_bytes()


class DeviceTrainIterator:
    """Iterator of global train batches {'image': uint8, 'label': int32} sharded over 'data'."""

    def __init__(self, config, info, start_step=0, mesh=None):
        native = config.dataset.image_size == 0
        table.check_implemented(config.augment, table.DEVICE, native)  # before loading data
        self.mesh = mesh if mesh is not None else parallel.create_mesh()
        self.seed, self.step = int(config.seed), int(start_step)
        self.steps_per_epoch = batching.steps_per_epoch(config, info)
        num_devices = self.mesh.devices.size
        parallel.check_batch_size(config.batch_size, self.mesh)
        self.global_batch, self.device_batch = config.batch_size, config.batch_size // num_devices
        split = config.dataset.train_split
        self.replicated = fits_replicated(info, split)
        if self.replicated:  # every device: the whole split, in one global order
            images, labels = load_split(config, info, split, whole=True)
            sharding, self.examples = parallel.replicated(self.mesh), len(images)
        else:  # every device: its shard, in its own order
            _, process_count = batching.process_index_and_count()
            local_devices = num_devices // process_count
            self.examples = split_size(info, split) // process_count // local_devices
            images, labels = load_split(config, info, split)
            keep = self.examples * local_devices
            images, labels = images[:keep], labels[:keep]
            sharding = parallel.batch_sharded(self.mesh)
            logging.info(
                "The device pipeline shards the training split over the %d devices (the whole "
                "split does not fit on each): the order of its examples depends on the device "
                "count.",
                num_devices,
            )
        self.images = jax.make_array_from_process_local_data(sharding, images)
        self.labels = jax.make_array_from_process_local_data(sharding, labels)
        data_spec = P() if self.replicated else P(AXIS)

        # Class weights for balanced sampling; otherwise a placeholder argument of the gather,
        # made once (an array made per batch costs ~30 us).
        self.balanced = config.dataset.balance == "sampling"
        self.sample_weights = jnp.zeros(())
        if self.balanced:
            counts = tf_data.count_labels(config, info, split)
            weights = balanced_class_weights(counts)
            self.sample_weights = jnp.asarray(weights, jnp.float32)

        self.alternating_flip = bool(config.augment.alternating_flip)
        self._permute = parallel.data_parallel(
            self._permute_examples, self.mesh, in_specs=(P(),), out_specs=data_spec
        )
        self._gather = parallel.data_parallel(
            self._gather_batch,
            self.mesh,
            in_specs=(data_spec, data_spec, data_spec, P(), P()),
            out_specs=P(AXIS),
        )
        self._augment = batch_augmenter(config, info)
        self._epoch, self._epoch_order = None, None

    def _shard_id(self):
        """The device's key salt: 0 for every device when the order is global."""
        return 0 if self.replicated else lax.axis_index(AXIS)

    def _permute_examples(self, epoch):
        """The epoch's order of the examples (the split's, or this device's shard's); with the
        alternating flip, also which are mirrored this epoch (a fixed half, the other half next
        epoch)."""
        shard = self._shard_id()
        key = _key(self.seed, _PERMUTATION_SALT, epoch, shard)
        permutation = jax.random.permutation(key, self.examples)
        if not self.alternating_flip:
            return permutation
        flip_key = _key(self.seed, _FLIP_SALT, shard)
        return permutation, jax_ops.alternating_flip_mask(flip_key, self.examples, epoch)

    def _gather_batch(self, images, labels, epoch_order, step, weights):
        """This device's part of the global batch of `step`, augmented."""
        permutation, mirrored = epoch_order if self.alternating_flip else (epoch_order, None)
        shard, device = self._shard_id(), lax.axis_index(AXIS)
        # Where this device's examples start in the batch its shard serves.
        offset = device * self.device_batch if self.replicated else 0
        batch_size = self.global_batch if self.replicated else self.device_batch
        if not self.balanced:
            position = (step % self.steps_per_epoch) * batch_size + offset
            index = lax.dynamic_slice(permutation, (position,), (self.device_batch,))
        else:  # balanced: classes drawn equally often, with replacement
            probabilities = weights[labels]
            key = _key(self.seed, _SAMPLING_SALT, step, shard)
            drawn = jax.random.choice(
                key, self.examples, (batch_size,), p=probabilities / probabilities.sum()
            )
            index = lax.dynamic_slice(drawn, (offset,), (self.device_batch,))
        batch = {"image": images[index], "label": labels[index]}
        mirror = None if mirrored is None else mirrored[index]
        # One key per example, by its place in the global batch (in its shard's, when sharded).
        base = _key(self.seed, _AUGMENT_SALT, step, shard)
        places = offset + jnp.arange(self.device_batch)
        keys = jax.vmap(lambda place: jax.random.fold_in(base, place))(places)
        batch["image"] = self._augment(batch["image"], keys, mirror=mirror)
        return batch

    def __iter__(self):
        return self

    def __next__(self):
        epoch = self.step // self.steps_per_epoch
        if epoch != self._epoch:
            # Once per epoch: the shard's order (and, with the alternating flip, its mirroring).
            self._epoch, self._epoch_order = epoch, self._permute(np.int32(epoch))
        # The step goes in as a host scalar: jnp.int32(step) would cost a dispatch per batch.
        batch = self._gather(
            self.images, self.labels, self._epoch_order, np.int32(self.step), self.sample_weights
        )
        self.step += 1
        return batch
