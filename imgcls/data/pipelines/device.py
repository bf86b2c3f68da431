"""The device-resident train pipeline: the whole train split as uint8 on the accelerators.

For datasets that fit in accelerator memory (CIFAR-10 is 150 MB), reading, shuffling and
augmenting on the host is the bottleneck of small models. Here the split is decoded once (by the
eval preprocessing, so images already have the model's size), split evenly over the devices
of the 'data' mesh axis, and every batch is gathered and augmented by one jitted function:
no TensorFlow and no host-to-device copy in the training loop.

What runs here of config.augment is the augmentation table's DEVICE column (alternating_flip
and cutout run only here): imgcls.data.augment.table.

Each device shuffles its own shard per epoch (a permutation keyed by seed, epoch and device),
so an epoch covers every kept example once, as the tf.data pipeline does; the examples of a
device stay on that device. Up to devices - 1 examples per process are left out so that the
shards have equal size. Batches are a pure function of (seed, step, device count): resuming
at a step reproduces them exactly.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
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


def load_split(config, info, split):
    """(images uint8 [n, H, W, C], labels int32 [n]) of this process's slice of `split`.

    Decoded and resized by the tf.data eval pipeline, once.
    """
    images, labels = [], []
    for batch in tf_data.create_eval_iterator(config, info, split):
        images.append(batch["image"][batch["mask"]])
        labels.append(batch["label"][batch["mask"]])
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def batch_augmenter(config, info):
    """f(uint8 batch, key, mirror=None) -> the batch augmented as config.augment says, as this
    pipeline does it (--mode=inspect shows the same): random-resized crop when the images are
    at their native size, cutout filled with the dataset's mean."""
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
        self.device_batch = config.batch_size // num_devices

        _, process_count = batching.process_index_and_count()
        local_devices = num_devices // process_count
        split = config.dataset.train_split
        per_device = split_size(info, split) // process_count // local_devices
        images, labels = load_split(config, info, split)
        keep = per_device * local_devices
        sharding = parallel.batch_sharded(self.mesh)
        self.images = jax.make_array_from_process_local_data(sharding, images[:keep])
        self.labels = jax.make_array_from_process_local_data(sharding, labels[:keep])
        self.per_device = per_device

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
            self._permute_shard, self.mesh, in_specs=(P(),), out_specs=P(AXIS)
        )
        self._gather = parallel.data_parallel(
            self._gather_batch,
            self.mesh,
            in_specs=(P(AXIS), P(AXIS), P(AXIS), P(), P()),
            out_specs=P(AXIS),
        )
        self._augment = batch_augmenter(config, info)
        self._epoch, self._epoch_order = None, None

    def _permute_shard(self, epoch):
        """The epoch's order of this device's shard; with the alternating flip, also which of
        its examples are mirrored this epoch (a fixed half, the other half next epoch)."""
        device = lax.axis_index(AXIS)
        key = _key(self.seed, _PERMUTATION_SALT, epoch, device)
        permutation = jax.random.permutation(key, self.per_device)
        if not self.alternating_flip:
            return permutation
        flip_key = _key(self.seed, _FLIP_SALT, device)
        return permutation, jax_ops.alternating_flip_mask(flip_key, self.per_device, epoch)

    def _gather_batch(self, images, labels, epoch_order, step, weights):
        permutation, mirrored = epoch_order if self.alternating_flip else (epoch_order, None)
        device = lax.axis_index(AXIS)
        position = (step % self.steps_per_epoch) * self.device_batch
        if not self.balanced:
            index = lax.dynamic_slice(permutation, (position,), (self.device_batch,))
        else:  # balanced: classes drawn equally often, with replacement
            probabilities = weights[labels]
            key = _key(self.seed, _SAMPLING_SALT, step, device)
            index = jax.random.choice(
                key, self.per_device, (self.device_batch,), p=probabilities / probabilities.sum()
            )
        batch = {"image": images[index], "label": labels[index]}
        mirror = None if mirrored is None else mirrored[index]
        key = _key(self.seed, _AUGMENT_SALT, step, device)
        batch["image"] = self._augment(batch["image"], key, mirror=mirror)
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
