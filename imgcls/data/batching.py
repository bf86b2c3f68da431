"""Batch arithmetic over processes: each process's slice of a split and its share of a batch.

Every process computes the same numbers from the same config and metadata, which is what
keeps multi-host runs in lockstep. TF-free.
"""

import math

import jax

from imgcls.data.info import split_size


def process_index_and_count():
    """(index, count) of this JAX process; read at call time so tests can simulate hosts."""
    return jax.process_index(), jax.process_count()


def process_slice(num_examples, index, count):
    """[start, end) of process `index`'s slice, distributed like tfds.even_splits."""
    per_process, remainder = divmod(num_examples, count)
    start = index * per_process + min(index, remainder)
    return start, start + per_process + (1 if index < remainder else 0)


def host_batch_size(global_batch_size, key="config.batch_size"):
    """The per-process share of a global batch size; errors if it does not divide evenly."""
    _, count = process_index_and_count()
    if global_batch_size <= 0:
        raise ValueError(f"{key}={global_batch_size} must be positive.")
    if global_batch_size % count:
        raise ValueError(
            f"{key}={global_batch_size} is the global batch over all processes and must be "
            f"divisible by the number of processes ({count}); use a multiple of {count}."
        )
    return global_batch_size // count


def steps_per_epoch(config, info):
    """Batches per epoch, the same on every process: (num_train // processes) // host_batch."""
    split = config.dataset.train_split
    num_examples = split_size(info, split)
    _, count = process_index_and_count()
    batch = host_batch_size(config.batch_size)
    per_process = num_examples // count
    if per_process < batch:
        raise ValueError(
            f"config.batch_size={config.batch_size} ({batch} per process, {count} processes) is "
            f"larger than the {per_process} examples per process of split '{split}' "
            f"({num_examples} examples in all); set a smaller --config.batch_size."
        )
    return per_process // batch


def num_eval_batches(config, info, split=None):
    """Eval batches per process, the same on every process: ceil(ceil(n / P) / host_batch)."""
    split = split or config.dataset.eval_split
    num_examples = split_size(info, split)
    _, count = process_index_and_count()
    batch = host_batch_size(config.eval_batch_size, key="config.eval_batch_size")
    return math.ceil(math.ceil(num_examples / count) / batch)
