"""Evaluation reports: metrics from a confusion matrix, the figures, and `report.md`.

An evaluation ends in a folder a person reads (`W/eval/<step>/`), so this module turns the
numbers into tables and PNGs. It is numpy + matplotlib only, with no JAX or TensorFlow, so that
reports can be rebuilt from `metrics.json` on any machine. Figures are drawn on
`matplotlib.figure.Figure` objects rendered by Agg, never through pyplot: nothing changes the
caller's backend (a notebook keeps its inline plots), no window opens, and no figure is left
registered anywhere once the PNG is written.
"""

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from imgcls.run import files

_ANNOTATE_MAX_CLASSES = 20  # cell numbers in the confusion matrix up to this many classes
_HBAR_MIN_CLASSES = 30  # class distribution switches to horizontal bars from here on
_PER_ROW = 8  # prediction thumbnails per row
_MAX_PER_SECTION = 64  # prediction thumbnails drawn per section, to bound the figure size
_MAX_TABLE_ROWS = 100  # per-class rows in report.md
_SECTION_KEYS = ("images", "true_labels", "predicted_labels", "confidences")


def save_figure(fig: Figure, path) -> None:
    """Writes the figure as PNG, whole or not at all (files.atomic_open)."""
    with files.atomic_open(path, "wb") as f:  # Agg; the figure is not registered anywhere
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")


def _tick_fontsize(num_classes: int) -> float:
    return float(np.clip(300 / max(num_classes, 1), 6, 10))


def _as_confusion(confusion, class_names) -> np.ndarray:
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(
            f"confusion matrix has shape {cm.shape} but there are {len(class_names)} class "
            "names; it must be [C, C] with one name per class."
        )
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def classification_metrics(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy and per-class / macro / weighted precision, recall, F1 and support.

    Matches scikit-learn's `classification_report(..., output_dict=True, zero_division=0)`:
    undefined ratios are 0, never NaN. All values are plain Python floats and ints.
    """
    cm = _as_confusion(confusion, class_names)
    tp, predicted, support = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    total = int(cm.sum())
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)

    def row(p, r, f, count):
        return {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(count)}

    weights = _ratio(support, total)
    per_class = zip(precision, recall, f1, support, strict=True)
    return {
        "accuracy": float(_ratio(np.trace(cm), total)),
        "per_class": {n: row(*v) for n, v in zip(class_names, per_class, strict=True)},
        "macro_avg": row(precision.mean(), recall.mean(), f1.mean(), total),
        "weighted_avg": row(precision @ weights, recall @ weights, f1 @ weights, total),
    }


def most_confused_pairs(confusion, class_names, k=10) -> list[dict]:
    """The k largest non-zero off-diagonal cells, largest first, ties by (true, predicted)."""
    cm = _as_confusion(confusion, class_names)
    true_idx, pred_idx = np.nonzero(cm * (1 - np.eye(len(cm), dtype=np.int64)))
    cells = sorted(zip(true_idx, pred_idx, strict=True), key=lambda t: (-cm[t], t[0], t[1]))
    return [
        {"true": class_names[i], "predicted": class_names[j], "count": int(cm[i, j])}
        for i, j in cells[:k]
    ]


def plot_confusion_matrix(confusion, class_names, path) -> None:
    """Counts and row-normalised confusion matrices side by side (rows true, columns predicted)."""
    cm = _as_confusion(confusion, class_names)
    c = len(class_names)
    normalised = _ratio(cm, cm.sum(axis=1, keepdims=True))
    panel = float(np.clip(0.13 * c + 3.5, 5.5, 16))
    fontsize = _tick_fontsize(c)
    fig = Figure(figsize=(2 * panel + 2.5, panel), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = ((axes[0], cm, "Counts", "d"), (axes[1], normalised, "Row-normalised (recall)", ".2f"))
    for ax, values, title, fmt in panels:
        vmax = 1.0 if fmt != "d" else max(int(cm.max()), 1)
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(
            range(c),
            class_names,
            rotation=90 if c > 10 else 45,
            ha="center" if c > 10 else "right",
            fontsize=fontsize,
        )
        ax.set_yticks(range(c), class_names, fontsize=fontsize)
        if c <= _ANNOTATE_MAX_CLASSES:
            style = dict(ha="center", va="center", fontsize=min(9, fontsize))
            for (i, j), v in np.ndenumerate(values):
                ax.text(j, i, format(v, fmt), color="white" if v > vmax / 2 else "black", **style)
    save_figure(fig, path)


def plot_learning_curves(rows: list[dict], path) -> list[int]:
    """Loss and accuracy against step, train as lines and eval as markers; returns eval steps."""

    def series(key):
        points = sorted((r["step"], r[key]) for r in rows if r.get(key) is not None)
        return [p[0] for p in points], [p[1] for p in points]

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        steps, values = series(f"train_{metric}")
        if steps:
            ax.plot(steps, values, label=f"train {metric}", color="tab:blue", linewidth=1)
        steps, values = series(f"eval_{metric}")
        if steps:
            ax.plot(steps, values, "o-", label=f"eval {metric}", color="tab:orange", markersize=5)
        if ax.get_lines():
            ax.legend()
        else:
            ax.text(
                0.5, 0.5, f"no {metric} logged", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(metric.capitalize())
        ax.grid(alpha=0.3)
    save_figure(fig, path)
    return sorted({int(r["step"]) for r in rows if r.get("eval_accuracy") is not None})


def _draw_section(fig, section: dict, class_names, title: str) -> None:
    """One titled block of thumbnails "true: X / pred: Y (conf)" in `fig` (a (sub)figure)."""
    images = np.asarray(section["images"])
    n = len(images)
    shown = min(n, _MAX_PER_SECTION)
    fig.suptitle(
        f"{title} ({n})" if shown == n else f"{title} (first {shown} of {n})",
        fontsize=13,
        fontweight="bold",
    )
    if n == 0:
        fig.text(0.5, 0.5, "none", ha="center", va="center", fontsize=12, color="gray")
        return
    rows = math.ceil(shown / _PER_ROW)
    axes = fig.subplots(rows, _PER_ROW, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for k in range(shown):
        true, pred = int(section["true_labels"][k]), int(section["predicted_labels"][k])
        image = images[k]
        if image.ndim == 3 and image.shape[-1] == 1:
            axes[k].imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            axes[k].imshow(image, interpolation="nearest")
        confidence = float(section["confidences"][k])
        axes[k].set_title(
            f"true: {class_names[true]}\npred: {class_names[pred]} ({confidence:.2f})",
            fontsize=8,
            color="green" if true == pred else "red",
        )


def _section_rows(section: dict) -> int:
    return max(1, math.ceil(min(len(section["images"]), _MAX_PER_SECTION) / _PER_ROW))


def plot_predictions(
    images, true_labels, predicted_labels, confidences, class_names, path, title=""
):
    """One section of prediction thumbnails (see plot_prediction_grid for correct + wrong)."""
    values = (images, true_labels, predicted_labels, confidences)
    section = dict(zip(_SECTION_KEYS, values, strict=True))
    fig = Figure(figsize=(1.6 * _PER_ROW, 1.9 * _section_rows(section) + 0.6), layout="constrained")
    _draw_section(fig, section, class_names, title or "Predictions")
    save_figure(fig, path)


def plot_prediction_grid(correct: dict, wrong: dict, class_names, path) -> None:
    """A "Correct" and a "Wrong" section of thumbnails in one figure; an empty one says "none".

    Each dict has arrays images (uint8 [N, H, W, 1 or 3]), true_labels, predicted_labels and
    confidences. At most 64 thumbnails per section are drawn (the title gives the total).
    """
    heights = [1.9 * _section_rows(s) + 0.6 for s in (correct, wrong)]
    fig = Figure(figsize=(1.6 * _PER_ROW, sum(heights)), layout="constrained")
    for sub, section, title in zip(
        fig.subfigures(2, 1, height_ratios=heights),
        (correct, wrong),
        ("Correct", "Wrong"),
        strict=True,
    ):
        _draw_section(sub, section, class_names, title)
    save_figure(fig, path)


def plot_class_distribution(counts: dict[str, np.ndarray], class_names, path) -> None:
    """Examples per class for each split, as grouped bars (horizontal for many classes)."""
    c, n = len(class_names), max(len(counts), 1)
    for split, values in counts.items():
        if len(values) != c:
            raise ValueError(f"split {split!r} has {len(values)} class counts, expected {c}.")
    horizontal = c >= _HBAR_MIN_CLASSES
    fontsize = _tick_fontsize(c)
    size = (
        (10, float(np.clip(0.16 * c + 1.5, 4, 30)))
        if horizontal
        else (float(np.clip(0.5 * c + 3, 6, 16)), 4.5)
    )
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    width, positions = 0.8 / n, np.arange(c)
    for k, (split, values) in enumerate(counts.items()):
        values = np.asarray(values, dtype=np.int64)
        label, offset = f"{split} (total {int(values.sum())})", (k - (n - 1) / 2) * width
        if horizontal:
            ax.barh(positions + offset, values, height=width, label=label)
        else:
            ax.bar(positions + offset, values, width=width, label=label)
    if horizontal:
        ax.set_yticks(positions, class_names, fontsize=fontsize)
        ax.invert_yaxis()
        ax.margins(y=0.01)
        ax.set_xlabel("examples")
    else:
        ax.set_xticks(
            positions,
            class_names,
            rotation=45 if c > 6 else 0,
            ha="right" if c > 6 else "center",
            fontsize=fontsize,
        )
        ax.set_ylabel("examples")
    ax.set_title("Examples per class")
    if counts:
        fig.legend(loc="outside lower center", ncols=n)
    ax.grid(alpha=0.3, axis="x" if horizontal else "y")
    save_figure(fig, path)


def _fmt(value, digits=4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def write_report_md(path, metrics: dict, figures: dict[str, str]) -> None:
    """Writes a Markdown summary of metrics.json: headline, per-class, confusions, figures."""
    lines = [f"# Evaluation: {metrics.get('split')} split, step {metrics.get('step')}", ""]
    for key in ("checkpoint", "weights", "tta", "workdir"):  # weights: raw or EMA; tta: views
        if metrics.get(key) is not None:
            lines.append(f"- {key}: `{metrics[key]}`")
    lines += [
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {_fmt(metrics.get('accuracy'))} |",
    ]
    if metrics.get("top5_accuracy") is not None:
        lines.append(f"| top-5 accuracy | {_fmt(metrics['top5_accuracy'])} |")
    lines.append(f"| loss | {_fmt(metrics.get('loss'))} |")
    for key, label in (("macro_avg", "macro F1"), ("weighted_avg", "weighted F1")):
        if metrics.get(key):
            lines.append(f"| {label} | {_fmt(metrics[key]['f1'])} |")
    lines += [f"| examples | {_fmt(metrics.get('num_examples'))} |", ""]

    per_class = metrics.get("per_class") or {}
    if per_class:
        ranked = sorted(per_class.items(), key=lambda item: item[1]["f1"])  # stable: class order
        shown = ranked[:_MAX_TABLE_ROWS]
        note = "" if len(shown) == len(ranked) else f" (worst {len(shown)} of {len(ranked)})"
        lines += [
            f"## Per class, worst F1 first{note}",
            "",
            "| class | precision | recall | F1 | support |",
            "|" + " --- |" * 5,
        ]
        lines += [
            f"| {_cell(name)} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | "
            f"{_fmt(m['f1'])} | {_fmt(m['support'])} |"
            for name, m in shown
        ]
        lines.append("")

    confused = metrics.get("most_confused") or []
    lines += ["## Most confused pairs", ""]
    if confused:
        lines += ["| true | predicted | count |", "| --- | --- | --- |"]
        lines += [
            f"| {_cell(p['true'])} | {_cell(p['predicted'])} | {p['count']} |" for p in confused
        ]
    else:
        lines.append("No misclassified examples.")
    lines.append("")

    if figures:
        lines += ["## Figures", ""]
        for caption, filename in figures.items():
            lines += [f"### {caption}", "", f"![{caption}]({filename})", ""]
    with files.atomic_open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
