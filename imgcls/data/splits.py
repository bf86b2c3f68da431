"""Which splits a run trains, validates and reports on (config.dataset.*_split). TF-free.

A split key set to 'auto' (the image-folder configs) is found among the dataset's splits by its
common names, case-insensitively (SPLIT_NAMES: train / training / training_set / ..., val / dev
/ ..., test / testing / eval / ...). Without a validation split, validation is carved off the
end of the training split (validation_fraction; 'auto' = AUTO_VALIDATION_FRACTION), which image
folders store class-interleaved, so the carved part is stratified. Without a test split, the
validation split is also the final report's split. Explicit values always win.
"""

from imgcls.values import is_auto, parse_number

# The roles of a run's splits, the config key of each, and the split names each is found by.
ROLE_KEYS = {"train": "train_split", "validation": "validation_split", "test": "eval_split"}
SPLIT_NAMES = {
    "train": ("train", "training", "training_set", "train_set", "trn"),
    "validation": ("validation", "val", "valid", "dev", "validation_set", "val_set"),
    "test": ("test", "testing", "test_set", "eval", "tst"),
}
AUTO_KEYS = (*ROLE_KEYS.values(), "validation_fraction")  # of config.dataset
# validation_fraction 'auto': the share of the training split held out when there is no
# validation split (0 when there is one).
AUTO_VALIDATION_FRACTION = 0.1


def validation_split(config):
    """The split evaluated during training (model selection, early stopping)."""
    return config.dataset.validation_split or config.dataset.eval_split


def flag(key, value=None):
    """'--config.dataset.<key>=<value>', as a user types it."""
    return f"--config.dataset.{key}={'<name>' if value is None else value}"


def base_split(split):
    """'train' of 'train[:90%]'."""
    return split.split("[", 1)[0]


def _named_splits(value):
    """The splits a TFDS split expression names: ['val', 'test'] of 'val+test[:50%]'."""
    return [base_split(part.strip()) for part in value.split("+")]


def _role_of(name):
    return next((role for role, names in SPLIT_NAMES.items() if name.lower() in names), None)


def _check_explicit(ds, split_sizes, base_splits, dataset_name):
    """Every split key given explicitly names a split the dataset has."""
    for role, key in ROLE_KEYS.items():
        value = ds[key]
        if not value or is_auto(value) or value in split_sizes:
            continue
        unknown = [s for s in _named_splits(value) if s not in base_splits]
        if not unknown:
            continue
        guesses = [s for s in base_splits if _role_of(s) == role]
        fix = flag(key, guesses[0]) if guesses else f"{flag(key)} with one of them"
        raise ValueError(
            f"config.dataset.{key}='{value}': dataset '{dataset_name}' has no split "
            f"'{unknown[0]}'. Its splits: {_listed(base_splits)}. Set {fix}"
            + (f", or {flag(key, 'auto')} to find it by its name." if key != "eval_split" else ".")
        )


def _listed(names):
    return ", ".join(f"'{n}'" for n in sorted(names)) or "none"


def _found_roles(ds, base_splits, dataset_name):
    """{role: split name} of the dataset's splits that common names identify; raises for split
    names it cannot place while some split key is 'auto'."""
    explicit = {
        name
        for key in ROLE_KEYS.values()
        if ds[key] and not is_auto(ds[key])
        for name in _named_splits(ds[key])
    }
    found, unknown = {}, []
    for name in sorted(base_splits):
        role = _role_of(name)
        if role is None:
            if name not in explicit:
                unknown.append(name)
        elif role in found:
            raise ValueError(
                f"Dataset '{dataset_name}' has two {role} splits, '{found[role]}' and '{name}'. "
                f"Pick one with {flag(ROLE_KEYS[role], found[role])}."
            )
        else:
            found[role] = name
    if unknown:
        known = ", ".join(f"'{n}' as {r}" for r, n in found.items()) or "none"
        missing = [ROLE_KEYS[r] for r in ROLE_KEYS if r not in found] or ["train_split"]
        raise ValueError(
            f"Dataset '{dataset_name}' has the split(s) {_listed(unknown)}, whose role its name "
            f"does not tell (recognised: {known}). Say what each is, e.g. "
            f"{flag(missing[0], unknown[0])}, or rename it: train: "
            f"{'/'.join(SPLIT_NAMES['train'])}; validation: "
            f"{'/'.join(SPLIT_NAMES['validation'])}; test: {'/'.join(SPLIT_NAMES['test'])} "
            "(any case)."
        )
    return found


def split_plan(config, split_sizes, dataset_name=None):
    """(a copy of config with its split keys resolved, notes for the log) over the dataset's
    splits (split_sizes: {name: examples}); describe_splits states the result.

    'auto' keys are found by name; validation_fraction ('auto' or a number) carves the
    validation split off the training split, as exact absolute slices (saved so in
    W/config.json), e.g. 'train[:1298]' and 'train[1298:]'.
    """
    config = config.copy_and_resolve_references()
    ds = config.dataset
    name = dataset_name or ds.name
    base_splits = {s for s in split_sizes if "[" not in s}
    _check_explicit(ds, split_sizes, base_splits, name)
    notes = []
    auto_keys = [key for key in ROLE_KEYS.values() if is_auto(ds[key])]
    fraction_auto = is_auto(ds.validation_fraction)
    found = _found_roles(ds, base_splits, name) if auto_keys else {}
    if is_auto(ds.train_split):
        if "train" not in found:
            raise ValueError(
                f"Dataset '{name}' has no training split: its splits are "
                f"{_listed(base_splits)}. Name it with {flag('train_split')} (or name the "
                f"folder {' / '.join(SPLIT_NAMES['train'])})."
            )
        ds.train_split = found["train"]
    fraction = (
        AUTO_VALIDATION_FRACTION
        if fraction_auto
        else parse_number(ds.validation_fraction, "dataset.validation_fraction")
    )
    if is_auto(ds.validation_split):
        folder = found.get("validation", "")
        if fraction_auto and folder:
            fraction = 0.0
        elif folder and fraction > 0:
            notes.append(
                f"validation_fraction={fraction:g} is set: validating on that part of "
                f"'{ds.train_split}', not on the split '{folder}'"
            )
            folder = ""
        ds.validation_split = folder
    elif fraction_auto:
        fraction = 0.0
    with ds.ignore_type():
        ds.validation_fraction = float(fraction)
    config = _carve(config, split_sizes)
    ds = config.dataset
    if is_auto(ds.eval_split):
        if "test" in found:
            ds.eval_split = found["test"]
        elif ds.validation_split:
            ds.eval_split = ds.validation_split
            notes.append(
                f"no test split: the final report is on the validation split "
                f"'{ds.validation_split}' (set {flag('eval_split')} for another)"
            )
        else:
            raise ValueError(
                f"Dataset '{name}' has no test split and no validation split: set "
                f"{flag('eval_split')} or {flag('validation_fraction', AUTO_VALIDATION_FRACTION)}."
            )
    return config, notes


def _carve(config, split_sizes):
    """validation_fraction f > 0: the last round(f * n) examples of train_split become the
    validation split."""
    ds = config.dataset
    fraction = float(ds.validation_fraction)
    if fraction == 0:
        return config
    if not 0 < fraction < 1:
        raise ValueError(
            f"config.dataset.validation_fraction={fraction} must be in [0, 1): e.g. "
            f"{flag('validation_fraction', 0.1)}."
        )
    if ds.validation_split:
        raise ValueError(
            f"config.dataset.validation_split='{ds.validation_split}' and validation_fraction="
            f"{fraction} are both set; keep one ({flag('validation_fraction', 0)} or "
            f"{flag('validation_split', '')})."
        )
    if "[" in ds.train_split:
        raise ValueError(
            f"config.dataset.validation_fraction needs a plain train_split, not "
            f"'{ds.train_split}'; slice it yourself with {flag('validation_split')} instead."
        )
    num_examples = split_sizes[ds.train_split]
    num_train = num_examples - round(fraction * num_examples)
    if not 0 < num_train < num_examples:
        raise ValueError(
            f"config.dataset.validation_fraction={fraction} of the {num_examples} examples of "
            f"'{ds.train_split}' leaves an empty training or validation split: set another "
            f"{flag('validation_fraction')}."
        )
    ds.validation_split = f"{ds.train_split}[{num_train}:]"
    ds.train_split = f"{ds.train_split}[:{num_train}]"
    ds.validation_fraction = 0.0
    return config


def describe_splits(config, split_sizes):
    """'splits: train = training_set[:1800] (1,800), validation = ... , test = test_set (2,000)'."""
    ds = config.dataset
    parts = []
    for role, key in ROLE_KEYS.items():
        split = ds[key] or (ds.eval_split if role == "validation" else "")
        size = _slice_size(split, split_sizes)
        parts.append(f"{role} = {split}" + (f" ({size:,})" if size is not None else ""))
    return "splits: " + ", ".join(parts)


def _slice_size(split, split_sizes):
    """Examples of a split or of an absolute slice 'name[a:b]' of it; None when not known."""
    if split in split_sizes:
        return split_sizes[split]
    base = base_split(split)
    if base not in split_sizes or not split.endswith("]"):
        return None
    bounds = split[len(base) + 1 : -1].split(":")
    try:
        start, stop = (int(b) if b else None for b in bounds)
    except ValueError:
        return None
    return len(range(split_sizes[base])[slice(start, stop)])


def resolve_splits(config, info):
    """split_plan's config for a DatasetInfo (its split_sizes)."""
    return split_plan(config, info.split_sizes, info.name)[0]
