"""Which splits a run trains, validates and reports on (config.dataset.*_split). TF-free."""

from imgcls.data.info import split_size


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
