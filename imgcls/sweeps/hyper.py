"""Small helpers to write sweeps as lists of `--config.*` overrides, as big_vision's `hyper`.

A sweep file in `experiments/` is plain Python: a base config plus a list of trials, each a dict
of dotted config keys -> values. Building that list from `grid`, `zip_`, `product`, `concat` and
seeded `sample` keeps sweeps short, reviewable and exactly reproducible, and `trial_name` /
`to_flags` turn one trial into a stable workdir name and the command-line flags that
`ml_collections.config_flags` parses back to the same values. Pure Python + numpy, so sweeps can
be listed and checked on any machine without JAX or TensorFlow.
"""

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Sequence

import numpy as np

MAX_NAME_LENGTH = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def _values(key: str, values) -> list:
    """The values of one axis as a list of plain Python objects."""
    if isinstance(values, np.ndarray):
        return values.tolist()
    if isinstance(values, list | range):
        return list(values)
    raise TypeError(
        f"axis {key!r} must be a list of values, got {type(values).__name__} {values!r}; "
        f"write {key}=[...] (a tuple value such as (16, 32) goes inside the list)."
    )


def grid(**axes) -> list[dict]:
    """The cartesian product of the axes, in key order; the last key varies fastest."""
    keys = list(axes)
    columns = [_values(k, v) for k, v in axes.items()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*columns)]


def zip_(**axes) -> list[dict]:
    """Trials pairing the i-th value of every axis; all axes must have the same length."""
    columns = {k: _values(k, v) for k, v in axes.items()}
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ValueError(f"zip_ needs axes of equal length, got {detail}.")
    keys = list(columns)
    return [dict(zip(keys, combo, strict=True)) for combo in zip(*columns.values(), strict=True)]


def product(*lists: Sequence[dict]) -> list[dict]:
    """Every combination of one dict from each list, merged; the first list varies slowest."""
    trials = []
    for parts in itertools.product(*lists):
        merged = {}
        for part in parts:
            clash = sorted(set(merged) & set(part))
            if clash:
                raise ValueError(f"product: key(s) {clash} are set by more than one list.")
            merged.update(part)
        trials.append(merged)
    return trials


def concat(*lists: Sequence[dict]) -> list[dict]:
    """The lists one after another (copies of the dicts)."""
    return [dict(trial) for trials in lists for trial in trials]


@dataclasses.dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclasses.dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def draw(self, rng: np.random.Generator) -> float:
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return float(min(max(value, self.low), self.high))  # exp(log(x)) may round past a bound


@dataclasses.dataclass(frozen=True)
class Choice:
    values: tuple

    def draw(self, rng: np.random.Generator):
        return self.values[int(rng.integers(len(self.values)))]


def uniform(low: float, high: float) -> Uniform:
    """Uniform on [low, high]."""
    if not low <= high:
        raise ValueError(f"uniform needs low <= high, got low={low}, high={high}.")
    return Uniform(float(low), float(high))


def log_uniform(low: float, high: float) -> LogUniform:
    """Log-uniform on [low, high], for learning rates and weight decays."""
    if not 0 < low <= high:
        raise ValueError(f"log_uniform needs 0 < low <= high, got low={low}, high={high}.")
    return LogUniform(float(low), float(high))


def choice(values) -> Choice:
    """One of `values`, each equally likely."""
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray | range):
        raise TypeError(f"choice needs a list of values, got {values!r}.")
    values = tuple(_plain(v) for v in values)
    if not values:
        raise ValueError("choice needs at least one value.")
    return Choice(values)


_DISTRIBUTIONS = (Uniform, LogUniform, Choice)


def sample(n: int, seed: int, **axes) -> list[dict]:
    """n trials, drawing each distribution axis in key order with `default_rng(seed)`.

    Axes that are not distributions are fixed values, copied into every trial.
    """
    rng = np.random.default_rng(seed)
    return [
        {k: v.draw(rng) if isinstance(v, _DISTRIBUTIONS) else v for k, v in axes.items()}
        for _ in range(n)
    ]


def repeat_seeds(trials: Sequence[dict], seeds: Sequence[int]) -> list[dict]:
    """Each trial once per seed (trial-major), with config key `seed` set."""
    for trial in trials:
        if "seed" in trial:
            raise ValueError(f"repeat_seeds: trial {trial} already sets 'seed'.")
    return [{**trial, "seed": int(s)} for trial in trials for s in seeds]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _name_value(value) -> str:
    value = _plain(value)
    if isinstance(value, tuple | list):
        return "-".join(_name_value(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def trial_name(overrides: dict) -> str:
    """A readable, filesystem-safe, deterministic name, e.g. `optimizer.learning_rate=0.1`."""
    if not overrides:
        return "base"
    name = _UNSAFE.sub("_", ",".join(f"{k}={_name_value(v)}" for k, v in overrides.items()))
    if name[0] in ".-":
        name = "_" + name[1:]  # no hidden directories, no names that look like flags
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha1(json.dumps(overrides, default=repr).encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME_LENGTH - len(digest) - 1]}+{digest}"
    return name


def flag_value(value) -> str:
    """`value` as text that ml_collections config_flags parses back to the same value."""
    value = _plain(value)
    if isinstance(value, tuple | list):
        inner = ", ".join(repr(v) if isinstance(v, str) else flag_value(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value) if isinstance(value, float) else str(value)


def to_flags(overrides: dict) -> list[str]:
    """`--config.k=v` arguments for main.py, in key order."""
    return [f"--config.{k}={flag_value(v)}" for k, v in overrides.items()]


def validate(trials: Sequence[dict]) -> list[str]:
    """Checks every trial is a dict with string keys and the names are unique; returns names."""
    for i, trial in enumerate(trials):
        if not isinstance(trial, dict):
            raise ValueError(f"trial {i} is a {type(trial).__name__}, not a dict: {trial!r}.")
        bad = [k for k in trial if not isinstance(k, str) or not k]
        if bad:
            raise ValueError(f"trial {i} has keys that are not config paths: {bad!r}.")
    names = [trial_name(t) for t in trials]
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    duplicates = {name: n for name, n in counts.items() if n > 1}
    if duplicates:
        detail = ", ".join(f"{name} (x{n})" for name, n in duplicates.items())
        raise ValueError(f"trial names must be unique; duplicates: {detail}.")
    return names
