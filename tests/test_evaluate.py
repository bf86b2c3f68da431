"""Checkpoint evaluation: metrics equal scikit-learn's, reports and figures, modes and errors."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, run_python
from PIL import Image
from sklearn import metrics as skm

import imgcls
from imgcls import losses
from imgcls.evaluation import evaluate
from imgcls.evaluation import metrics as metrics_lib

FIGURES = (
    "confusion_matrix.png",
    "learning_curves.png",
    "predictions.png",
    "class_distribution.png",
    "cam.png",
)


def test_metrics_on_fixed_predictions_equal_scikit_learn():
    rng = np.random.default_rng(0)
    num_classes, n = 5, 400
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) + 2.0 * np.eye(num_classes)[labels]
    logits[:, 3] -= 8.0  # class 3 is never predicted: precision and F1 must be 0, not NaN
    mask = np.ones(n, bool)
    mask[-7:] = False  # padding examples must not count
    collection = metrics_lib.report_collection(num_classes).single_from_model_output(
        logits=jnp.asarray(logits, jnp.float32),
        labels=jnp.asarray(labels, jnp.int32),
        loss=losses.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)),
        mask=jnp.asarray(mask),
    )
    names = [f"c{i}" for i in range(num_classes)]
    got = evaluate.summarize(collection.compute(), names)

    y, p, lg = labels[mask], logits[mask].argmax(-1), logits[mask]
    assert 3 in y and 3 not in p
    expected = skm.classification_report(
        y, p, labels=range(num_classes), target_names=names, output_dict=True, zero_division=0
    )
    assert got["num_examples"] == n - 7
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-6)
    assert got["loss"] == pytest.approx(skm.log_loss(y, _softmax(lg), labels=range(5)), abs=1e-6)
    assert got["top5_accuracy"] == pytest.approx(1.0)
    for name in names:
        for key in ("precision", "recall", "f1-score", "support"):
            ours = got["per_class"][name]["f1" if key == "f1-score" else key]
            assert ours == pytest.approx(expected[name][key], abs=1e-6), (name, key)
    for ours, theirs in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        for key in ("precision", "recall", "f1"):
            assert got[ours][key] == pytest.approx(
                expected[theirs][f"{key}-score" if key == "f1" else key], abs=1e-6
            )
    assert got["per_class"]["c3"]["precision"] == 0.0 and got["per_class"]["c3"]["f1"] == 0.0
    np.testing.assert_array_equal(
        got["confusion_matrix"]["matrix"], skm.confusion_matrix(y, p, labels=range(5))
    )
    assert got["confusion_matrix"]["class_names"] == names


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A short digits run; training ends by writing its report."""
    config = load_config()
    config.dataset.data_dir = data_dir
    config.num_epochs = 6
    config.eval_every_epochs = 3
    config.log_every_steps = 11
    workdir = str(tmp_path_factory.mktemp("evaluated"))
    return workdir, imgcls.train_and_evaluate(config, workdir)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def test_training_ends_with_a_report(trained):
    workdir, result = trained
    out = result["report_dir"]
    assert out == os.path.join(workdir, "eval", "test_132")
    for name in ("metrics.json", "predictions.npz", "report.md", *FIGURES):
        assert os.path.exists(os.path.join(out, name)), name
    for name in FIGURES:
        with Image.open(os.path.join(out, name)) as image:
            image.verify()
        with Image.open(os.path.join(out, name)) as image:
            assert 200 <= image.width <= 4000 and 150 <= image.height <= 4000, name
    with open(os.path.join(out, "report.md")) as f:
        text = f.read()
    assert all(name in text for name in FIGURES)
    assert (
        f"{result['eval_accuracy']:.4f}" in text or f"{100 * result['eval_accuracy']:.2f}" in text
    )


def test_report_metrics_agree_with_training_log_and_predictions(trained):
    workdir, result = trained
    metrics = read_json(os.path.join(result["report_dir"], "metrics.json"))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f if "eval_accuracy" in line]
    assert logged[-1]["step"] == metrics["step"] == 132
    assert metrics["accuracy"] == pytest.approx(logged[-1]["eval_accuracy"], abs=1e-7)
    assert metrics["loss"] == pytest.approx(logged[-1]["eval_loss"], abs=1e-6)

    predictions = np.load(os.path.join(result["report_dir"], "predictions.npz"))
    np.testing.assert_array_equal(predictions["index"], np.arange(355))  # each once, in order
    labels, logits = predictions["labels"], predictions["logits"]
    assert logits.shape == (355, 10)
    assert list(predictions["class_names"]) == [str(i) for i in range(10)]
    predicted = logits.argmax(-1)
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted), abs=1e-6)
    assert metrics["loss"] == pytest.approx(skm.log_loss(labels, _softmax(logits)), abs=1e-5)
    np.testing.assert_array_equal(
        metrics["confusion_matrix"]["matrix"], skm.confusion_matrix(labels, predicted)
    )
    f1 = skm.f1_score(labels, predicted, average="macro")
    assert metrics["macro_avg"]["f1"] == pytest.approx(f1, abs=1e-6)


def test_eval_mode_best_checkpoint_and_other_split(trained):
    workdir, _ = trained
    proc = run_python(
        ["main.py", "--mode=eval", f"--workdir={workdir}", "--checkpoint=best", "--split=train"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Report:" in proc.stdout
    out = os.path.join(workdir, "eval", "train_132")
    metrics = read_json(os.path.join(out, "metrics.json"))
    assert metrics["checkpoint"] == "best" and metrics["split"] == "train"
    assert metrics["num_examples"] == 1442 and metrics["accuracy"] > 0.9
    assert np.load(os.path.join(out, "predictions.npz"))["index"].tolist() == list(range(1442))


def test_eight_devices_give_the_same_evaluation(trained, tmp_path):
    workdir, result = trained
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    proc = run_python(
        ["main.py", "--mode=eval", f"--workdir={copy}", "--checkpoint=132"],
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = read_json(os.path.join(result["report_dir"], "metrics.json"))
    eight = read_json(os.path.join(copy, "eval", "test_132", "metrics.json"))
    assert eight["confusion_matrix"] == one["confusion_matrix"]
    assert eight["accuracy"] == one["accuracy"]
    assert eight["per_class"] == one["per_class"]
    assert eight["loss"] == pytest.approx(one["loss"], abs=1e-6)


def test_bad_input_gives_one_clear_error(trained, tmp_path):
    workdir, _ = trained
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        evaluate.evaluate_checkpoint(str(tmp_path))
    no_checkpoints = tmp_path / "untrained"
    no_checkpoints.mkdir()
    shutil.copy(os.path.join(workdir, "config.json"), no_checkpoints / "config.json")
    with pytest.raises(FileNotFoundError, match="No checkpoints in"):
        evaluate.evaluate_checkpoint(str(no_checkpoints))
    with pytest.raises(FileNotFoundError, match=r"No checkpoint for step 7 .*saved steps: \["):
        evaluate.evaluate_checkpoint(workdir, checkpoint="7")
    with pytest.raises(ValueError, match="use 'latest', 'best' or a step number"):
        evaluate.evaluate_checkpoint(workdir, checkpoint="newest")
    with pytest.raises(ValueError, match="no split 'validation'"):
        evaluate.evaluate_checkpoint(workdir, split="validation")

    other = tmp_path / "other_model"
    shutil.copytree(workdir, other)
    config = read_json(other / "config.json")
    config["model"]["features"] = [16, 64]
    with open(other / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=r"does not match the model.*Conv_0.*\(3, 3, 1, 32\)"):
        evaluate.evaluate_checkpoint(str(other))

    proc = run_python(["main.py", "--mode=eval", f"--workdir={no_checkpoints}"])
    assert proc.returncode == 1 and "imgcls: error: No checkpoints in" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The traceback behind the one line is in the workdir's log file, after the command line.
    log = (no_checkpoints / "logs" / "eval.log").read_text()
    assert "imgcls started: main.py --mode=eval" in log
    assert "Traceback" in log and "FileNotFoundError: No checkpoints in" in log


def test_eval_console_summary(trained):
    """--mode=eval's console lines: split, step, checkpoint, the headline metrics, the report."""
    workdir, _ = trained
    result = evaluate.evaluate_checkpoint(workdir, "best")
    lines = evaluate.format_result(result).splitlines()
    assert lines[0] == (
        f"test at step 132 (best checkpoint): accuracy {result['accuracy']:.4f}  "
        f"loss {result['loss']:.4f}  macro F1 {result['macro_avg']['f1']:.4f}"
    )
    assert lines[1] == f"Report: {os.path.join(workdir, 'eval', 'test_132', 'report.md')}"
