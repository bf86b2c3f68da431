"""Config keys whose value may be 'auto': recognising it, and reading values given as text.

A config that sets a key to 'auto' (a string) makes ml_collections parse a command-line override
of that key as text: --config.dataset.image_size=64 arrives as '64'. parse_value reads such text
as the Python literal it spells. Plain Python, imported by the data and model layers alike.
"""

import ast

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
