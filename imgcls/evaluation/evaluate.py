"""Evaluation of a checkpoint, and the report of an evaluation: `evaluate_checkpoint(W)`.

It needs nothing but the workdir: the config comes from `W/config.json`, the variables from
`W/checkpoints` (restored alone, without an optimizer: imgcls.run.restore). It writes a report
per (split, step) under W/eval/<split>_<step>/: metrics (including the confusion matrix that
precision, recall and F1 derive from, merged on device), predictions, figures (report.py,
grad_cam.py) and report.md. Training ends with the same report of its final weights
(`evaluate_variables`). Logits reach the host only to be saved in `predictions.npz` and to pick
the examples that the figures show.
"""

import os
import re
from typing import NamedTuple

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from imgcls import data, models, parallel
from imgcls.evaluation import grad_cam, report
from imgcls.evaluation import metrics as metrics_lib
from imgcls.evaluation import tta as tta_lib
from imgcls.evaluation.step import AXIS, make_eval_step, run_eval_step
from imgcls.run import files, interrupts, restore
from imgcls.run import workdir as workdir_files

GRID_EXAMPLES = 16  # correct and wrong examples shown in predictions.png (each)
COUNT_LABELS_MAX_EXAMPLES = 300_000  # larger splits are left out of class_distribution.png


def report_dir(workdir: str, split: str, step: int, variant: str = "") -> str:
    """`W/eval/<split>_<step>[_<variant>]`, with split expressions such as 'train[:10%]' made
    path-safe; `variant` tells apart reports of other weights or TTA than the run's own."""
    name = f"{split}_{step}" + (f"_{variant}" if variant else "")
    return os.path.join(workdir, "eval", re.sub(r"[^A-Za-z0-9_.-]", "_", name))


def _variant(config, weights: str, tta: str) -> str:
    """'' for the run's default weights and TTA; else what differs, e.g. 'raw' or 'raw_flip'."""
    parts = [weights] if weights != restore.default_weights(config) else []
    parts += [tta] if tta != tta_lib.check_mode(None, config) else []
    return "_".join(parts)


def evaluate_checkpoint(
    workdir: str, checkpoint: str = "latest", split: str | None = None, weights=None, tta=None
):
    """Evaluates a saved checkpoint of `workdir` on `split` (default: the config's eval split).

    `checkpoint` is 'latest', 'best' or a step number; `weights` 'ema' or 'raw' (default: ema
    when the run kept an average); `tta` one of imgcls.evaluation.tta.MODES (default:
    config.eval_tta).
    """
    again = "its report was not written; run the same command again"
    with interrupts.doing(f"while evaluating {workdir}: {again}"):
        config = workdir_files.load_config(workdir)
        weights, tta = restore.check_weights(weights, config), tta_lib.check_mode(tta, config)
        if split:
            config.dataset.eval_split = split
        info = data.prepare_dataset(config)
        mesh = parallel.create_mesh()
        model = models.from_config(config, info.num_classes)
        variables, step, name = restore.restore_variables(
            workdir, model, info.image_shape, checkpoint, weights
        )
        variables = parallel.replicate(variables, mesh)
        return evaluate_variables(config, workdir, variables, step, info, mesh, name, weights, tta)


class Example(NamedTuple):
    """One evaluated example kept for the figures."""

    confidence: float  # the predicted class's probability
    index: int  # position in the split
    image: np.ndarray
    label: int
    predicted: int


class _Examples:
    """Keeps the images of the first correct and the most confidently wrong predictions."""

    def __init__(self, size: int):
        self.size = size
        self.correct: list[Example] = []
        self.wrong: list[Example] = []

    def add(self, images, labels, probs, indices):
        predicted = probs.argmax(-1)
        for image, label, p, pred, index in zip(
            images, labels, probs, predicted, indices, strict=True
        ):
            item = Example(float(p[pred]), int(index), image, int(label), int(pred))
            if pred == label and len(self.correct) < self.size:
                self.correct.append(item)
            elif pred != label:
                self.wrong.append(item)
        self.wrong = sorted(self.wrong, key=lambda e: (-e.confidence, e.index))[: self.size]

    @staticmethod
    def as_arrays(items, image_shape):
        return {
            "images": np.stack([e.image for e in items]) if items else np.zeros((0, *image_shape)),
            "true_labels": np.array([e.label for e in items], np.int64),
            "predicted_labels": np.array([e.predicted for e in items], np.int64),
            "confidences": np.array([e.confidence for e in items], np.float32),
        }


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _eval_pass(config, info, variables, mesh, tta):
    """One pass over the eval split: merged metrics, all predictions, and example images."""
    p_eval = make_eval_step(
        config, info.num_classes, mesh, metrics_lib.report_collection(info.num_classes), tta
    )
    total, local, examples = None, [], _Examples(GRID_EXAMPLES)
    for batch in data.create_eval_iterator(config, info):
        batch_metrics, logits = run_eval_step(p_eval, variables, batch, mesh)
        total = batch_metrics if total is None else total.merge(batch_metrics)
        logits = np.asarray(multihost_utils.global_array_to_host_local_array(logits, mesh, P(AXIS)))
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


def _class_counts(config, info, eval_counts):
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


def evaluate_variables(
    config, workdir, variables, step, info, mesh, checkpoint="latest", weights="raw", tta=None
) -> dict:
    """Evaluates the model's `variables` (of training step `step`; `weights` says which: 'raw'
    or 'ema') on config.dataset.eval_split with test-time augmentation `tta` (default:
    config.eval_tta) and writes the report (process 0); returns metrics.json's contents plus
    'report_dir'."""
    split = config.dataset.eval_split
    tta = tta_lib.check_mode(tta, config)
    computed, predictions, examples = _eval_pass(config, info, variables, mesh, tta)
    results = {
        "workdir": os.path.abspath(workdir),
        "split": split,
        "step": int(step),
        "checkpoint": checkpoint,
        "weights": weights,
        "tta": tta,
        **summarize(computed, info.class_names),
    }
    out = report_dir(workdir, split, step, _variant(config, weights, tta))
    results["report_dir"] = out
    if jax.process_index() == 0:
        _write_report(config, workdir, info, variables, out, results, predictions, examples)
    logging.info(
        "Evaluation of step %d on %s: accuracy %.4f, loss %.4f; report in %s",
        step,
        split,
        results["accuracy"],
        results["loss"],
        out,
    )
    return results


def format_result(result: dict) -> str:
    """The console summary of evaluate_checkpoint's result."""
    used = ", ".join([f"{result['checkpoint']} checkpoint", *tta_lib.describe(result)])
    return (
        f"{result['split']} at step {result['step']} ({used}): "
        f"accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}  "
        f"macro F1 {result['macro_avg']['f1']:.4f}\n"
        f"Report: {os.path.join(result['report_dir'], 'report.md')}"
    )


def _write_report(config, workdir, info, variables, out, results, predictions, examples):
    os.makedirs(out, exist_ok=True)
    files.remove_stale_partials(out)  # what a SIGKILL left of an earlier report
    files.write_json(os.path.join(out, "metrics.json"), results)
    with files.atomic_open(os.path.join(out, "predictions.npz"), "wb") as f:
        np.savez(f, class_names=np.array(info.class_names), **predictions)
    names = list(info.class_names)
    figures = {}
    confusion = np.array(results["confusion_matrix"]["matrix"])
    report.plot_confusion_matrix(confusion, names, os.path.join(out, "confusion_matrix.png"))
    figures["Confusion matrix (counts and row-normalised)"] = "confusion_matrix.png"
    rows = workdir_files.read_metrics(workdir)
    if rows:
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
    model = models.from_config(config, info.num_classes)
    if grad_cam.report_figure(
        config, model, info, variables, examples, os.path.join(out, "cam.png")
    ):
        figures["Grad-CAM of the predicted class"] = "cam.png"
    report.write_report_md(os.path.join(out, "report.md"), results, figures)
