"""The 'synthetic' source: deterministic, learnable fake images for tests and benchmarks."""

from imgcls.data._tf import tf
from imgcls.data.batching import process_slice
from imgcls.data.sources.base import Source, unknown_split

SYNTHETIC_SPLITS = ("train", "test")
SYNTHETIC_NOISE_STD = 40.0  # per-pixel noise around the class brightness, in uint8 units


class SyntheticSource(Source):
    """Example i has label i % num_classes.

    Its image is the class brightness (label + 0.5) * 255 / num_classes plus Gaussian noise
    from stateless random ops keyed by (seed, split, i), so any slice is reproducible alone.
    """

    def __init__(self, config):
        ds = config.dataset
        self.name = "synthetic"
        self.num_classes = int(ds.num_classes)
        self.class_names = tuple(str(c) for c in range(self.num_classes))
        self.image_shape = tuple(int(d) for d in ds.image_shape)
        self.seed = int(config.seed)
        self.sizes = {"train": int(ds.num_train_examples), "test": int(ds.num_eval_examples)}

    def split_sizes(self, extra_splits=()):
        """Sizes of both splits; raises ValueError for any other requested split."""
        for split in extra_splits:
            if split not in self.sizes:
                raise unknown_split(self.name, split, self.sizes)
        return dict(self.sizes)

    def read(self, split, index, count, shuffle_seed=None):
        """Example indices of process `index`'s slice (no file order to shuffle)."""
        del shuffle_seed
        if split not in self.sizes:
            raise unknown_split(self.name, split, self.sizes)
        start, end = process_slice(self.sizes[split], index, count)
        split_id = SYNTHETIC_SPLITS.index(split)
        return tf.data.Dataset.range(start, end).map(lambda i: {"split": split_id, "index": i})

    def decode(self, raw):
        """Generates the image and label of one example index."""
        key = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(self.seed, tf.int64), tf.cast(raw["split"], tf.int64)]),
            raw["index"],
        )
        label = tf.cast(raw["index"] % self.num_classes, tf.int32)
        brightness = (tf.cast(label, tf.float32) + 0.5) * 255.0 / self.num_classes
        noise = tf.random.stateless_normal(self.image_shape, seed=key) * SYNTHETIC_NOISE_STD
        image = tf.clip_by_value(tf.round(brightness + noise), 0.0, 255.0)
        return {"image": tf.cast(image, tf.uint8), "label": label}
