"""Config values checked before any work: one line per problem, naming the key and what is valid.

A value out of range would otherwise fail late (a ZeroDivisionError after start-up for
log_every_steps=0), train something else than asked (num_epochs=0 trains one step; a negative
learning rate is gradient ascent), or pass silently (image_size=-5 behaves like 0). Each rule
is one line of the table below; keys a config does not have are not checked.
"""

import math
import numbers

from imgcls import models
from imgcls.data.augment.policies import POLICIES, RANDAUGMENT_BINS
from imgcls.data.balance import BALANCE_MODES
from imgcls.data.pipelines.choice import PIPELINES
from imgcls.evaluation import tta
from imgcls.training import optim
from imgcls.values import AUTO, is_auto, parse_value

ON_NONFINITE = ("stop", "skip")


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def at_least(low, integer=False):
    def check(value):
        return (_int(value) if integer else _number(value)) and value >= low

    return check, f"must be {'an integer ' if integer else ''}>= {low}"


def above(low):
    return (lambda value: _number(value) and value > low), f"must be > {low}"


def within(low, high, high_open=False):
    def check(value):
        return _number(value) and low <= value and (value < high if high_open else value <= high)

    return check, f"must be in [{low}, {high}{')' if high_open else ']'}"


def one_of(choices):
    listed = ", ".join(repr(c) for c in choices)
    return (lambda value: value in choices), f"must be one of {listed}"


def named(kind, choices):
    """A name from a registry: the message is the one the registry itself gives."""
    listed = ", ".join(choices)
    return (
        lambda value: value in choices
    ), lambda key, value: f"Unknown {kind} '{value}' (config.{key}). Valid {kind}s: {listed}."


def or_auto(rule):
    """The rule, or 'auto'; a key that is 'auto' in its config gets a --config override as text
    ('64', '(0.5, 0.5)'), which is checked as the value it spells."""
    check, text = rule

    def check_or_auto(value):
        if is_auto(value):
            return True
        try:
            return check(parse_value(value, ""))
        except ValueError:
            return False

    return check_or_auto, f"{text} (or '{AUTO}')"


def _numbers(check_each):
    def check(value):
        return isinstance(value, (tuple, list)) and len(value) > 0 and all(map(check_each, value))

    return check


def _area_range(value):
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(map(_number, value))
        and 0 < value[0] <= value[1] <= 1
    )


def _split_fractions(value):
    return (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(_number(v) and v >= 0 for v in value)
        and abs(sum(value) - 1.0) <= 1e-6
    )


POSITIVE_COUNT = at_least(1, integer=True)
NON_NEGATIVE = at_least(0)
FRACTION = within(0, 1)
OPEN_FRACTION = within(0, 1, high_open=True)

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
    "eval_tta": one_of(tta.MODES),
    "lookahead_every": at_least(0, integer=True),
    "lookahead_decay": (lambda v: _number(v) and 0 < v <= 1, "must be in (0, 1]"),
    "lookahead_power": NON_NEGATIVE,
    "data_init_images": POSITIVE_COUNT,
    "model.name": named("model", tuple(models.MODELS)),
    "model.dropout_rate": OPEN_FRACTION,
    "model.drop_path_rate": OPEN_FRACTION,
    "optimizer.name": named("optimizer", optim.OPTIMIZERS),
    "optimizer.schedule": named("schedule", optim.SCHEDULES),
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
    "optimizer.plateau_metric": one_of(optim.PLATEAU_METRICS),
    "optimizer.plateau_patience": POSITIVE_COUNT,
    "optimizer.plateau_factor": (lambda v: _number(v) and 0 < v < 1, "must be in (0, 1)"),
    "optimizer.plateau_threshold": (lambda v: _number(v) and 0 < v <= 1, "must be in (0, 1]"),
    "optimizer.plateau_min_lr": NON_NEGATIVE,
    "optimizer.warmup_start_scale": NON_NEGATIVE,
    "optimizer.end_scale": NON_NEGATIVE,
    "optimizer.bias_lr_scale": above(0),
    "dataset.image_size": or_auto(at_least(0, integer=True)),
    "dataset.channels": or_auto(one_of((1, 3))),
    "dataset.mean": or_auto((_numbers(_number), "must be a list of numbers, one per channel")),
    "dataset.std": or_auto(
        (_numbers(lambda v: _number(v) and v > 0), "must be a list of numbers > 0")
    ),
    "dataset.crop_fraction": (lambda v: _number(v) and 0 < v <= 1, "must be in (0, 1]"),
    "dataset.validation_fraction": or_auto(OPEN_FRACTION),
    "dataset.shuffle_buffer_size": at_least(0, integer=True),
    "dataset.pipeline": one_of(PIPELINES),
    "dataset.balance": one_of(BALANCE_MODES),
    "dataset.split_fractions": (_split_fractions, "must be 3 numbers >= 0 that sum to 1"),
    "dataset.num_classes": POSITIVE_COUNT,
    "dataset.image_shape": (
        lambda v: (
            isinstance(v, (tuple, list)) and len(v) == 3 and all(_int(d) and d > 0 for d in v)
        ),
        "must be 3 positive integers (height, width, channels)",
    ),
    "dataset.num_train_examples": POSITIVE_COUNT,
    "dataset.num_eval_examples": POSITIVE_COUNT,
    "augment.area_range": (_area_range, "must be 2 numbers with 0 < low <= high <= 1"),
    "augment.random_crop_padding": at_least(0, integer=True),
    "augment.crop_padding_mode": one_of(("constant", "reflect")),
    "augment.cutout": at_least(0, integer=True),
    "augment.rotation": within(0, 180),
    "augment.zoom": OPEN_FRACTION,
    "augment.translation": OPEN_FRACTION,
    "augment.brightness": FRACTION,
    "augment.contrast": FRACTION,
    "augment.saturation": FRACTION,
    "augment.hue": within(0, 0.5),
    "augment.erasing": FRACTION,
    "augment.mixup": NON_NEGATIVE,
    "augment.cutmix": NON_NEGATIVE,
    "augment.policy": one_of(POLICIES),
    "augment.randaugment_num_ops": POSITIVE_COUNT,
    "augment.randaugment_magnitude": (
        lambda v: _int(v) and 0 <= v < RANDAUGMENT_BINS,
        f"must be an integer in [0, {RANDAUGMENT_BINS - 1}]",
    ),
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
    if present and not (_number(epochs) and epochs > 0) and not (_int(steps) and steps > 0):
        found.append(
            f"config.num_epochs={epochs!r} must be > 0 (or set config.num_train_steps > 0)."
        )
    return found + _conflicts(config)


def _conflicts(config) -> list[str]:
    """Values valid alone that contradict each other."""
    found = []
    _, lookahead = _get(config, "lookahead_every")
    _, ema_decay = _get(config, "ema_decay")
    if _int(lookahead) and lookahead > 0 and _number(ema_decay) and ema_decay > 0:
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
    if decoupled and _number(lr) and lr <= 0:
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
