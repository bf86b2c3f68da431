"""Config files from Python (notebooks, scripts, sweeps), as main.py's `--config` loads them.

A config file is a Python file with a `get_config()` that returns an ml_collections.ConfigDict
(configs/*.py). `load("default")` is this repository's configs/default.py; any other path is
taken as given, else relative to the repository.
"""

import ast
import importlib.util
import os
import sys

import ml_collections

# The repository: configs/ and main.py live beside the package.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def path(name: str) -> str:
    """The absolute path of config file `name`: a path, or a file name of configs/."""
    candidates = [name, os.path.join(ROOT, name)]
    if not name.endswith(".py"):
        candidates.append(os.path.join(ROOT, "configs", f"{name}.py"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(
        f"Config file {name} not found (relative paths are from {ROOT}; "
        f"names such as 'default' are files of {os.path.join(ROOT, 'configs')})."
    )


def load(name: str) -> ml_collections.ConfigDict:
    """The ConfigDict of config file `name` (see `path`), ready to change and train."""
    file = path(name)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # config files import `configs.default`, as under main.py
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(file))[0], file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{file} has no get_config() (a config file returns its ConfigDict).")
    return module.get_config()


def set_value(config, assignment: str) -> None:
    """Applies 'a.b=value' to config (the value as a Python literal, else as text), as a
    --config.a.b=value flag would."""
    key, _, text = assignment.partition("=")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    *parents, name = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[name] = value
