"""Config values as users give them, and the rules that check them. Plain Python, a leaf that
every layer may import (data, models and config all read config values).

A config that sets a key to 'auto' (a string) makes ml_collections parse a command-line override
of that key as text: --config.dataset.image_size=64 arrives as '64'; parse_value reads such text
as the Python literal it spells. A rule is (check(value) -> bool, what is valid): the rule table
(imgcls.config.check) and the augmentation table (imgcls.data.augment.table) are built of them,
and the message of a value that fails is f"config.{key}={value!r} {what is valid}.".
"""

import ast
import math
import numbers

AUTO = "auto"


def is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def parse_value(value, key):
    """A config value; text other than 'auto' is read as a Python literal: '64' -> 64,
    '(0.5, 0.5)' -> (0.5, 0.5). `key` ('dataset.mean') names it in the error."""
    if not isinstance(value, str) or is_auto(value):
        return value
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise ValueError(
            f"config.{key}={value!r} is neither 'auto' nor a value: e.g. --config.{key}=auto"
        ) from None


def parse_number(value, key):
    """parse_value of a number, as a float."""
    number = parse_value(value, key)
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ValueError(f"config.{key}={value!r} must be a number or 'auto'.")
    return float(number)


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def boolean():
    return (lambda value: isinstance(value, bool)), "must be True or False"


def at_least(low, integer=False):
    def check(value):
        return (is_int(value) if integer else is_number(value)) and value >= low

    return check, f"must be {'an integer ' if integer else ''}>= {low}"


def above(low):
    return (lambda value: is_number(value) and value > low), f"must be > {low}"


def within(low, high, high_open=False):
    def check(value):
        return is_number(value) and low <= value and (value < high if high_open else value <= high)

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


def numbers_each(check_each):
    """A non-empty list of values that each pass check_each (a per-channel mean, say)."""

    def check(value):
        return isinstance(value, (tuple, list)) and len(value) > 0 and all(map(check_each, value))

    return check


POSITIVE_COUNT = at_least(1, integer=True)
NON_NEGATIVE = at_least(0)
FRACTION = within(0, 1)
OPEN_FRACTION = within(0, 1, high_open=True)
