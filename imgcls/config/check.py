"""Config values checked before any work: one line per problem, naming the key and what is valid.

A value out of range would otherwise fail late (a ZeroDivisionError after start-up for
log_every_steps=0), train something else than asked (num_epochs=0 trains one step; a negative
learning rate is gradient ascent), or pass silently (image_size=-5 behaves like 0). Each rule
is one line of the table below (config.augment's come from the augmentation table,
imgcls.data.augment.table; the rules' helpers are imgcls.values'); keys a config does not have
are not checked. `check_with_data` adds what a config can only show against its dataset and
devices (the batch over the devices, mean/std per channel).
"""

from absl import logging

from imgcls import models, parallel
from imgcls.config.choices import (
    ON_NONFINITE,
    OPTIMIZERS,
    PLATEAU_METRICS,
    SCHEDULES,
    TTA_MODES,
)
from imgcls.data.augment import table as augment_table
from imgcls.data.balance import BALANCE_MODES
from imgcls.data.pipelines.choice import PIPELINES
from imgcls.values import (
    NON_NEGATIVE,
    OPEN_FRACTION,
    POSITIVE_COUNT,
    above,
    at_least,
    is_int,
    is_number,
    named,
    numbers_each,
    one_of,
    or_auto,
)


def _split_fractions(value):
    return (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(is_number(v) and v >= 0 for v in value)
        and abs(sum(value) - 1.0) <= 1e-6
    )


# key: (check(value) -> bool, what is valid, or f(key, value) -> the whole message)
RULES = {
    "batch_size": POSITIVE_COUNT,
    "eval_batch_size": POSITIVE_COUNT,
    "eval_every_epochs": above(0),
    "early_stopping_patience": at_least(0, integer=True),
    "log_every_steps": POSITIVE_COUNT,
    "checkpoint_every_steps": POSITIVE_COUNT,
    "keep_checkpoints": POSITIVE_COUNT,
    "label_smoothing": OPEN_FRACTION,
    "backbone_learning_rate_scale": NON_NEGATIVE,
    "on_nonfinite": one_of(ON_NONFINITE),
    "max_nonfinite_steps": POSITIVE_COUNT,
    "grad_accum_steps": POSITIVE_COUNT,
    "ema_decay": OPEN_FRACTION,
    "ema_warmup_power": NON_NEGATIVE,
    "eval_tta": one_of(TTA_MODES),
    "lookahead_every": at_least(0, integer=True),
    "lookahead_decay": (lambda v: is_number(v) and 0 < v <= 1, "must be in (0, 1]"),
    "lookahead_power": NON_NEGATIVE,
    "data_init_images": POSITIVE_COUNT,
    "model.name": named("model", tuple(models.MODELS)),
    "model.dropout_rate": OPEN_FRACTION,
    "model.drop_path_rate": OPEN_FRACTION,
    "optimizer.name": named("optimizer", OPTIMIZERS),
    "optimizer.schedule": named("schedule", SCHEDULES),
    # 0 is allowed: the weights stay as they are (evaluating a warm start, tests); < 0 would be
    # gradient ascent.
    "optimizer.learning_rate": at_least(0),
    "optimizer.momentum": OPEN_FRACTION,
    "optimizer.b1": OPEN_FRACTION,
    "optimizer.b2": OPEN_FRACTION,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.warmup_epochs": NON_NEGATIVE,
    "optimizer.trust_coefficient": above(0),
    "optimizer.clip_norm": NON_NEGATIVE,
    "optimizer.plateau_metric": one_of(PLATEAU_METRICS),
    "optimizer.plateau_patience": POSITIVE_COUNT,
    "optimizer.plateau_factor": (lambda v: is_number(v) and 0 < v < 1, "must be in (0, 1)"),
    "optimizer.plateau_threshold": (lambda v: is_number(v) and 0 < v <= 1, "must be in (0, 1]"),
    "optimizer.plateau_min_lr": NON_NEGATIVE,
    "optimizer.warmup_start_scale": NON_NEGATIVE,
    "optimizer.end_scale": NON_NEGATIVE,
    "optimizer.bias_lr_scale": above(0),
    "dataset.image_size": or_auto(at_least(0, integer=True)),
    "dataset.channels": or_auto(one_of((1, 3))),
    "dataset.mean": or_auto(
        (numbers_each(is_number), "must be a list of numbers, one per channel")
    ),
    "dataset.std": or_auto(
        (numbers_each(lambda v: is_number(v) and v > 0), "must be a list of numbers > 0")
    ),
    "dataset.crop_fraction": (lambda v: is_number(v) and 0 < v <= 1, "must be in (0, 1]"),
    "dataset.validation_fraction": or_auto(OPEN_FRACTION),
    "dataset.shuffle_buffer_size": at_least(0, integer=True),
    "dataset.pipeline": one_of(PIPELINES),
    "dataset.balance": one_of(BALANCE_MODES),
    "dataset.split_fractions": (_split_fractions, "must be 3 numbers >= 0 that sum to 1"),
    "dataset.num_classes": POSITIVE_COUNT,
    "dataset.image_shape": (
        lambda v: (
            isinstance(v, (tuple, list)) and len(v) == 3 and all(is_int(d) and d > 0 for d in v)
        ),
        "must be 3 positive integers (height, width, channels)",
    ),
    "dataset.num_train_examples": POSITIVE_COUNT,
    "dataset.num_eval_examples": POSITIVE_COUNT,
    # config.augment's rules are the augmentation table's (imgcls.data.augment.table)
    **{f"augment.{key}": row.rule for key, row in augment_table.ROWS.items()},
}


def _get(config, key):
    node = config
    for part in key.split("."):
        if part not in node:
            return False, None
        node = node[part]
    return True, node


def problems(config) -> list[str]:
    """One line per invalid value: `config.<key>=<value> <what is valid>`."""
    found = []
    for key, (check, valid) in RULES.items():
        present, value = _get(config, key)
        if present and not check(value):
            found.append(
                valid(key, value) if callable(valid) else f"config.{key}={value!r} {valid}."
            )
    present, epochs = _get(config, "num_epochs")
    _, steps = _get(config, "num_train_steps")
    if present and not (is_number(epochs) and epochs > 0) and not (is_int(steps) and steps > 0):
        found.append(
            f"config.num_epochs={epochs!r} must be > 0 (or set config.num_train_steps > 0)."
        )
    return found + _conflicts(config)


def _conflicts(config) -> list[str]:
    """Values valid alone that contradict each other."""
    found = []
    _, lookahead = _get(config, "lookahead_every")
    _, ema_decay = _get(config, "ema_decay")
    if is_int(lookahead) and lookahead > 0 and is_number(ema_decay) and ema_decay > 0:
        found.append(
            "config.lookahead_every and config.ema_decay are both on: use one (lookahead "
            "already ends on an average of the weights)."
        )
    _, alternating = _get(config, "augment.alternating_flip")
    _, flip = _get(config, "augment.horizontal_flip")
    if alternating and flip:
        found.append(
            "config.augment.alternating_flip and horizontal_flip are both on: use one "
            "(alternating_flip=True, horizontal_flip=False for airbench's flip)."
        )
    _, decoupled = _get(config, "optimizer.decoupled")
    _, lr = _get(config, "optimizer.learning_rate")
    if decoupled and is_number(lr) and lr <= 0:
        found.append(
            f"config.optimizer.learning_rate={lr!r} must be > 0 with optimizer.decoupled "
            "(the weight decay is given relative to it)."
        )
    return found


def check(config) -> None:
    """ValueError listing every invalid value of `config`, one per line."""
    found = problems(config)
    if len(found) == 1:
        raise ValueError(found[0])
    if found:
        raise ValueError(f"{len(found)} config values are invalid:\n  " + "\n  ".join(found))


def check_with_data(config, info, mesh) -> None:
    """Errors a config can only show against its dataset and devices, before any work."""
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    accum = int(config.grad_accum_steps)
    if accum > 1 and config.batch_size % (accum * mesh.devices.size):
        raise ValueError(
            f"config.batch_size={config.batch_size} cannot be cut into config.grad_accum_steps="
            f"{accum} equal micro-batches on each of the {mesh.devices.size} devices; use a "
            f"multiple of {accum * mesh.devices.size}."
        )
    channels = info.image_shape[-1]
    for key in ("mean", "std"):
        if len(config.dataset[key]) not in (1, channels):
            raise ValueError(
                f"config.dataset.{key} has {len(config.dataset[key])} values but the images "
                f"have {channels} channels; give 1 or {channels} values, e.g. "
                f"--config.dataset.{key}='({', '.join(['0.5'] * channels)},)'."
            )
    if config.unfreeze_after_epochs >= 0 and not config.freeze_backbone:
        logging.warning("config.unfreeze_after_epochs has no effect without freeze_backbone.")
