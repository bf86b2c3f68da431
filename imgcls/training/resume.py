"""What a resume may change: a run continues only with the config it was trained with.

Resuming with another seed, model, optimizer or data would continue other training from the
saved weights (and rewrite W/config.json to it), so a resume whose resolved config differs from
W/config.json in any key outside RESUME_KEYS is refused, listing the differences, unless
config.allow_config_change. Every change a resume makes is appended to W/config_changes.jsonl.
"""

import json
import os

import ml_collections
from absl import logging

from imgcls.run import files
from imgcls.run import workdir as workdir_files

# Keys that change how long, how often and how visibly a run trains, not what it trains.
RESUME_KEYS = (
    "num_epochs",
    "num_train_steps",
    "log_every_steps",
    "eval_every_epochs",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "final_report",
    "early_stopping_patience",
    "eval_batch_size",
    "on_nonfinite",
    "max_nonfinite_steps",
    "trust_unverified_checkpoints",
    "allow_config_change",
    "init_from",  # not used by a resume
    "dataset.data_dir",  # the data moved (the same data: its preparation is checked)
    "dataset.path",
)
CHANGES_FILE = "config_changes.jsonl"


def _flat(config) -> dict:
    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(json.loads(config.to_json_best_effort())))


def differences(saved, config) -> dict[str, tuple]:
    """{key: (saved value, new value)} of the keys whose values differ (or that one lacks)."""
    old, new = _flat(saved), _flat(config)
    return {k: (old.get(k), new.get(k)) for k in sorted({*old, *new}) if old.get(k) != new.get(k)}


def check_resume(config, workdir: str, step: int, record: bool = True) -> None:
    """Refuses (ValueError) to resume the run of `workdir` from `step` with `config` when they
    differ in keys outside RESUME_KEYS, unless config.allow_config_change; records the changes
    in W/config_changes.jsonl when `record` (process 0)."""
    try:
        saved = workdir_files.load_config(workdir)
    except FileNotFoundError:
        return  # checkpoints without a config.json: a run interrupted before it wrote one
    # Keys the run's W/config.json lacks (added to imgcls since it was written) were completed
    # at their defaults, which are what the run did ('auto' ones resolve to it): no change.
    with open(os.path.join(workdir, workdir_files.CONFIG_FILE), encoding="utf-8") as f:
        written = _flat(ml_collections.ConfigDict(json.load(f)))
    changes = {k: v for k, v in differences(saved, config).items() if k in written}
    refused = {k: v for k, v in changes.items() if k not in RESUME_KEYS}
    if refused and not config.allow_config_change:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ValueError(
            f"Resuming {workdir} at step {step} with a config that differs from the one it "
            f"was trained with (W/{workdir_files.CONFIG_FILE}): {listed}. Resume with the run's "
            "config, train in another --workdir, or accept the changes with "
            "--config.allow_config_change=True."
        )
    if changes and record:
        if refused:
            logging.warning("Resuming with changed config values: %s.", ", ".join(refused))
        row = {"step": int(step), "changes": {k: list(v) for k, v in changes.items()}}
        with open(os.path.join(workdir, CHANGES_FILE), "a", encoding="utf-8") as f:
            f.write(files.json_text(row) + "\n")
