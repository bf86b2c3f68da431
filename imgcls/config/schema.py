"""The config schema: configs/default.py's get_config() is every key with its default.

Every config file starts from it (configs/*.py import it and change a few fields), so a key and
its default are written once. A config that lacks keys, such as a W/config.json written before
they existed, is completed from it when it is read (`complete`), so code reads `config.key` and
never supplies a default of its own. config.model is left as it is: its keys are the model's
(imgcls.models.registry checks them), and cnn's defaults would not fit a ResNet.
"""

import copy
import functools

import ml_collections
from absl import logging

from imgcls.config import files

SCHEMA_FILE = "default"  # configs/default.py
NOT_COMPLETED = ("model",)  # sections whose keys depend on a choice made in the config


@functools.cache
def _schema() -> dict:
    return files.load(SCHEMA_FILE).to_dict()


def defaults() -> ml_collections.ConfigDict:
    """A fresh copy of the schema: every key at its default."""
    return ml_collections.ConfigDict(copy.deepcopy(_schema()))


def missing_keys(config) -> list[str]:
    """The schema's keys that `config` lacks, dotted ('optimizer.clip_norm'); a whole missing
    section is one key ('augment')."""

    def walk(schema: dict, node, prefix: str):
        for key, default in schema.items():
            name = f"{prefix}{key}"
            if key not in node:
                yield name
            elif isinstance(default, dict) and name not in NOT_COMPLETED:
                yield from walk(default, node[key], f"{name}.")

    return list(walk(_schema(), config, ""))


def complete(config):
    """`config` itself when it has every key of the schema, else a copy with the keys it lacks
    added at their defaults (logged at debug level)."""
    missing = missing_keys(config)
    if not missing:
        return config
    logging.debug("Config keys added at their defaults (configs/default.py): %s", missing)
    config = config.copy_and_resolve_references()
    schema = _schema()
    with config.unlocked():
        for key in missing:
            *parents, name = key.split(".")
            node, default = config, schema
            for part in parents:
                node, default = node[part], default[part]
            value = copy.deepcopy(default[name])
            node[name] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return config
