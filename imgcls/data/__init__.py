"""Input pipelines: dataset metadata and per-process batch iterators.

Importing this package does not import TensorFlow: DatasetInfo, the batch arithmetic and
normalize are TF-free, and the functions that build tf.data pipelines import their modules
on first call. Models and training can therefore run where TensorFlow is not installed.
"""

from imgcls.data.augment import jax_ops as jax_augment
from imgcls.data.balance import balanced_class_weights, check_balance
from imgcls.data.batching import num_eval_batches, steps_per_epoch
from imgcls.data.info import DatasetInfo
from imgcls.data.normalize import normalize
from imgcls.data.pipelines.choice import resolve as resolve_pipeline
from imgcls.data.splits import resolve_splits, validation_split

__all__ = [
    "DatasetInfo",
    "class_weights",
    "eval_batches",
    "create_eval_iterator",
    "count_labels",
    "create_train_iterator",
    "get_dataset_info",
    "normalize",
    "num_eval_batches",
    "resolve_dataset",
    "resolve_pipeline",
    "resolve_splits",
    "steps_per_epoch",
    "validation_split",
]

# The functions below import the pipelines when called, not here: they import TensorFlow.


def get_dataset_info(config):
    """DatasetInfo of config.dataset (prepares TFDS data into config.dataset.data_dir once)."""
    from imgcls.data.pipelines import tf_data as pipeline

    return pipeline.get_dataset_info(config)


def resolve_dataset(config):
    """(a copy of config with every 'auto' dataset value and split key resolved, its DatasetInfo,
    notes for the log: what was chosen and why).

    Prepares the data on first use. The split keys are found by their common names
    (imgcls.data.splits); image_size, channels, mean and std from the statistics the source
    recorded (imgcls.data.auto). A config without 'auto' values comes back as it was, its
    validation_fraction turned into split slices.
    """
    from imgcls.data.pipelines import tf_data as pipeline

    return pipeline.resolve_dataset(config)


def create_train_iterator(config, info, start_step=0, mesh=None):
    """Infinite iterator of train batches {'image': uint8, 'label': int32}.

    Deterministic in (config.seed, process index, start_step); resuming at start_step yields
    exactly the batches an uninterrupted run yields from that step on. With
    config.dataset.pipeline 'tf' the batches are host-local numpy arrays; with 'device' they
    are global arrays already sharded over `mesh` (all devices when None); 'auto' picks one
    (imgcls.data.pipelines.choice).
    """
    config = resolve_pipeline(config, info, log=False)
    if config.dataset.pipeline == "device":
        from imgcls.data.pipelines import device as device_pipeline

        return device_pipeline.DeviceTrainIterator(config, info, start_step, mesh)
    if config.dataset.pipeline != "tf":
        raise ValueError(
            f"config.dataset.pipeline='{config.dataset.pipeline}' is not 'auto', 'tf' or 'device'."
        )
    device_only = jax_augment.device_only_augmentations(config.augment)
    if device_only:
        keys = ", ".join(f"config.augment.{n}={config.augment[n]!r}" for n in device_only)
        raise ValueError(
            f"{keys}: only the device input pipeline implements these; set "
            "config.dataset.pipeline='device' (or 'auto') or switch them off."
        )
    from imgcls.data.pipelines import tf_data as pipeline

    return pipeline.create_train_iterator(config, info, start_step)


def create_eval_iterator(config, info, split=None):
    """Finite iterator of host-local eval batches {'image', 'label', 'mask', 'index'}.

    Padded and masked so every example of the split is seen exactly once; `index` is the
    example's position in the split (-1 for padding). split defaults to config.dataset.eval_split.
    """
    from imgcls.data.pipelines import tf_data as pipeline

    return pipeline.create_eval_iterator(config, info, split)


def eval_batches(config, info, split):
    """A function returning a fresh create_eval_iterator(config, info, split) on each call.

    With the device pipeline the batches are decoded once and then replayed from host memory,
    so evaluations during training run without TensorFlow.
    """
    if resolve_pipeline(config, info, log=False).dataset.pipeline != "device":
        return lambda: create_eval_iterator(config, info, split)
    batches = list(create_eval_iterator(config, info, split))
    return lambda: iter(batches)


def class_weights(config, info):
    """Per-class loss weights (balanced_class_weights) for balance 'loss', else None."""
    if check_balance(config) != "loss":
        return None
    counts = count_labels(config, info, config.dataset.train_split)
    return tuple(float(w) for w in balanced_class_weights(counts))


def count_labels(config, info, split):
    """Examples per class (int array of length num_classes) in the whole split."""
    from imgcls.data.pipelines import tf_data as pipeline

    return pipeline.count_labels(config, info, split)
