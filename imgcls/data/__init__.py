"""Data: sources of examples, input pipelines, augmentations; this module is the data API.

sources/ (TFDS catalog, digits, synthetic, image folders: one interface and a registry),
pipelines/ (tf.data and device-resident batch iterators, and 'auto' between them), augment/
(the augmentation table and its ops), images.py (reading untrusted image bytes), splits.py,
batching.py, normalize.py, balance.py, auto.py ('auto' image settings), info.py (DatasetInfo),
preprocess.py (resizing and crops in TF), _tf.py (the one TensorFlow import). Importing this
package does not import TensorFlow: the functions below import the pipelines on first call, so
models and training run where TensorFlow is not installed. May import the top-level leaves
(values, parallel); never models, config or anything above.
"""

import jax
from jax.experimental import multihost_utils

from imgcls.data.augment import table as augment_table
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
    "prepare_dataset",
    "process_zero_first",
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
    from imgcls.data.pipelines import tf_data

    return tf_data.get_dataset_info(config)


def process_zero_first(fn, config):
    """fn(config) in every process, process 0 first: it prepares the data (preparation must not
    race across hosts) while the others wait, then they read what it prepared."""
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            fn(config)
        multihost_utils.sync_global_devices("imgcls: dataset prepared")
    return fn(config)


def prepare_dataset(config):
    """get_dataset_info(config), with several processes process 0 first (process_zero_first)."""
    return process_zero_first(get_dataset_info, config)


def resolve_dataset(config):
    """(a copy of config with every 'auto' dataset value and split key resolved, its DatasetInfo,
    notes for the log: what was chosen and why).

    Prepares the data on first use. The split keys are found by their common names
    (imgcls.data.splits); image_size, channels, mean and std from the statistics the source
    recorded (imgcls.data.auto). A config without 'auto' values comes back as it was, its
    validation_fraction turned into split slices.
    """
    from imgcls.data.pipelines import tf_data

    return tf_data.resolve_dataset(config)


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
    augment_table.check_implemented(config.augment, augment_table.TF)
    from imgcls.data.pipelines import tf_data

    return tf_data.create_train_iterator(config, info, start_step)


def create_eval_iterator(config, info, split=None):
    """Finite iterator of host-local eval batches {'image', 'label', 'mask', 'index'}.

    Padded and masked so every example of the split is seen exactly once; `index` is the
    example's position in the split (-1 for padding). split defaults to config.dataset.eval_split.
    """
    from imgcls.data.pipelines import tf_data

    return tf_data.create_eval_iterator(config, info, split)


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
    from imgcls.data.pipelines import tf_data

    return tf_data.count_labels(config, info, split)
