"""Sweep results: one row per trial, ranked, as results.csv / results.md / results.png.

A sweep leaves one workdir per trial (`W/<trial>/status.json` from the launcher and the run's
`metrics.jsonl`); this module reads them back while trials may still be running, so every
reader tolerates missing files and a half-written last line. The ranking puts diverged (NaN)
and never-evaluated trials last, so the best trial is always a real one. numpy + matplotlib only
(no JAX, no TensorFlow): results can be rebuilt on any machine from a copied sweep folder.
Figures are drawn on `matplotlib.figure.Figure` objects, never through pyplot (see report.py).

Rebuild the table on any machine: `python -m imgcls.sweeps.results W` reads the trial folders
under W (a workdir that the machines share); with `--storage=URL --study_name=NAME` it reads an
Optuna sweep's study instead, for when each machine kept its trial folders to itself. The files
are replaced whole, so launchers that finish at once on a shared workdir never interleave them.
"""

import argparse
import csv
import json
import math
import os
import sys

import numpy as np
from matplotlib.figure import Figure

from imgcls.run import files
from imgcls.run.workdir import read_metrics
from imgcls.sweeps.hyper import flag_value

METRIC_COLUMNS = (
    "best_eval_accuracy",
    "final_eval_accuracy",
    "final_eval_loss",
    "best_step",
    "steps",
    "wall_time_s",
    "error",
)
_FIXED = ("rank", "name", "state", *METRIC_COLUMNS)
_PANELS_PER_ROW = 3


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def summarize_metrics(rows: list[dict]) -> dict:
    """best/final eval accuracy, final eval loss, best step and last step of metrics.jsonl rows."""
    acc = [(r.get("step"), _number(r.get("eval_accuracy"))) for r in rows]
    acc = [(s, a) for s, a in acc if a is not None]
    losses = [v for v in (_number(r.get("eval_loss")) for r in rows) if v is not None]
    steps = [r["step"] for r in rows if _number(r.get("step")) is not None]
    best, best_step = None, None
    if acc:
        finite = [(s, a) for s, a in acc if not math.isnan(a)]
        best_step, best = max(finite, key=lambda p: p[1]) if finite else (None, math.nan)
    return {
        "best_eval_accuracy": best,
        "final_eval_accuracy": acc[-1][1] if acc else None,
        "final_eval_loss": losses[-1] if losses else None,
        "best_step": best_step,
        "steps": steps[-1] if steps else None,
    }


def _tuples(value):
    """JSON has no tuples: sequence values in status.json were tuples in the sweep file."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def read_status(trial_dir: str) -> dict | None:
    """A trial's status.json (written by imgcls.sweeps.sweep); None if missing or unreadable."""
    try:
        with open(os.path.join(trial_dir, "status.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def collect(workdir) -> list[dict]:
    """One row per subdirectory of `workdir` holding a status.json, in directory-name order."""
    rows = []
    for entry in sorted(os.scandir(workdir), key=lambda e: e.name):
        status_path = os.path.join(entry.path, "status.json")
        if not entry.is_dir() or not os.path.exists(status_path):
            continue
        status = read_status(entry.path) or {
            "state": "unknown",
            "error": "unreadable status.json",
        }
        row = {
            "name": status.get("name") or entry.name,
            "state": status.get("state", "unknown"),
            "overrides": {k: _tuples(v) for k, v in (status.get("overrides") or {}).items()},
        }
        row.update(summarize_metrics(read_metrics(os.path.join(entry.path, "metrics.jsonl"))))
        row["wall_time_s"] = _number(status.get("wall_time_s"))
        row["error"] = status.get("error")
        rows.append(row)
    return rows


def _sort_key(row: dict, metric: str, sign: float):
    value = _number(row.get(metric))
    if value is None:
        return (2, 0.0, str(row.get("name")))
    if math.isnan(value):
        return (1, 0.0, str(row.get("name")))
    return (0, sign * value, str(row.get("name")))


def rank(rows: list[dict], metric: str = "best_eval_accuracy", mode: str = "max") -> list[dict]:
    """Rows best first; NaN (diverged) after every number, None (never evaluated) last."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: _sort_key(r, metric, sign))


def _override_columns(rows: list[dict]) -> dict[str, str]:
    """Override key -> column header, in order of first appearance over the rows."""
    columns = {}
    for row in rows:
        for key in row.get("overrides", {}):
            columns.setdefault(key, f"config.{key}" if key in _FIXED else key)
    return columns


def _is_best(ranked: list[dict], metric: str) -> list[bool]:
    has_best = bool(ranked) and _sort_key(ranked[0], metric, 1.0)[0] == 0
    return [has_best and i == 0 for i in range(len(ranked))]


def _table(ranked: list[dict], keys: dict[str, str], cell) -> list[list[str]]:
    table = []
    for i, row in enumerate(ranked):
        overrides = row.get("overrides", {})
        values = [i + 1, row.get("name"), row.get("state")]
        values += [flag_value(overrides[k]) if k in overrides else None for k in keys]
        table.append([cell(v) for v in values + [row.get(c) for c in METRIC_COLUMNS]])
    return table


def _csv_cell(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _md_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= 80 else text[:77] + "..."


def write_results(
    workdir, rows: list[dict], metric: str = "best_eval_accuracy", mode: str = "max"
) -> list[dict]:
    """Writes results.csv, results.md and results.png under `workdir`; returns the ranked rows."""
    ranked = rank(rows, metric, mode)
    keys = _override_columns(rows)
    header = ["rank", "name", "state", *keys.values(), *METRIC_COLUMNS]
    with files.atomic_open(
        os.path.join(workdir, "results.csv"), "w", newline="", encoding="utf-8"
    ) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(_table(ranked, keys, _csv_cell))
    with files.atomic_open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, metric, mode))
    with files.atomic_open(os.path.join(workdir, "results.png"), "wb") as f:
        plot_results(ranked, metric, f, best=any(_is_best(ranked, metric)))
    return ranked


def markdown(
    rows: list[dict], metric: str = "best_eval_accuracy", mode: str = "max", figure="results.png"
) -> str:
    """results.md: a headline, the best trial, the ranked table (best marked), and the figure
    (`figure=None` leaves it out, e.g. to show the table in a notebook)."""
    ranked = rank(rows, metric, mode)
    keys = _override_columns(rows)
    header = ["rank", "name", "state", *keys.values(), *METRIC_COLUMNS]
    states = [str(r.get("state")) for r in rows]
    shown = ["done", "failed", "pruned"] + sorted(set(states) - {"done", "failed", "pruned"})
    counts = ", ".join(f"{states.count(s)} {s}" for s in shown)
    best = _is_best(ranked, metric)
    lines = [
        f"# Sweep results: {len(rows)} trials ranked by {metric} ({mode}); {counts}",
        "",
        f"Best: `{ranked[0]['name']}`" if any(best) else f"No trial has a {metric} yet.",
        "",
        "| | " + " | ".join(header) + " |",
        "|" + " --- |" * (len(header) + 1),
    ]
    for is_best, cells in zip(best, _table(ranked, keys, _md_cell), strict=True):
        lines.append(f"| {'**best**' if is_best else ''} | " + " | ".join(cells) + " |")
    if figure:
        lines += ["", f"![metric by hyperparameter]({figure})"]
    return "\n".join(lines + [""])


def _swept_keys(rows: list[dict]) -> list[str]:
    """Override keys that take more than one value over the rows."""
    values = {}
    for row in rows:
        for key, value in row.get("overrides", {}).items():
            values.setdefault(key, set()).add(flag_value(value))
    return [k for k, v in values.items() if len(v) > 1]


def _draw_panel(ax, xs: list, ys: list[float], best_index: int | None, label: str) -> None:
    """metric against one hyperparameter: numeric (log if >10x) or categorical x values."""
    numeric = all(_number(x) is not None for x in xs)
    if numeric:
        positions = [float(x) for x in xs]
        if min(positions) > 0 and max(positions) > 10 * min(positions):
            ax.set_xscale("log")
    else:
        unique = list({flag_value(x): x for x in xs}.values())
        try:
            unique = sorted(unique)  # False < True, (16, 32) < (32, 64), "a" < "b"
        except TypeError:
            pass  # mixed types: first appearance (best trial first)
        categories = [flag_value(x) for x in unique]
        positions = [categories.index(flag_value(x)) for x in xs]
        ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 3 else 0)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.scatter(positions, ys, color="tab:blue", alpha=0.7, s=30)
    if best_index is not None:
        x, y = positions[best_index], ys[best_index]
        ax.scatter([x], [y], marker="*", s=250, color="tab:red", zorder=3)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def plot_results(ranked: list[dict], metric: str, path, best: bool = True) -> None:
    """One panel per swept hyperparameter (or per trial name if none is swept) -> PNG."""
    points = [r for r in ranked if r.get("state") != "failed" and _sort_key(r, metric, 1.0)[0] == 0]
    best_row = ranked[0] if best and ranked and points and points[0] is ranked[0] else None
    keys = _swept_keys(ranked) or [None]
    cols = min(_PANELS_PER_ROW, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes, keys, strict=False):
        panel = [r for r in points if key is None or key in r.get("overrides", {})]
        ax.set_ylabel(metric)
        if not panel:
            ax.text(0.5, 0.5, f"no {metric} yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(key or "trial")
            continue
        xs = [r["name"] if key is None else r["overrides"][key] for r in panel]
        ys = [float(r[metric]) for r in panel]
        best_index = next((i for i, r in enumerate(panel) if r is best_row), None)
        _draw_panel(ax, xs, ys, best_index, key or "trial")
    title = f"{metric} by hyperparameter ({len(points)} of {len(ranked)} trials shown)"
    fig.suptitle(title + (f"\nred star: best, {best_row['name']}" if best_row else ""))
    fig.savefig(path, dpi=100, bbox_inches="tight", format="png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Rebuilds a sweep's results.csv/md/png.")
    parser.add_argument("workdir", help="the sweep's --workdir (the files are written there)")
    parser.add_argument("--storage", default=None, help="read this Optuna study database")
    parser.add_argument("--study_name", default=None, help="with --storage: the study")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.workdir):
        print(f"imgcls.sweeps.results: error: {args.workdir} is not a folder", file=sys.stderr)
        return 2
    if args.storage:
        # Optuna, only for this: the rest of the module reads plain files.
        from imgcls.sweeps import study as study_lib

        try:
            rows = study_lib.result_rows(study_lib.load(args.storage, args.study_name))
        except study_lib.StudyError as e:
            print(f"imgcls.sweeps.results: error: {e}", file=sys.stderr)
            return 2
    else:
        rows = collect(args.workdir)
    if not rows:
        print(f"imgcls.sweeps.results: error: no trials in {args.workdir}", file=sys.stderr)
        return 1
    ranked = write_results(args.workdir, rows)
    print(f"{len(ranked)} trials: {os.path.join(args.workdir, 'results.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
