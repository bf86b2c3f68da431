"""What a data source is: the one interface between a dataset and the input pipelines.

A source reads one process's slice of a split as *raw* examples in a fixed order and decodes
them separately. Keeping decoding apart lets the pipeline shuffle and skip examples (to resume
mid-epoch) before paying for decoding, and cache the decoded examples when they fit in memory.
Decoded examples are {'image': uint8 [H, W, C], 'label': int32}.

Sources are registered by name in imgcls.data.sources.registry (TFDS's catalog is the default); the
pipelines, the resolution of 'auto' config values and --mode=inspect ask a source, never the
dataset's name, what they need to know.
TF-free: the implementations import TensorFlow, this interface does not.
"""


def unknown_split(name, split, available):
    listed = ", ".join(repr(s) for s in sorted(available))
    return ValueError(
        f"Dataset '{name}' has no split '{split}'. Available splits: {listed}. Set the split "
        "with --config.dataset.train_split, validation_split or eval_split."
    )


class Source:
    """The interface (and the defaults of its optional parts) of every data source.

    Attributes: name, num_classes, class_names, image_shape ((H, W, C); None for a size that
    varies from image to image).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple

    def split_sizes(self, extra_splits=()) -> dict[str, int]:
        """Sizes of all splits plus the requested split expressions (e.g. 'train[:90%]');
        ValueError for a split the source does not have."""
        raise NotImplementedError

    def read(self, split, index, count, shuffle_seed=None):
        """A tf.data.Dataset of the raw examples of process `index`'s even slice of `split`
        (of `count` processes), in a fixed order, or in file order seeded by shuffle_seed."""
        raise NotImplementedError

    def decode(self, raw):
        """A raw example -> {'image': uint8 [H, W, C], 'label': int32} (TensorFlow ops)."""
        raise NotImplementedError

    def recorded_image_sizes(self, split) -> dict | None:
        """{'sampled', 'height', 'width'} (min / median / max) of every image of `split` when
        the source recorded them; None when they must be sampled by decoding."""
        del split
        return None

    def image_statistics(self, split) -> dict | None:
        """What config.dataset's 'auto' values are resolved from (imgcls.data.auto), when the
        source recorded it; None otherwise. Over all images: 'images' (count), 'grayscale'
        (count), 'height', 'width', 'shorter_side' ({'min', 'median', 'max'}); of `split`:
        'pixels' ({'split', 'images', 'mean_rgb', 'std_rgb', 'mean_gray', 'std_gray'} in [0, 1]
        units, or None)."""
        del split
        return None

    def resolve_settings(self, config) -> tuple:
        """(config, notes for the log) with the source's own 'auto' values resolved from what it
        found (an image folder's labels file and columns); the config is changed in place (a
        resolved copy is expected). Nothing to resolve by default."""
        return config, []

    def typical_image_shape(self) -> tuple:
        """A typical decoded (H, W, C), to estimate memory; image_shape (None where unknown)
        unless the source knows better."""
        return self.image_shape

    def describe(self) -> tuple[dict, list[str]]:
        """(facts about the source, warnings) for --mode=inspect's report."""
        return {}, []
