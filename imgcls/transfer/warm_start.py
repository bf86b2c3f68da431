"""Warm start: a new run's first parameters from another run's checkpoint or Keras' ResNet50.

`config.init_from` names the source:

- `W`: the training workdir W's best checkpoint (by validation accuracy), else its latest;
  `W:best`, `W:latest` or `W:<step>` pick one. The checkpoint is read without its config or
  dataset (any model, class count or optimizer), so the source data need not be present.
- `keras`: Keras' cached ImageNet ResNet50 (~/.keras/models/resnet50_weights_tf_dim_ordering_
  tf_kernels.h5, see imgcls.transfer.keras_import), downloaded there first when it is not cached
  (imgcls.transfer.keras_weights); `keras:/path/to/weights.h5` reads that file instead.
  The target model must be `resnet50_v1`.

Parameters and BatchNorm statistics are matched by their full path. The classifier (every path
under a module named `head`) keeps its fresh initialisation when its shape differs (another class
count) and is loaded when equal; any other shape mismatch is an error naming each path with both
shapes. Target paths the source lacks keep their initialisation ('missing'), source paths the
target lacks are dropped ('left_out'). The optimizer state and the step start fresh. The report
of what happened is logged and written to W/warm_start.json.

Warm start happens only when a run starts fresh: a workdir with a checkpoint resumes from it
(train.train_and_evaluate). TensorFlow is not imported here.
"""

import dataclasses
import json
import os

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from imgcls.models import contract
from imgcls.run import checkpointing, files
from imgcls.run import workdir as workdir_files
from imgcls.transfer import keras_import, keras_weights

KERAS = "keras"
COLLECTIONS = contract.VARIABLES
REPORT_FILE = "warm_start.json"
FORMS = "a workdir W, W:best, W:latest, W:<step>, keras or keras:/path/to/weights.h5"
_LISTED = 6  # paths quoted in an error message about unmatched model families


@dataclasses.dataclass(frozen=True)
class Source:
    """A parsed config.init_from: kind 'checkpoint' (path = workdir) or 'keras' (path = .h5)."""

    kind: str
    path: str  # the workdir; for keras the weights file ('' = Keras' cache)
    checkpoint: str = ""  # 'best', 'latest', a step, or '' (best, else latest)


def parse_init_from(spec: str) -> Source | None:
    """config.init_from -> Source (None for '')."""
    spec = (spec or "").strip()
    if not spec:
        return None
    if spec == KERAS or spec.startswith(KERAS + ":"):
        return Source(KERAS, spec[len(KERAS) + 1 :])
    if os.path.isdir(spec):  # a workdir whose name happens to contain ':'
        return Source("checkpoint", spec)
    path, sep, which = spec.rpartition(":")
    if sep and path and (which in ("best", "latest") or which.isdigit()):
        return Source("checkpoint", path, which)
    return Source("checkpoint", spec)


def _source_model(workdir: str) -> str | None:
    try:
        with open(os.path.join(workdir, workdir_files.CONFIG_FILE)) as f:
            return json.load(f)["model"]["name"]
    except (OSError, KeyError, TypeError, ValueError):
        return None


def load_source(spec: str) -> tuple[dict, dict]:
    """The source variables {'params', 'batch_stats'} (numpy) of config.init_from, and a
    description of where they came from."""
    source = parse_init_from(spec)
    if source is None:
        raise ValueError("config.init_from is empty: nothing to warm-start from.")
    if source.kind == KERAS:
        try:
            path = source.path or keras_weights.resnet50_weights()
            variables = keras_import.load_keras_resnet50(path)
        except (FileNotFoundError, keras_weights.DownloadError) as e:
            raise type(e)(f"config.init_from={spec!r}: {e}") from e
        return variables, {"kind": KERAS, "path": path, "model": keras_import.MODEL_NAME}

    context = f"config.init_from={spec!r}"
    with checkpointing.Checkpointer.of_workdir(source.path, context, f"Give {FORMS}.") as ckpt:
        step, _ = ckpt.resolve(source.checkpoint, context)
        variables = ckpt.restore_variables(step)
    description = {
        "kind": "checkpoint",
        "workdir": os.path.abspath(source.path),
        "step": int(step),
        "model": _source_model(source.path),
    }
    return variables, description


def _name(key: tuple) -> str:
    return "/".join(str(k) for k in key)


def _some(keys: list) -> str:
    """The first few keys as names, for an error message."""
    names = ", ".join(_name(k) for k in keys[:_LISTED]) or "nothing"
    return names + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def _flat(variables) -> dict:
    return traverse_util.flatten_dict(
        {c: dict(variables.get(c) or {}) for c in COLLECTIONS}, keep_empty_nodes=False
    )


def match(target: dict, source: dict, source_name: str = "the source") -> tuple[dict, dict]:
    """Which target arrays take the source's: (flat {key: source array}, report).

    `target` and `source` are {'params', 'batch_stats'} trees of arrays (or shape structs).
    Raises ValueError on a shape mismatch outside the head, or when less than half of the target's
    arrays outside the head are in the source (another model family).
    """
    target_flat, source_flat = _flat(target), _flat(source)
    loaded, reinitialised, mismatched, missing = {}, {}, [], []
    for key, leaf in target_flat.items():
        if key not in source_flat:
            missing.append(key)
            continue
        shape, source_shape = tuple(leaf.shape), tuple(np.shape(source_flat[key]))
        if shape == source_shape:
            loaded[key] = source_flat[key]
        elif contract.is_head(key):
            reinitialised[key] = (source_shape, shape)
        else:
            mismatched.append(f"{_name(key)} {source_shape} -> {shape}")
    left_out = [key for key in source_flat if key not in target_flat]
    if mismatched:
        raise ValueError(
            f"config.init_from: {len(mismatched)} array(s) outside the classifier head have "
            f"another shape in {source_name} than in this model (another width, depth or "
            f"number of input channels?), source -> here: {'; '.join(mismatched)}. Use the "
            f"source's config.model (and config.dataset.channels), or another source."
        )
    backbone = [key for key in target_flat if not contract.is_head(key)]
    matched = [key for key in loaded if not contract.is_head(key)]
    if 2 * len(matched) < len(backbone):  # a partial match (a deeper model) loads most arrays
        unmatched = [key for key in missing if not contract.is_head(key)]
        raise ValueError(
            f"config.init_from: only {len(matched)} of the {len(backbone)} arrays of this model "
            f"outside the head are in {source_name} (another model family?). Not found: "
            f"{_some(unmatched)}; the source has instead: {_some(left_out)}. Use the source's "
            f"config.model.name."
        )
    report = {
        "loaded": [_name(k) for k in loaded],
        "reinitialised": [_name(k) for k in reinitialised],
        "reinitialised_shapes": {
            _name(k): {"source": list(s), "target": list(t)} for k, (s, t) in reinitialised.items()
        },
        "left_out": [_name(k) for k in left_out],
        "missing": [_name(k) for k in missing],
    }
    report["counts"] = {
        key: len(report[key]) for key in ("loaded", "reinitialised", "left_out", "missing")
    }
    report["loaded_scalars"] = int(sum(np.size(v) for v in loaded.values()))
    return loaded, report


def _with_values(tree, loaded: dict, collection: str):
    """`tree` (global arrays) with the leaves that `loaded` holds replaced, shardings kept."""
    if not tree:
        return tree
    flat = traverse_util.flatten_dict(dict(tree), keep_empty_nodes=True)
    for key, leaf in flat.items():
        value = loaded.get((collection, *key))
        if value is not None:
            value = np.asarray(value, dtype=leaf.dtype)
            flat[key] = jax.make_array_from_callback(
                leaf.shape, leaf.sharding, lambda index, v=value: v[index]
            )
    return traverse_util.unflatten_dict(flat)


def summary(report: dict) -> str:
    """One log line: where from, and how many arrays were loaded / reinitialised / ..."""
    source = report["source"]
    where = (
        f"{source['workdir']} step {source['step']}"
        if source["kind"] == "checkpoint"
        else f"Keras ResNet50 weights {source['path']}"
    )
    counts = report["counts"]
    text = (
        f"Warm start from {where}: loaded {counts['loaded']} arrays "
        f"({report['loaded_scalars']:,} values)"
    )
    if report["reinitialised"]:
        text += f"; reinitialised (other shape) {', '.join(report['reinitialised'])}"
    for key, what in (("missing", "not in the source, kept at init"), ("left_out", "left out")):
        if report[key]:
            text += f"; {counts[key]} {what} (e.g. {', '.join(report[key][:3])})"
    return text + "."


def warm_start(config, state, workdir: str | None = None):
    """`state` (freshly initialised) with params and batch_stats (and their moving average,
    when the state keeps one) from config.init_from.

    Returns (state, report). The step and optimizer state stay as they are (fresh); the report
    is logged and, with a workdir, written to W/warm_start.json by process 0.
    """
    variables, description = load_source(config.init_from)
    if description["kind"] == KERAS:
        name = "Keras' ResNet50 (init_from='keras' needs config.model.name='resnet50_v1')"
    else:
        model = f", model {description['model']}" if description["model"] else ""
        name = f"the checkpoint {description['workdir']} (step {description['step']}{model})"
    target = contract.variables_of(state)
    loaded, report = match(target, variables, name)
    report = {"init_from": config.init_from, "source": description, **report}
    state = state.replace(
        params=_with_values(state.params, loaded, "params"),
        batch_stats=_with_values(state.batch_stats, loaded, "batch_stats"),
    )
    # config.ema_decay / lookahead_every: the average starts at the loaded weights too.
    for field in ("ema", "slow"):
        if hasattr(state, field):
            average = {k: _with_values(v, loaded, k) for k, v in getattr(state, field).items()}
            state = state.replace(**{field: average})
    logging.info("%s", summary(report))
    if workdir is not None and jax.process_index() == 0:
        files.write_json(os.path.join(workdir, REPORT_FILE), report)
    return state, report
