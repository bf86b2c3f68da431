"""Dataset metadata and batch arithmetic, free of TensorFlow.

Training needs the number of classes, the image shape and the number of steps per epoch to
build the model and the schedule; keeping those here lets models and training import without
TensorFlow. Every process computes the same numbers from the same config and metadata, which
is what keeps multi-host runs in lockstep.
"""

import dataclasses
import math

import jax


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the code needs to know about a dataset.

    image_shape is (H, W, C) as batches have it after preprocessing (after any resize).
    split_sizes maps each split name (and the configured split expressions, such as
    'train[:90%]') to its number of examples.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    split_sizes: dict[str, int]


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


def split_size(info, split):
    """Number of examples in `split`, with a helpful error for an unknown split."""
    if split not in info.split_sizes:
        available = ", ".join(repr(s) for s in sorted(info.split_sizes))
        raise ValueError(
            f"Dataset '{info.name}' has no split '{split}'. Available splits: {available}. "
            "Slice expressions such as 'train[:90%]' work when set as "
            "config.dataset.train_split or config.dataset.eval_split."
        )
    return info.split_sizes[split]


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
            f"({num_examples} examples in all); use a smaller config.batch_size."
        )
    return per_process // batch


def num_eval_batches(config, info, split=None):
    """Eval batches per process, the same on every process: ceil(ceil(n / P) / host_batch)."""
    split = split or config.dataset.eval_split
    num_examples = split_size(info, split)
    _, count = process_index_and_count()
    batch = host_batch_size(config.eval_batch_size, key="config.eval_batch_size")
    return math.ceil(math.ceil(num_examples / count) / batch)


def balanced_class_weights(counts):
    """n / (K * n_c) for each class c of the K classes present (0 for an absent class).

    Weighting (or repeating) each example by its class's value makes every class count the
    same while the total stays n: the class-weighted loss and balanced sampling both use it.
    """
    import numpy as np

    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def validation_split(config):
    """The split evaluated during training (model selection, early stopping)."""
    return config.dataset.validation_split or config.dataset.eval_split


def resolve_splits(config, info):
    """A copy of config with validation_fraction turned into explicit split expressions.

    With validation_fraction f > 0, the last round(f * n) examples of train_split become the
    validation split and the others the training split, as absolute TFDS slices (exact, and
    saved so in W/config.json), e.g. 'train[:1298]' and 'train[1298:]'.
    """
    config = config.copy_and_resolve_references()
    fraction, ds = float(config.dataset.validation_fraction), config.dataset
    if fraction == 0:
        return config
    if not 0 < fraction < 1:
        raise ValueError(f"config.dataset.validation_fraction={fraction} must be in [0, 1).")
    if ds.validation_split:
        raise ValueError(
            f"config.dataset.validation_split='{ds.validation_split}' and validation_fraction="
            f"{fraction} are both set; keep one."
        )
    if "[" in ds.train_split:
        raise ValueError(
            f"config.dataset.validation_fraction needs a plain train_split, not "
            f"'{ds.train_split}'; slice it yourself with validation_split instead."
        )
    num_examples = split_size(info, ds.train_split)
    num_train = num_examples - round(fraction * num_examples)
    if not 0 < num_train < num_examples:
        raise ValueError(
            f"config.dataset.validation_fraction={fraction} of the {num_examples} examples of "
            f"'{ds.train_split}' leaves an empty training or validation split."
        )
    ds.validation_split = f"{ds.train_split}[{num_train}:]"
    ds.train_split = f"{ds.train_split}[:{num_train}]"
    ds.validation_fraction = 0.0
    return config
