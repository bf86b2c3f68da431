"""Where examples come from: the digits builder, an image folder, synthetic data, or TFDS.

A source reads one process's slice of a split as *raw* examples in a fixed order and decodes
them separately. Keeping decoding apart lets the pipeline shuffle and skip examples (to resume
mid-epoch) before paying for decoding, and cache the decoded examples when they fit in memory.
Decoded examples are {'image': uint8 [H, W, C], 'label': int32}.
"""

from imgcls.data._tf import tf, tfds
from imgcls.data.info import process_slice

SYNTHETIC_SPLITS = ("train", "test")
SYNTHETIC_NOISE_STD = 40.0  # per-pixel noise around the class brightness, in uint8 units

_UNKNOWN = (
    "Unknown dataset '{name}' (config.dataset.name): use 'digits', 'synthetic', 'folder' (your "
    "own images at config.dataset.path) or a TFDS catalog name such as cifar10, mnist, "
    "imagenet2012 ..."
)


def _unknown_split(name, split, available):
    listed = ", ".join(repr(s) for s in sorted(available))
    return ValueError(f"Dataset '{name}' has no split '{split}'. Available splits: {listed}.")


class SyntheticSource:
    """Deterministic, learnable fake images: example i has label i % num_classes.

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
                raise _unknown_split(self.name, split, self.sizes)
        return dict(self.sizes)

    def read(self, split, index, count, shuffle_seed=None):
        """Example indices of process `index`'s slice (no file order to shuffle)."""
        del shuffle_seed
        if split not in self.sizes:
            raise _unknown_split(self.name, split, self.sizes)
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


def prepare_builder(make_builder, download_config=None):
    """make_builder()'s builder, prepared: safe when several processes prepare it at once."""
    builder = make_builder()
    if not builder.is_prepared():
        try:
            builder.download_and_prepare(download_config=download_config)
        except FileExistsError:  # another process (a parallel trial, a host) won the race
            builder = make_builder()
            if not builder.is_prepared():
                raise
    return builder


class TFDSSource:
    """A TFDS builder (digits, an image folder or a catalog dataset), prepared on first use."""

    def __init__(self, config, builder=None):
        """Reads `builder` if given (prepared), else the builder named config.dataset.name."""
        ds = config.dataset
        self.name = ds.name
        self.builder = builder if builder is not None else _catalog_builder(ds)
        features = self.builder.info.features
        if not {"image", "label"} <= set(features.keys()):
            raise ValueError(
                f"Dataset '{ds.name}' has features {sorted(features.keys())}; imgcls needs an "
                "'image' and a 'label' feature."
            )
        self.image_feature = features["image"]
        self.num_classes = int(features["label"].num_classes)
        self.class_names = tuple(features["label"].names)
        self.image_shape = tuple(self.image_feature.shape)

    def split_sizes(self, extra_splits=()):
        """Sizes of all splits plus the requested split expressions (e.g. 'train[:90%]')."""
        splits = self.builder.info.splits
        sizes = {name: int(info.num_examples) for name, info in splits.items()}
        has_metadata = bool(sizes)
        for split in extra_splits:
            if split in sizes:
                continue
            if has_metadata:
                try:
                    sizes[split] = int(splits[split].num_examples)
                except (KeyError, ValueError, AssertionError) as e:
                    available = {name: None for name in splits}
                    raise _unknown_split(self.name, split, available) from e
            else:  # No split metadata (e.g. under tfds.testing.mock_data): count instead.
                cardinality = int(self.read(split, 0, 1).cardinality())
                if cardinality < 0:
                    raise _unknown_split(self.name, split, sizes)
                sizes[split] = cardinality
        return sizes

    def read(self, split, index, count, shuffle_seed=None):
        """Undecoded examples of process `index`'s even slice; file order seeded if asked."""
        subsplit = tfds.even_splits(split, n=count)[index] if count > 1 else split
        read_config = tfds.ReadConfig(try_autocache=False, shuffle_seed=shuffle_seed)
        ds = self.builder.as_dataset(
            split=subsplit,
            shuffle_files=shuffle_seed is not None,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
        return ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})

    def decode(self, raw):
        """Decodes the image bytes; the label becomes int32."""
        image = self.image_feature.decode_example(raw["image"])
        return {"image": image, "label": tf.cast(raw["label"], tf.int32)}


def _catalog_builder(ds):
    """The prepared TFDS builder named ds.name (the digits builder or a catalog dataset)."""
    data_dir = ds.data_dir or None
    download_config = None
    if ds.name == "digits":
        from imgcls.data import digits  # noqa: F401  (registers the builder)

        # Built locally from scikit-learn: never look for a prepared copy on GCS.
        download_config = tfds.download.DownloadConfig(try_download_gcs=False)

    def make_builder():
        try:
            return tfds.builder(ds.name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(_UNKNOWN.format(name=ds.name)) from e

    return prepare_builder(make_builder, download_config)


def get_source(config):
    """The source named by config.dataset.name."""
    if config.dataset.name == "synthetic":
        return SyntheticSource(config)
    if config.dataset.name == "folder":
        from imgcls.data import folder

        return TFDSSource(config, folder.prepared_builder(config))
    return TFDSSource(config)
