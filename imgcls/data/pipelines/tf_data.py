"""Per-process batch iterators with exact resume.

The train stream is a pure function of (config.seed, process index, start_step): epoch e is a
shuffle of this process's slice seeded by (seed, e), cut to exactly steps_per_epoch batches, and
every augmentation is keyed by (seed, process, e, index within the epoch). Resuming at step s
therefore rebuilds epoch s // steps_per_epoch and skips the first batches before they are
decoded or augmented, and yields bit-identical batches to an uninterrupted run.
"""

import itertools
import os

import numpy as np
from absl import logging

from imgcls.data import auto, batching, preprocess, splits
from imgcls.data._tf import AUTOTUNE, tf
from imgcls.data.balance import balanced_class_weights
from imgcls.data.info import DatasetInfo, split_size
from imgcls.data.sources import registry as sources
from imgcls.values import is_auto

CACHE_MEMORY_FRACTION = 0.25  # the decoded train split is cached only below this share of RAM


def _options():
    options = tf.data.Options()
    options.deterministic = True
    return options


def _epoch_seed(seed, epoch):
    """A well-mixed 31-bit seed (what tf.data keeps of a seed) for the shuffle of `epoch`."""
    state = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(1, np.uint32)
    return int(state[0]) >> 1


def get_dataset_info(config):
    """Metadata of config.dataset (preparing the TFDS data on first use); its 'auto' values must
    have been resolved (resolve_dataset)."""
    ds = config.dataset
    unresolved = [k for k in auto.AUTO_KEYS + splits.AUTO_KEYS if is_auto(ds[k])]
    if unresolved:
        raise ValueError(
            f"config.dataset.{unresolved[0]}='auto' is not resolved: a run resolves it first "
            "(imgcls.data.resolve_dataset)."
        )
    source = sources.get_source(config)
    extra = tuple(s for s in (ds.train_split, ds.validation_split, ds.eval_split) if s)
    return DatasetInfo(
        name=config.dataset.name,
        num_classes=source.num_classes,
        class_names=source.class_names,
        image_shape=preprocess.output_shape(config, source.image_shape),
        split_sizes=source.split_sizes(extra),
    )


def resolve_dataset(config):
    """(config with its split keys and 'auto' image settings resolved, DatasetInfo, notes).

    The splits first (imgcls.data.splits), then image_size, channels, mean and std from the
    source's image_statistics of the training split (imgcls.data.auto).
    """
    source = sources.get_source(config)
    config, labels_notes = source.resolve_settings(config)
    ds = config.dataset
    sizes = source.split_sizes()
    if not sizes:  # no split metadata (tfds.testing.mock_data): count the configured splits
        configured = (ds.train_split, ds.validation_split, ds.eval_split)
        sizes = source.split_sizes(tuple(s for s in configured if s and not is_auto(s)))
    config, notes = splits.split_plan(config, sizes, ds.name)
    stats = source.image_statistics(splits.base_split(config.dataset.train_split))
    config, more = auto.resolve_images(config, stats, source.image_shape, ds.name)
    info = get_dataset_info(config)
    described = splits.describe_splits(config, info.split_sizes)
    return config, info, [*labels_notes, described, *notes, *more]


def create_train_iterator(config, info, start_step=0):
    """Infinite iterator of host-local {'image': uint8 [B, H, W, C], 'label': int32 [B]}.

    B = config.batch_size // process_count. The batches from start_step on are exactly those
    that create_train_iterator(config, info, 0) yields from index start_step on.
    """
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    spe = batching.steps_per_epoch(config, info)  # Validates the split and the batch size.
    batch = batching.host_batch_size(config.batch_size)
    index, count = batching.process_index_and_count()
    first_epoch, skip_batches = divmod(start_step, spe)
    source = sources.get_source(config)
    rates = None
    if config.dataset.balance == "sampling":
        counts = count_labels(config, info, config.dataset.train_split)
        rates = balanced_class_weights(counts)  # expected copies of each example
    return _train_batches(
        config, info, source, index, count, spe, batch, first_epoch, skip_batches * batch, rates
    )


def _resample(ds, rates, key):
    """Repeats each example floor(rate + u) times, u ~ U[0, 1) keyed by its position.

    Each class then contributes the same expected number of examples; the stream is a pure
    function of the key, so resuming replays it exactly.
    """
    rates = tf.constant(rates, tf.float32)

    def copies(position, example):
        rate = tf.gather(rates, tf.cast(example["label"], tf.int32))
        uniform = tf.random.stateless_uniform(
            [], seed=tf.random.experimental.stateless_fold_in(key, position)
        )
        repeats = tf.cast(tf.floor(rate + uniform), tf.int64)
        return tf.data.Dataset.from_tensors(example).repeat(repeats)

    return ds.enumerate().flat_map(copies).repeat()  # repeat: the stream's length varies


def _fits_in_memory(source, num_examples):
    """Whether this process's decoded slice of the train split fits the cache budget.

    The estimate uses the source's typical image shape (e.g. an image folder's median size);
    when it is not known, config.dataset.cache is trusted.
    """
    shape = source.typical_image_shape()
    if any(d is None for d in shape):
        return True
    _, count = batching.process_index_and_count()
    needed = float(np.prod(shape)) * num_examples / count
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * CACHE_MEMORY_FRACTION
    if needed <= budget:
        return True
    logging.warning(
        "Not caching the decoded train split (config.dataset.cache): it needs about %.1f GiB, "
        "more than %.0f%% of this machine's memory. Reading and decoding it every epoch instead.",
        needed / 2**30,
        100 * CACHE_MEMORY_FRACTION,
    )
    return False


def _train_batches(config, info, source, index, count, spe, batch, first_epoch, skip, rates):
    ds_config = config.dataset
    split, seed = ds_config.train_split, int(config.seed)
    cached = None
    if ds_config.cache and _fits_in_memory(source, split_size(info, split)):
        cached = source.read(split, index, count).map(source.decode, num_parallel_calls=AUTOTUNE)
        cached = cached.cache()
    base_key = tf.constant([seed, index], tf.int64)

    for epoch in itertools.count(first_epoch):
        epoch_seed = _epoch_seed(seed, epoch)
        ds = cached if cached is not None else source.read(split, index, count, epoch_seed)
        decoded = cached is not None
        epoch_key = tf.random.experimental.stateless_fold_in(base_key, epoch)
        if rates is not None:
            if not decoded and "label" not in ds.element_spec:  # synthetic: label from decode
                ds, decoded = ds.map(source.decode, num_parallel_calls=AUTOTUNE), True
            resample_key = tf.random.experimental.stateless_fold_in(epoch_key, -1)
            ds = _resample(ds, rates, resample_key)
        if ds_config.shuffle_buffer_size > 1:
            ds = ds.shuffle(
                ds_config.shuffle_buffer_size, seed=epoch_seed, reshuffle_each_iteration=False
            )
        ds = ds.take(spe * batch).enumerate()
        if skip:
            ds, skip = ds.skip(skip), 0

        def prepare(position, example, epoch_key=epoch_key, decoded=decoded):
            if not decoded:
                example = source.decode(example)
            key = tf.random.experimental.stateless_fold_in(epoch_key, position)
            return preprocess.preprocess_train(example, key, config, info.image_shape)

        ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
        ds = ds.batch(batch, drop_remainder=True).prefetch(AUTOTUNE).with_options(_options())
        yield from ds.as_numpy_iterator()


def create_eval_iterator(config, info, split=None, processes=None):
    """Finite iterator of host-local {'image', 'label', 'mask', 'index'} batches.

    Batches hold eval_batch_size / P examples. Each example of this process's slice appears
    once, in a fixed order, with `index` its position in the split; the last batch is padded
    with zeros, mask False and index -1, and every process yields num_eval_batches batches.
    `processes` = (index, count) reads that slice instead ((0, 1): the whole split).
    """
    split = split or config.dataset.eval_split
    num_batches = batching.num_eval_batches(config, info, split)  # Validates split and batch.
    batch = batching.host_batch_size(config.eval_batch_size, key="config.eval_batch_size")
    index, count = batching.process_index_and_count()
    if processes is not None and tuple(processes) != (index, count):
        index, count = processes
        batch = config.eval_batch_size
        num_batches = -(-split_size(info, split) // (count * batch))
    first, _ = batching.process_slice(split_size(info, split), index, count)
    source = sources.get_source(config)

    def prepare(position, raw):
        example = preprocess.preprocess_eval(source.decode(raw), config, info.image_shape)
        return {**example, "mask": tf.constant(True), "index": position}

    padding = {
        "image": tf.zeros(info.image_shape, tf.uint8),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(False),
        "index": tf.constant(-1, tf.int64),
    }
    ds = source.read(split, index, count).enumerate(first).map(prepare, AUTOTUNE)
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
    ds = ds.take(num_batches * batch).batch(batch).prefetch(AUTOTUNE).with_options(_options())
    return iter(ds.as_numpy_iterator())


def count_labels(config, info, split):
    """Examples per class in the whole split (read by this process alone, labels only)."""
    source = sources.get_source(config)
    ds = source.read(split, 0, 1)
    if "label" not in ds.element_spec:  # synthetic: labels come with decoding
        ds = ds.map(source.decode, AUTOTUNE)
    labels = ds.map(lambda ex: ex["label"], AUTOTUNE).batch(8192).prefetch(AUTOTUNE)
    counts = np.zeros(info.num_classes, np.int64)
    for chunk in labels.as_numpy_iterator():
        counts += np.bincount(chunk, minlength=info.num_classes)
    return counts
