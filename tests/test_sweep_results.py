"""Sweep results from fake trial folders: collect, rank, and the csv / md / png written."""

import csv
import json
import math

import pytest
from PIL import Image

from imgcls.sweeps import hyper
from imgcls.sweeps import results as sweep_results

LR = "optimizer.learning_rate"


def _trial(root, overrides, state, metrics=(), tail="", error=None, wall=10.0):
    """A trial folder as the launcher and a run leave it; returns its name."""
    name = hyper.trial_name(overrides)
    folder = root / name
    folder.mkdir()
    status = dict(name=name, overrides=overrides, state=state, error=error, wall_time_s=wall)
    status["returncode"] = 0 if state == "done" else (1 if state == "failed" else None)
    (folder / "status.json").write_text(json.dumps(status))
    if metrics or tail:
        lines = "".join(json.dumps(m) + "\n" for m in metrics)
        (folder / "metrics.jsonl").write_text(lines + tail)
    return name


def _curve(accs, losses, every=100):
    rows = []
    for i, (a, loss) in enumerate(zip(accs, losses, strict=True)):
        step = (i + 1) * every
        rows.append({"step": step - 50, "train_loss": 1.0, "learning_rate": 0.1})
        rows.append({"step": step, "eval_accuracy": a, "eval_loss": loss})
    return rows


@pytest.fixture
def sweep(tmp_path):
    """Six trials: three done, one NaN-diverged, one failed early, one pruned, plus noise."""
    names = {}
    names["good"] = _trial(
        tmp_path, {LR: 0.01, "batch_size": 32}, "done", _curve([0.8, 0.95, 0.93], [0.6, 0.2, 0.3])
    )
    names["ok"] = _trial(
        tmp_path, {LR: 0.001, "batch_size": 64}, "done", _curve([0.5, 0.7, 0.8], [1, 0.8, 0.5])
    )
    # the last line was being written when collect ran: the 0.99 must not be read
    names["torn"] = _trial(
        tmp_path,
        {LR: 0.0001, "batch_size": 32},
        "running",
        _curve([0.3, 0.6], [2.0, 1.0]),
        tail='{"step": 300, "eval_accuracy": 0.99, "eval_lo',
    )
    nan = float("nan")
    names["nan"] = _trial(
        tmp_path, {LR: 1.0, "batch_size": 64}, "done", _curve([nan, nan], [nan, nan])
    )
    names["failed"] = _trial(
        tmp_path, {LR: 0.1, "batch_size": 32}, "failed", error="ValueError: bad | thing\nline 2"
    )
    names["pruned"] = _trial(tmp_path, {LR: 0.1, "batch_size": 64}, "pruned", _curve([0.4], [1.5]))
    (tmp_path / "not_a_trial").mkdir()  # no status.json: ignored
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path, names


def test_collect_reads_every_trial(sweep):
    root, names = sweep
    rows = {r["name"]: r for r in sweep_results.collect(root)}
    assert set(rows) == set(names.values())
    good = rows[names["good"]]
    assert good["state"] == "done" and good["overrides"] == {LR: 0.01, "batch_size": 32}
    assert good["best_eval_accuracy"] == 0.95 and good["best_step"] == 200
    assert good["final_eval_accuracy"] == 0.93 and good["final_eval_loss"] == 0.3
    assert good["steps"] == 300 and good["wall_time_s"] == 10.0 and good["error"] is None
    torn = rows[names["torn"]]
    assert torn["best_eval_accuracy"] == 0.6 and torn["steps"] == 200
    failed = rows[names["failed"]]
    assert failed["state"] == "failed" and failed["error"].startswith("ValueError")
    for key in ("best_eval_accuracy", "final_eval_accuracy", "final_eval_loss", "steps"):
        assert failed[key] is None
    nan = rows[names["nan"]]
    assert math.isnan(nan["best_eval_accuracy"]) and nan["best_step"] is None
    assert math.isnan(nan["final_eval_loss"])


def test_rank_orders_numbers_then_nan_then_none(sweep):
    root, n = sweep
    rows = sweep_results.collect(root)
    ranked = [r["name"] for r in sweep_results.rank(rows)]
    assert ranked == [n["good"], n["ok"], n["torn"], n["pruned"], n["nan"], n["failed"]]
    by_loss = [r["name"] for r in sweep_results.rank(rows, "final_eval_loss", mode="min")]
    assert by_loss == [n["good"], n["ok"], n["torn"], n["pruned"], n["nan"], n["failed"]]
    by_worst = [r["name"] for r in sweep_results.rank(rows, "final_eval_loss", mode="max")]
    assert by_worst[:4] == [n["pruned"], n["torn"], n["ok"], n["good"]]
    assert by_worst[4:] == [n["nan"], n["failed"]]  # NaN and None stay last either way
    with pytest.raises(ValueError, match="mode"):
        sweep_results.rank(rows, mode="best")


def test_rank_ties_are_broken_by_name():
    rows = [{"name": n, "best_eval_accuracy": 0.5} for n in ("c", "a", "b")]
    rows.append({"name": "d", "best_eval_accuracy": 0.9})
    assert [r["name"] for r in sweep_results.rank(rows)] == ["d", "a", "b", "c"]


def test_write_results_csv_md_png(sweep):
    root, n = sweep
    ranked = sweep_results.write_results(root, sweep_results.collect(root))
    assert ranked[0]["name"] == n["good"]

    with open(root / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    header = list(table[0])
    assert header[:5] == ["rank", "name", "state", LR, "batch_size"]
    assert header[5:] == list(sweep_results.METRIC_COLUMNS)
    assert [r["name"] for r in table] == [r["name"] for r in ranked]
    assert [r["rank"] for r in table] == ["1", "2", "3", "4", "5", "6"]
    assert table[0][LR] == "0.01" and table[0]["batch_size"] == "32"
    assert float(table[0]["best_eval_accuracy"]) == 0.95 and table[0]["best_step"] == "200"
    assert table[4]["best_eval_accuracy"] == "nan" and table[5]["best_eval_accuracy"] == ""
    assert table[5]["error"] == "ValueError: bad | thing\nline 2"  # csv quotes it back intact

    md = (root / "results.md").read_text()
    assert "best_eval_accuracy" in md.splitlines()[0]
    assert "3 done, 1 failed, 1 pruned" in md.splitlines()[0]
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 7  # header + 6 trials
    assert rows[1].startswith("| **best** | 1 | " + n["good"])
    assert sum("**best**" in r for r in rows) == 1
    assert "| 0.9500 |" in rows[1] and "| 0.7000 |" not in rows[1]
    failed = next(r for r in rows if n["failed"] in r)
    assert "bad \\| thing line 2" in failed  # the pipe and newline do not break the table
    assert all(r.count(" | ") == rows[0].count(" | ") for r in rows[1:3])

    with Image.open(root / "results.png") as image:
        image.load()
        width, height = image.size
    assert 500 < width < 2000 and 200 < height < 1200  # two panels side by side


def test_write_results_with_one_trial_and_no_metrics(tmp_path):
    _trial(tmp_path, {}, "failed", error="killed")
    ranked = sweep_results.write_results(tmp_path, sweep_results.collect(tmp_path))
    assert [r["name"] for r in ranked] == ["base"]
    md = (tmp_path / "results.md").read_text()
    assert "**best**" not in md and "0 done, 1 failed, 0 pruned" in md
    with Image.open(tmp_path / "results.png") as image:
        assert min(image.size) > 100


def test_plot_with_categorical_and_log_axes(tmp_path):
    trials = hyper.product(
        hyper.grid(**{LR: [1e-4, 1e-3, 1e-2]}),
        hyper.zip_(**{"model.widths": [(16, 32), (32, 64)], "augment": [True, False]}),
    )
    for i, overrides in enumerate(trials):
        _trial(tmp_path, overrides, "done", _curve([0.5 + 0.05 * i], [1.0]))
    ranked = sweep_results.write_results(tmp_path, sweep_results.collect(tmp_path))
    assert ranked[0]["overrides"] == {LR: 1e-2, "model.widths": (32, 64), "augment": False}
    with open(tmp_path / "results.csv", newline="") as f:
        first = next(csv.DictReader(f))
    assert first["model.widths"] == "(32, 64)" and first["augment"] == "False"
    with Image.open(tmp_path / "results.png") as image:
        width, height = image.size
    assert width > 1000 and 200 < height < 600  # three panels in one row
