"""TFDS builders as sources: any catalog dataset (the default source), prepared on first use."""

from imgcls.data._tf import tf, tfds
from imgcls.data.sources.base import Source, unknown_split

UNKNOWN = (
    "Unknown dataset '{name}' (config.dataset.name): use {registered} ('folder': your own "
    "images at config.dataset.path) or a TFDS catalog name such as cifar10, mnist, "
    "imagenet2012 ..."
)


def prepare_builder(make_builder, download_config=None):
    """make_builder()'s builder, prepared: safe when several processes prepare it at once."""
    builder = make_builder()
    if not builder.is_prepared():
        try:
            builder.download_and_prepare(download_config=download_config)
        except OSError:
            # Another process (a parallel trial, a host) may have won the race: TFDS renames its
            # finished folder into place, which fails with EEXIST or ENOTEMPTY for the others.
            builder = make_builder()
            if not builder.is_prepared():
                raise
    return builder


class TFDSSource(Source):
    """A prepared TFDS builder with an 'image' and a 'label' feature."""

    def __init__(self, config, builder):
        self.name = config.dataset.name
        self.builder = builder
        features = builder.info.features
        if not {"image", "label"} <= set(features.keys()):
            raise ValueError(
                f"Dataset '{self.name}' has features {sorted(features.keys())}; imgcls needs an "
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
                    raise unknown_split(self.name, split, available) from e
            else:  # No split metadata (e.g. under tfds.testing.mock_data): count instead.
                cardinality = int(self.read(split, 0, 1).cardinality())
                if cardinality < 0:
                    raise unknown_split(self.name, split, sizes)
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


def catalog_source(config, registered=()):
    """The TFDS catalog dataset config.dataset.name, prepared into config.dataset.data_dir (and
    downloaded first when TFDS can); `registered` names the other sources, for the error."""
    ds = config.dataset

    def make_builder():
        try:
            return tfds.builder(ds.name, data_dir=ds.data_dir or None)
        except tfds.core.registered.DatasetNotFoundError as e:
            names = ", ".join(f"'{n}'" for n in registered)
            raise ValueError(UNKNOWN.format(name=ds.name, registered=names)) from e

    return TFDSSource(config, prepare_builder(make_builder))
