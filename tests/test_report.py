"""Report metrics against scikit-learn, and every figure written as a readable PNG."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, classification_report

from imgcls.evaluation import grad_cam, report

NAMES6 = ["airplane", "bird", "cat", "dog", "frog", "ship"]
KEYS = {"precision": "precision", "recall": "recall", "f1": "f1-score", "support": "support"}


def _labels():
    """300 seeded labels over 6 classes: class 4 is never a true label, class 5 never predicted."""
    rng = np.random.default_rng(0)
    y_true = rng.choice([0, 1, 2, 3, 5], size=300)
    noise = rng.integers(0, 5, size=300)
    y_pred = np.where((rng.random(300) < 0.6) & (y_true != 5), y_true, noise)
    assert 4 not in y_true and 5 not in y_pred and 4 in y_pred and 5 in y_true
    return y_true, y_pred


def _confusion(y_true, y_pred, c):
    cm = np.zeros((c, c), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _png_size(path, lo=200, hi=4000):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert image.format == "PNG"
    assert lo <= width <= hi and lo <= height <= hi, (width, height)
    return width, height


def test_classification_metrics_match_sklearn():
    y_true, y_pred = _labels()
    got = report.classification_metrics(_confusion(y_true, y_pred, 6), NAMES6)
    want = classification_report(
        y_true, y_pred, labels=range(6), target_names=NAMES6, output_dict=True, zero_division=0
    )
    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)
    assert set(got["per_class"]) == set(NAMES6)
    for name in NAMES6:
        for key in KEYS:
            assert got["per_class"][name][key] == pytest.approx(want[name][KEYS[key]], abs=1e-6)
    for ours, theirs in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        for key in KEYS:
            assert got[ours][key] == pytest.approx(want[theirs][KEYS[key]], abs=1e-6), (ours, key)
    # The edge cases are really exercised: no support (frog) and never predicted (ship).
    assert got["per_class"]["frog"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert got["per_class"]["ship"]["precision"] == 0.0 and got["per_class"]["ship"]["support"] > 0
    assert got["macro_avg"]["support"] == 300
    json.dumps(got, allow_nan=False)  # plain, finite Python numbers
    assert type(got["accuracy"]) is float and type(got["per_class"]["cat"]["support"]) is int


def test_classification_metrics_rejects_mismatched_names():
    with pytest.raises(ValueError, match="class names"):
        report.classification_metrics(np.eye(3, dtype=int), ["a", "b"])


def test_most_confused_pairs():
    cm = np.array([[9, 3, 0, 5], [3, 7, 1, 0], [0, 0, 4, 3], [2, 0, 0, 8]])
    names = ["a", "b", "c", "d"]
    pairs = report.most_confused_pairs(cm, names, k=4)
    assert pairs == [
        {"true": "a", "predicted": "d", "count": 5},
        {"true": "a", "predicted": "b", "count": 3},
        {"true": "b", "predicted": "a", "count": 3},
        {"true": "c", "predicted": "d", "count": 3},
    ]
    assert len(report.most_confused_pairs(cm, names)) == 6  # zero cells are left out
    assert report.most_confused_pairs(np.diag([4, 5]), ["x", "y"]) == []


@pytest.mark.parametrize("num_classes", [6, 100])
def test_plot_confusion_matrix(tmp_path, num_classes):
    rng = np.random.default_rng(1)
    cm = rng.integers(0, 20, size=(num_classes, num_classes)) + 50 * np.eye(num_classes, dtype=int)
    cm[1] = 0  # a class without examples
    names = NAMES6 if num_classes == 6 else [f"class_{i:03d}" for i in range(num_classes)]
    path = tmp_path / "confusion.png"
    report.plot_confusion_matrix(cm, names, path)
    width, height = _png_size(path)
    assert width > height  # two panels side by side
    if num_classes == 100:
        assert width >= 2000  # grows with the class count so labels stay readable


def test_plot_learning_curves(tmp_path):
    rows = []
    for step in range(10, 501, 10):
        rows.append(
            {
                "step": step,
                "train_loss": 2.0 / step**0.5,
                "train_accuracy": 1 - 1 / step,
                "learning_rate": 0.1,
            }
        )
        rows.append({"step": step, "steps_per_sec": 100.0})
        if step % 100 == 0:
            rows.append({"step": step, "eval_loss": 1.0 / step**0.5, "eval_accuracy": 0.9})
    rows.append({"step": 500, "eval_loss": 0.05, "eval_accuracy": 0.95, "eval_top5_accuracy": 1})
    path = tmp_path / "curves.png"
    assert report.plot_learning_curves(rows[::-1], path) == [100, 200, 300, 400, 500]
    _png_size(path)

    only_eval = [{"step": 7, "eval_loss": 0.3, "eval_accuracy": 0.8}]
    assert report.plot_learning_curves(only_eval, tmp_path / "one.png") == [7]
    _png_size(tmp_path / "one.png")
    assert report.plot_learning_curves([], tmp_path / "none.png") == []


def _section(rng, n, size, channels, correct):
    true = rng.integers(0, 6, size=n)
    return {
        "images": rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8),
        "true_labels": true,
        "predicted_labels": true if correct else (true + 1) % 6,
        "confidences": rng.random(n),
    }


def test_plot_prediction_grid(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "grid_gray.png"
    report.plot_prediction_grid(
        _section(rng, 11, 8, 1, True), _section(rng, 0, 8, 1, False), NAMES6, path
    )
    _png_size(path)
    path = tmp_path / "grid_rgb.png"
    report.plot_prediction_grid(
        _section(rng, 3, 32, 3, True), _section(rng, 20, 32, 3, False), NAMES6, path
    )
    _png_size(path)
    path = tmp_path / "one_section.png"
    section = _section(rng, 5, 16, 3, False)
    report.plot_predictions(
        section["images"],
        section["true_labels"],
        section["predicted_labels"],
        section["confidences"],
        NAMES6,
        path,
        title="Wrong",
    )
    _png_size(path)


@pytest.mark.parametrize("num_classes", [6, 100])
def test_plot_class_distribution(tmp_path, num_classes):
    rng = np.random.default_rng(3)
    names = NAMES6 if num_classes == 6 else [f"c{i}" for i in range(num_classes)]
    counts = {split: rng.integers(0, 50, size=num_classes) for split in ("train", "test")}
    path = tmp_path / "dist.png"
    report.plot_class_distribution(counts, names, path)
    _png_size(path)
    with pytest.raises(ValueError, match="train"):
        report.plot_class_distribution({"train": np.ones(3)}, names, path)


def test_plot_cam(tmp_path):
    rng = np.random.default_rng(4)
    for channels in (1, 3):
        images = rng.integers(0, 256, size=(5, 16, 16, channels), dtype=np.uint8)
        cams = rng.random((5, 16, 16)).astype(np.float32)
        titles = [f"true: cat / pred: {'cat' if i % 2 else 'dog'}" for i in range(5)]
        path = tmp_path / f"cam{channels}.png"
        grad_cam.plot_cam(images, cams, titles, path)
        _png_size(path)
    with pytest.raises(ValueError, match="cams"):
        grad_cam.plot_cam(images, cams[:, :8], titles, path)


def test_write_report_md(tmp_path):
    y_true, y_pred = _labels()
    cm = _confusion(y_true, y_pred, 6)
    metrics = report.classification_metrics(cm, NAMES6)
    metrics.update(
        split="test",
        step=1234,
        checkpoint="/w/checkpoints/1234",
        num_examples=300,
        loss=0.56789,
        top5_accuracy=0.98765,
        workdir="/w",
        most_confused=report.most_confused_pairs(cm, NAMES6),
        confusion_matrix={"class_names": NAMES6, "matrix": cm.tolist()},
    )
    figures = {"Confusion matrix": "confusion_matrix.png", "Learning curves": "curves.png"}
    path = tmp_path / "report.md"
    report.write_report_md(path, metrics, figures)
    text = path.read_text()
    assert "test" in text and "1234" in text
    for value in (
        metrics["accuracy"],
        0.98765,
        0.56789,
        metrics["macro_avg"]["f1"],
        metrics["weighted_avg"]["f1"],
    ):
        assert f"{value:.4f}" in text
    assert "| examples | 300 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.count("|") == 6]
    body = [line for line in rows if line.split("|")[1].strip() in NAMES6]
    assert sorted(line.split("|")[1].strip() for line in body) == sorted(NAMES6)
    f1s = [float(line.split("|")[4]) for line in body]
    assert f1s == sorted(f1s)  # worst classes first
    worst = metrics["most_confused"][0]
    assert f"| {worst['true']} | {worst['predicted']} | {worst['count']} |" in text
    for caption, filename in figures.items():
        assert f"![{caption}]({filename})" in text
