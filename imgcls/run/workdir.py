"""The files that describe a run in its workdir W, written by training and read by every mode.

W/config.json        the resolved config (eval, predict, export and serve rebuild the model
                     from it; never from the original flags)
W/dataset_info.json  class names and image shape, so predict, export and serve need no data
W/metrics.jsonl      one JSON object per logged step (written by imgcls.run.writers)
W/train_accumulator.json  per checkpoint step, the training metrics accumulated since the last
                     log line, so a resumed run logs the same averages as an uninterrupted one

Plain files: no JAX, no TensorFlow (sweep results read metrics.jsonl on any machine).
"""

import json
import os

import ml_collections

from imgcls.config import schema
from imgcls.run import files

CONFIG_FILE = "config.json"
DATASET_INFO_FILE = "dataset_info.json"
METRICS_FILE = "metrics.jsonl"
ACCUMULATOR_FILE = "train_accumulator.json"


def save(config, workdir: str, info=None) -> None:
    """Writes W/config.json and, given the DatasetInfo, W/dataset_info.json."""
    files.remove_stale_partials(workdir)  # what a SIGKILL during an earlier write left
    with files.atomic_open(os.path.join(workdir, CONFIG_FILE)) as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    if info is not None:
        files.write_json(os.path.join(workdir, DATASET_INFO_FILE), dataset_info_dict(info))


def dataset_info_dict(info) -> dict:
    """What dataset_info.json holds of a DatasetInfo."""
    return {
        "name": info.name,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
    }


def load_config(workdir: str):
    """The resolved config a run saved as `W/config.json`; keys added to imgcls since the run
    wrote it are completed at their defaults (imgcls.config.schema). A file that is not JSON,
    or holds a value the config check refuses, is a ValueError naming it."""
    # Here: the rule table imports the model and data registries, and this module is plain files.
    from imgcls.config import check

    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    values = _read_json(path)
    if not isinstance(values, dict):
        raise ValueError(f"{path} holds no config (a JSON object): {_DAMAGED}")
    config = schema.complete(ml_collections.ConfigDict(values))
    found = check.problems(config)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ValueError(f"{path}: {found[0]}{more} {_DAMAGED}")
    return config


_DAMAGED = "Restore the file from a copy of the run, or train again in a new --workdir."


def _read_json(path: str):
    """The JSON value of a file of W; ValueError naming it when it is not JSON."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}). {_DAMAGED}") from None


def load_dataset_info(workdir: str) -> dict | None:
    """W/dataset_info.json as a dict; None for workdirs trained before it was written."""
    path = os.path.join(workdir, DATASET_INFO_FILE)
    if not os.path.exists(path):
        return None
    return _read_json(path)


def read_metrics(path: str) -> list[dict]:
    """The JSON objects of a metrics.jsonl (a path, or a workdir that holds one); unparsable
    lines (a half-written last one) are skipped."""
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def save_accumulator(workdir: str, step: int, state, keep_steps) -> None:
    """Records the JSON state of the training metrics accumulated at checkpoint `step`; entries
    of steps not in keep_steps (checkpoints deleted since) are dropped."""
    saved = _read_accumulators(workdir)
    saved = {k: v for k, v in saved.items() if int(k) in set(keep_steps)}
    saved[str(int(step))] = state
    files.write_json(os.path.join(workdir, ACCUMULATOR_FILE), saved, indent=None)


def load_accumulator(workdir: str, step: int):
    """The state save_accumulator recorded at `step`, or None."""
    return _read_accumulators(workdir).get(str(int(step)))


def _read_accumulators(workdir: str) -> dict:
    try:
        with open(os.path.join(workdir, ACCUMULATOR_FILE), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}
