"""The files that describe a run in its workdir W, written by training and read by every mode.

W/config.json        the resolved config (eval, predict, export and serve rebuild the model
                     from it; never from the original flags)
W/dataset_info.json  class names and image shape, so predict, export and serve need no data
W/metrics.jsonl      one JSON object per logged step (written by imgcls.writers)

Plain files: no JAX, no TensorFlow (sweep results read metrics.jsonl on any machine).
"""

import json
import os

import ml_collections

CONFIG_FILE = "config.json"
DATASET_INFO_FILE = "dataset_info.json"
METRICS_FILE = "metrics.jsonl"


def save(config, workdir: str, info=None) -> None:
    """Writes W/config.json and, given the DatasetInfo, W/dataset_info.json."""
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    if info is not None:
        with open(os.path.join(workdir, DATASET_INFO_FILE), "w") as f:
            json.dump(dataset_info_dict(info), f, indent=2)


def dataset_info_dict(info) -> dict:
    """What dataset_info.json holds of a DatasetInfo."""
    return {
        "name": info.name,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
    }


def load_config(workdir: str):
    """The resolved config a run saved as `W/config.json`."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_dataset_info(workdir: str) -> dict | None:
    """W/dataset_info.json as a dict; None for workdirs trained before it was written."""
    path = os.path.join(workdir, DATASET_INFO_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


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
