"""What the rest of the code needs to know about a dataset, free of TensorFlow.

Training needs the number of classes, the image shape and the split sizes to build the model
and the schedule; keeping those here lets models and training import without TensorFlow.
"""

import dataclasses


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


def split_size(info, split):
    """Number of examples in `split`, with a helpful error for an unknown split."""
    if split not in info.split_sizes:
        available = ", ".join(repr(s) for s in sorted(info.split_sizes))
        raise ValueError(
            f"Dataset '{info.name}' has no split '{split}'. Available splits: {available}. "
            "Set the split with --config.dataset.train_split, validation_split or eval_split "
            "('auto' finds common names; slices such as 'train[:90%]' work too)."
        )
    return info.split_sizes[split]
