"""Checkpoint-based evaluation: metrics, predictions, figures and a report per (split, step).

`evaluate_checkpoint(W)` needs nothing but the workdir: the config comes from `W/config.json`,
the weights from `W/checkpoints`. Metrics (including the confusion matrix that precision,
recall and F1 derive from) are merged on device as CLU metrics; logits reach the host only to
be saved in `predictions.npz` and to pick the examples that the figures show.
"""

import json
import os
import re

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from imgcls import checkpointing, models, parallel, report, train
from imgcls import metrics as metrics_lib
from imgcls import workdir as workdir_files
from imgcls.data.normalize import normalize

GRID_EXAMPLES = 16  # correct and wrong examples shown in predictions.png (each)
CAM_EXAMPLES = 4  # correct and wrong examples explained in cam.png (each)
COUNT_LABELS_MAX_EXAMPLES = 300_000  # larger splits are left out of class_distribution.png


def report_dir(workdir: str, split: str, step: int) -> str:
    """`W/eval/<split>_<step>`, with split expressions such as 'train[:10%]' made path-safe."""
    return os.path.join(workdir, "eval", f"{re.sub(r'[^A-Za-z0-9_.-]', '_', split)}_{step}")


def resolve_step(ckpt: checkpointing.Checkpointer, checkpoint: str) -> int:
    """The step that `checkpoint` ('latest', 'best' or a step number) names."""
    steps = ckpt.all_steps()
    if not steps:
        raise FileNotFoundError(
            f"No checkpoints in {ckpt.directory}: train first "
            "(python main.py --config=... --workdir=W), or pass the workdir of a trained run."
        )
    if checkpoint == "latest":
        return ckpt.latest_step()
    if checkpoint == "best":
        best = ckpt.best_step()
        if best is None:
            raise ValueError(
                f"No checkpoint in {ckpt.directory} has eval metrics yet, so none is 'best'; "
                "use --checkpoint=latest or a step number."
            )
        return best
    try:
        step = int(checkpoint)
    except ValueError:
        raise ValueError(
            f"--checkpoint={checkpoint!r}: use 'latest', 'best' or a step number."
        ) from None
    if step not in steps:
        raise FileNotFoundError(
            f"No checkpoint for step {step} in {ckpt.directory}; saved steps: {steps}."
        )
    return step


def evaluate_checkpoint(workdir: str, checkpoint: str = "latest", split: str | None = None):
    """Evaluates a saved checkpoint of `workdir` on `split` (default: the config's eval split)."""
    config = workdir_files.load_config(workdir)
    if split:
        config.dataset.eval_split = split
    info = train.prepare_dataset(config)
    mesh = parallel.create_mesh()
    state, _, _ = train.initial_state(config, info, mesh)
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No checkpoints in {directory}: is {workdir} a trained workdir?")
    with checkpointing.Checkpointer(directory, read_only=True) as ckpt:
        step = resolve_step(ckpt, checkpoint)
        state = ckpt.restore(state, step)
    return evaluate_state(config, workdir, state, info, mesh, checkpoint)


class _Examples:
    """Keeps the images of the first correct and the most confidently wrong predictions."""

    def __init__(self, size: int):
        self.size = size
        self.correct: list[tuple] = []
        self.wrong: list[tuple] = []

    def add(self, images, labels, probs, indices):
        predicted = probs.argmax(-1)
        for image, label, p, pred, index in zip(
            images, labels, probs, predicted, indices, strict=True
        ):
            item = (float(p[pred]), int(index), image, int(label), int(pred))
            if pred == label and len(self.correct) < self.size:
                self.correct.append(item)
            elif pred != label:
                self.wrong.append(item)
        self.wrong = sorted(self.wrong, key=lambda t: (-t[0], t[1]))[: self.size]

    @staticmethod
    def as_arrays(items, image_shape):
        return {
            "images": np.stack([t[2] for t in items]) if items else np.zeros((0, *image_shape)),
            "true_labels": np.array([t[3] for t in items], np.int64),
            "predicted_labels": np.array([t[4] for t in items], np.int64),
            "confidences": np.array([t[0] for t in items], np.float32),
        }


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def predict(config, info, state, mesh):
    """One pass over the eval split: merged metrics, all predictions, and example images."""
    from imgcls import data

    p_eval = train.make_eval_step(config, metrics_lib.report_collection(info.num_classes), mesh)
    total, local, examples = None, [], _Examples(GRID_EXAMPLES)
    for batch in data.create_eval_iterator(config, info):
        batch_metrics, logits = train.run_eval_step(p_eval, state, batch, mesh)
        total = batch_metrics if total is None else total.merge(batch_metrics)
        logits = np.asarray(
            multihost_utils.global_array_to_host_local_array(logits, mesh, P(parallel.AXIS))
        )
        mask = batch["mask"]
        local.append((logits, batch["label"], batch["index"], mask))
        examples.add(
            batch["image"][mask], batch["label"][mask], _softmax(logits[mask]), batch["index"][mask]
        )
    logits, labels, indices, mask = (np.concatenate(parts) for parts in zip(*local, strict=True))
    if jax.process_count() > 1:  # every process holds the same number of (padded) rows
        logits, labels, indices, mask = (
            np.concatenate(multihost_utils.process_allgather(x))
            for x in (logits, labels, indices, mask)
        )
    order = np.argsort(indices[mask], kind="stable")
    predictions = {
        "labels": labels[mask][order].astype(np.int64),
        "logits": logits[mask][order].astype(np.float32),
        "index": indices[mask][order].astype(np.int64),
    }
    return total.compute(), predictions, examples


def _grad_cam_figure(config, info, state, examples, path):
    """Grad-CAM of the predicted class for a few correct and wrong examples."""
    from imgcls import cam

    chosen = examples.correct[:CAM_EXAMPLES] + examples.wrong[:CAM_EXAMPLES]
    if not chosen:
        return False
    images = np.stack([t[2] for t in chosen])
    model = models.create_model(config.model, info.num_classes, config.half_precision)
    variables = {
        "params": jax.tree.map(np.asarray, state.params),
        "batch_stats": jax.tree.map(np.asarray, state.batch_stats),
    }
    inputs = np.asarray(normalize(images, tuple(config.dataset.mean), tuple(config.dataset.std)))
    predicted = np.array([t[4] for t in chosen])
    cams = cam.grad_cam(model, variables, inputs, predicted)
    names = info.class_names
    titles = [
        f"{'correct' if t[3] == t[4] else 'wrong'}: true {names[t[3]]}, "
        f"pred {names[t[4]]} ({t[0]:.2f})"
        for t in chosen
    ]
    report.plot_cam(images, cams, titles, path)
    return True


def _class_counts(config, info, eval_counts):
    from imgcls import data

    counts = {}
    train_split = config.dataset.train_split
    if train_split != config.dataset.eval_split:
        size = info.split_sizes.get(train_split, 0)
        if 0 < size <= COUNT_LABELS_MAX_EXAMPLES:
            counts[train_split] = data.count_labels(config, info, train_split)
    counts[config.dataset.eval_split] = eval_counts
    return counts


def summarize(computed: dict, class_names) -> dict:
    """metrics.json's numbers from the computed report collection (scalars + confusion)."""
    computed = dict(computed)
    confusion = np.asarray(computed.pop("confusion"))
    names = list(class_names)
    derived = report.classification_metrics(confusion, names)
    derived.pop("accuracy")  # the CLU metric's value is the one training logs
    return {
        "num_examples": int(confusion.sum()),
        **{k: float(v) for k, v in computed.items()},
        **derived,
        "most_confused": report.most_confused_pairs(confusion, names),
        "confusion_matrix": {"class_names": names, "matrix": confusion.tolist()},
    }


def evaluate_state(config, workdir, state, info, mesh, checkpoint: str = "latest") -> dict:
    """Evaluates `state` on config.dataset.eval_split and writes the report (process 0)."""
    step = int(state.step)
    split = config.dataset.eval_split
    computed, predictions, examples = predict(config, info, state, mesh)
    results = {
        "workdir": os.path.abspath(workdir),
        "split": split,
        "step": step,
        "checkpoint": checkpoint,
        **summarize(computed, info.class_names),
    }
    out = report_dir(workdir, split, step)
    results["report_dir"] = out
    if jax.process_index() == 0:
        _write_report(config, workdir, info, state, out, results, predictions, examples)
    logging.info(
        "Evaluation of step %d on %s: accuracy %.4f, loss %.4f; report in %s",
        step,
        split,
        results["accuracy"],
        results["loss"],
        out,
    )
    return results


def _write_report(config, workdir, info, state, out, results, predictions, examples):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    np.savez(
        os.path.join(out, "predictions.npz"), class_names=np.array(info.class_names), **predictions
    )
    names = list(info.class_names)
    figures = {}
    confusion = np.array(results["confusion_matrix"]["matrix"])
    report.plot_confusion_matrix(confusion, names, os.path.join(out, "confusion_matrix.png"))
    figures["Confusion matrix (counts and row-normalised)"] = "confusion_matrix.png"
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        report.plot_learning_curves(rows, os.path.join(out, "learning_curves.png"))
        figures["Learning curves"] = "learning_curves.png"
    shape = info.image_shape
    report.plot_prediction_grid(
        _Examples.as_arrays(examples.correct, shape),
        _Examples.as_arrays(examples.wrong, shape),
        names,
        os.path.join(out, "predictions.png"),
    )
    figures["Correct and most confidently wrong predictions"] = "predictions.png"
    counts = _class_counts(config, info, confusion.sum(1))
    report.plot_class_distribution(counts, names, os.path.join(out, "class_distribution.png"))
    figures["Examples per class"] = "class_distribution.png"
    if _grad_cam_figure(config, info, state, examples, os.path.join(out, "cam.png")):
        figures["Grad-CAM of the predicted class"] = "cam.png"
    report.write_report_md(os.path.join(out, "report.md"), results, figures)
