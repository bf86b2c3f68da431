"""Input pipelines: dataset metadata and per-process batch iterators.

Importing this package does not import TensorFlow: DatasetInfo, the batch arithmetic and
normalize are TF-free, and the functions that build tf.data pipelines import their modules
on first call. Models and training can therefore run where TensorFlow is not installed.
"""

from imgcls.data.info import DatasetInfo, num_eval_batches, steps_per_epoch
from imgcls.data.normalize import normalize

__all__ = [
    "DatasetInfo",
    "create_eval_iterator",
    "count_labels",
    "create_train_iterator",
    "get_dataset_info",
    "normalize",
    "num_eval_batches",
    "steps_per_epoch",
]


def get_dataset_info(config):
    """DatasetInfo of config.dataset (prepares TFDS data into config.dataset.data_dir once)."""
    from imgcls.data import pipeline

    return pipeline.get_dataset_info(config)


def create_train_iterator(config, info, start_step=0):
    """Infinite iterator of host-local train batches {'image': uint8, 'label': int32}.

    Deterministic in (config.seed, process index, start_step); resuming at start_step yields
    exactly the batches an uninterrupted run yields from that step on.
    """
    from imgcls.data import pipeline

    return pipeline.create_train_iterator(config, info, start_step)


def create_eval_iterator(config, info, split=None):
    """Finite iterator of host-local eval batches {'image', 'label', 'mask', 'index'}.

    Padded and masked so every example of the split is seen exactly once; `index` is the
    example's position in the split (-1 for padding). split defaults to config.dataset.eval_split.
    """
    from imgcls.data import pipeline

    return pipeline.create_eval_iterator(config, info, split)


def count_labels(config, info, split):
    """Examples per class (int array of length num_classes) in the whole split."""
    from imgcls.data import pipeline

    return pipeline.count_labels(config, info, split)
