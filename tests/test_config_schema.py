"""One config schema: configs/default.py holds every key and its default; older W/config.json
files are completed from it when read, and no code supplies a default of its own."""

import ast
import json
import os

import ml_collections
import pytest
from conftest import ROOT, load_config

from imgcls.config import check as config_check
from imgcls.config import schema
from imgcls.run import workdir as workdir_files

OLD_WORKDIR = os.path.join(ROOT, "tests", "fixtures", "workdir_b64794a")
CONFIG_FILES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f[0] != "_")


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def old_config() -> ml_collections.ConfigDict:
    """The W/config.json that imgcls wrote at commit b64794a, before the weight EMA, lookahead,
    TTA, gradient accumulation and augmentation policies existed."""
    with open(os.path.join(OLD_WORKDIR, "config.json")) as f:
        return ml_collections.ConfigDict(json.load(f))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_file_sets_only_keys_of_the_schema(name):
    """A config file changes values; a key it adds would have no default anywhere."""
    config = load_config(name)
    assert schema.missing_keys(config) == []
    defaults = schema.defaults()

    def keys(node, prefix=""):
        for key, value in node.items():
            if (
                isinstance(value, dict | ml_collections.ConfigDict)
                and key not in schema.NOT_COMPLETED
            ):
                yield from keys(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    assert set(keys(config)) - set(keys(defaults)) == set()


def test_an_old_config_json_is_completed_from_the_schema():
    config = old_config()
    missing = schema.missing_keys(config)
    for key in ("ema_decay", "eval_tta", "lookahead_every", "lookahead_decay", "grad_accum_steps"):
        assert key in missing
    assert "augment.policy" in missing and "optimizer.clip_norm" in missing
    assert not [key for key in missing if key.startswith("model")]  # the model's own keys
    completed = schema.complete(config)
    assert schema.missing_keys(completed) == []
    assert completed.ema_decay == 0.0 and completed.eval_tta == "none"
    assert completed.lookahead_decay == 0.95 and completed.augment.policy == "none"
    assert completed.optimizer.clip_norm == 0.0 and completed.optimizer.decoupled is False
    # What the run wrote stays as it was, and is a valid config.
    written, now = flatten(config.to_dict()), flatten(completed.to_dict())
    assert {key: now[key] for key in written} == written
    assert completed.model.to_dict() == {
        "name": "cnn",
        "features": [4, 8],
        "dense_features": 16,
        "dropout_rate": 0.3,
    }
    assert config_check.problems(completed) == []
    assert schema.missing_keys(config) == missing  # the original is not changed


def test_loading_a_workdir_completes_its_config(tmp_path):
    workdir = tmp_path / "old"
    workdir.mkdir()
    (workdir / "config.json").write_text(old_config().to_json())
    loaded = workdir_files.load_config(str(workdir))
    assert schema.missing_keys(loaded) == [] and loaded.ema_decay == 0.0
    assert loaded.optimizer.learning_rate == old_config().optimizer.learning_rate


def test_a_complete_config_comes_back_as_it_is_even_locked():
    config = load_config("default")
    assert schema.complete(config) is config
    config.lock()
    del_config = config.copy_and_resolve_references()
    with del_config.unlocked():
        del del_config["eval_tta"]
    del_config.lock()
    completed = schema.complete(del_config)
    assert completed.eval_tta == "none" and completed.is_locked


CONFIG_NAMES = {"config", "opt", "aug", "ds", "dataset", "optimizer", "augment", "model"}


def _config_default_lookups(path):
    """`<config-like>.get(key, default)` calls in a source file: a default written in code."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) + len(node.keywords) >= 2
        ):
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in CONFIG_NAMES:
                yield f"{os.path.relpath(path, ROOT)}:{node.lineno}"


def test_no_code_supplies_a_config_default():
    found = []
    for directory, _, names in os.walk(os.path.join(ROOT, "imgcls")):
        for name in names:
            if name.endswith(".py"):
                found += _config_default_lookups(os.path.join(directory, name))
    assert found == []
