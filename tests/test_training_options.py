"""Validation split, early stopping, class balance, mixup/cutmix and --mode=inspect."""

import collections
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, run_python

import imgcls
from imgcls import data, parallel
from imgcls.evaluation import inspection, metrics
from imgcls.run import checkpointing
from imgcls.training import early_stopping, loop
from imgcls.training import state as state_lib


def read_jsonl(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_soft_label_accuracy():
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    labels = jnp.array([0, 2])
    np.testing.assert_allclose(metrics._correct(logits, labels), [1.0, 0.0])
    targets = jnp.array([[0.7, 0.0, 0.3], [0.0, 0.4, 0.6]])  # mixes of two labels
    np.testing.assert_allclose(metrics._correct(logits, labels, targets), [0.7, 0.4])


def test_validation_fraction_becomes_exact_slices(data_dir):
    config = load_config()
    config.dataset.data_dir = data_dir
    info = data.get_dataset_info(config)
    config.dataset.validation_fraction = 0.1
    resolved = data.resolve_splits(config, info)
    assert resolved.dataset.train_split == "train[:1298]"
    assert resolved.dataset.validation_split == "train[1298:]"
    assert config.dataset.train_split == "train"  # the caller's config is left alone
    info = data.get_dataset_info(resolved)
    assert info.split_sizes["train[:1298]"] == 1298 and info.split_sizes["train[1298:]"] == 144
    train_items = {b.tobytes() for b in _images(resolved, info, "train[:1298]")}
    validation_items = {b.tobytes() for b in _images(resolved, info, "train[1298:]")}
    assert not train_items & validation_items
    config.dataset.validation_split = "test"
    with pytest.raises(ValueError, match="both set"):
        data.resolve_splits(config, info)


def _images(config, info, split):
    batches = data.create_eval_iterator(config, info, split)
    return [image for b in batches for image in b["image"][b["mask"]]]


def test_early_stopping_stops_resumes_stopped_and_reports_the_best(digits_config, tmp_path):
    config = digits_config
    config.optimizer.learning_rate = 0.0  # accuracy never improves after the first eval
    config.dataset.validation_fraction = 0.1
    config.num_epochs = 10
    config.eval_every_epochs = 1
    config.early_stopping_patience = 2
    config.final_report = True
    workdir = str(tmp_path)
    result = imgcls.train_and_evaluate(config, workdir)
    spe = 1298 // 64
    eval_steps = [r["step"] for r in read_jsonl(workdir) if "eval_accuracy" in r]
    assert eval_steps == [spe, 2 * spe, 3 * spe]  # 1 best + 2 without improvement
    with checkpointing.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        assert ckpt.latest_step() == 3 * spe
        best = ckpt.best_step()
    assert result["report_split"] == "test" and result["report_dir"].endswith(f"test_{best}")
    with open(os.path.join(result["report_dir"], "metrics.json")) as f:
        assert json.load(f)["num_examples"] == 355  # the untouched test split
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["dataset"]["validation_split"] == "train[1298:]"

    again = imgcls.train_and_evaluate(config, workdir)  # already stopped: trains no further
    assert [r["step"] for r in read_jsonl(workdir) if "eval_accuracy" in r][-1] == 3 * spe
    assert again["eval_accuracy"] == result["eval_accuracy"]


def test_early_stopping_counter():
    stopper = early_stopping.EarlyStopping(patience=2)
    assert [stopper.update(a) for a in (0.5, 0.6, 0.6, 0.7, 0.65, 0.7)] == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert stopper.best == 0.7
    off = early_stopping.EarlyStopping(patience=0)
    assert not any(off.update(0.5) for _ in range(10))


def test_class_weights_and_weighted_loss(digits_config):
    config = digits_config
    info = data.get_dataset_info(config)
    assert data.class_weights(config, info) is None
    config.dataset.balance = "loss"
    weights = np.array(data.class_weights(config, info))
    counts = data.count_labels(config, info, "train")
    np.testing.assert_allclose(weights * counts, counts.sum() / 10)  # each class weighs n / K
    config.dataset.balance = "oversample"
    with pytest.raises(ValueError, match="balance='oversample'"):
        data.class_weights(config, info)

    mesh = parallel.create_mesh()
    batch = parallel.global_batch(mesh, next(data.create_train_iterator(digits_config, info)))
    losses = {}
    for scale in (None, 2.0):
        state, _, _ = state_lib.initial_state(config, info, mesh)
        class_weights = None if scale is None else (scale,) * 10
        p_train, _ = loop.make_steps(config, 10, mesh, class_weights)
        _, step_metrics, _ = p_train(state, batch)
        losses[scale] = float(step_metrics.compute()["loss"])
    assert losses[2.0] == pytest.approx(2 * losses[None], rel=1e-5)


def test_balanced_resampling_evens_out_classes():
    from imgcls.data._tf import tf
    from imgcls.data.pipelines import tf_data

    labels = np.array([0] * 900 + [1] * 100)
    rates = data.balanced_class_weights(np.bincount(labels))
    np.testing.assert_allclose(rates, [1000 / (2 * 900), 1000 / (2 * 100)])
    ds = tf.data.Dataset.from_tensor_slices({"label": labels})
    key = tf.constant([0, 1], tf.int64)
    out = [int(ex["label"]) for ex in tf_data._resample(ds, rates, key).take(1000)]
    counts = collections.Counter(out)
    assert abs(counts[0] - 500) < 60 and abs(counts[1] - 500) < 60, counts
    again = [int(ex["label"]) for ex in tf_data._resample(ds, rates, key).take(1000)]
    assert again == out


def test_mixup_and_cutmix_training_learns(digits_config, tmp_path):
    config = digits_config
    config.augment.mixup = 0.2
    config.augment.cutmix = 1.0
    config.num_epochs = 12
    config.eval_every_epochs = 12
    result = imgcls.train_and_evaluate(config, str(tmp_path))
    assert result["eval_accuracy"] > 0.9
    train_rows = [r for r in read_jsonl(str(tmp_path)) if "train_accuracy" in r]
    # Mixed targets: the soft accuracy of training is below the clean eval accuracy.
    assert train_rows[-1]["train_accuracy"] < result["eval_accuracy"]


def test_inspect_writes_summary_and_figures(digits_config, tmp_path):
    from PIL import Image

    config = digits_config
    config.dataset.validation_fraction = 0.2
    config.augment.horizontal_flip = True
    summary = inspection.inspect_dataset(config, str(tmp_path))
    assert summary["num_classes"] == 10
    splits = summary["splits"]
    assert splits["train"]["examples"] + splits["validation"]["examples"] == 1442
    assert splits["eval"] == {"split": "test", "examples": 355}
    counts = summary["class_counts"]
    assert sum(counts[splits["validation"]["split"]]) == splits["validation"]["examples"]
    assert summary["image_sizes"]["test"]["height"] == {"min": 8, "median": 8.0, "max": 8}
    assert summary["warnings"] == []  # digits are balanced
    out = os.path.join(str(tmp_path), "inspect")
    for name in ("class_distribution.png", "samples.png", "augmentations.png"):
        with Image.open(os.path.join(out, name)) as image:
            assert image.size[0] > 300 and image.size[1] > 200
    markdown = open(os.path.join(out, "inspect.md")).read()
    assert "| 9 |" in markdown and "samples.png" in markdown


def test_inspect_console_summary():
    summary = {
        "dataset": "folder",
        "num_classes": 2,
        "splits": {"train": {"split": "train", "examples": 40}},
        "class_counts": {"train": [32, 8]},
        "image_sizes": {
            "train": {
                "sampled": 40,
                "height": {"min": 10, "median": 24.0, "max": 30},
                "width": {"min": 12, "median": 20.5, "max": 40},
            }
        },
        "warnings": ["strong class imbalance"],
        "inspect_dir": "W/inspect",
    }
    assert inspection.format_summary(summary).splitlines() == [
        "Dataset folder: 2 classes",
        "  train      train                      40 examples, 8-32 per class",
        "  image sizes in train (40 images): height 10-30 (median 24), width 12-40 (median 20.5)",
        "  warning: strong class imbalance",
        "Report: W/inspect/inspect.md",
    ]


def test_imbalance_warning():
    names = ["a", "b", "c"]
    ratio, warning = inspection.imbalance([100, 90, 80], names)
    assert ratio == pytest.approx(1.25) and warning is None
    ratio, warning = inspection.imbalance([300, 90, 20], names)
    assert ratio == 15 and "'a' has 300" in warning and "'c' only 20" in warning
    assert "balance" in warning
    _, warning = inspection.imbalance([5, 0, 5], names)
    assert "no examples: b" in warning


def test_train_step_with_mixing_is_deterministic(digits_config):
    config = digits_config
    config.augment.mixup = 0.4
    info = data.get_dataset_info(config)
    mesh = parallel.create_mesh()
    batch = parallel.global_batch(mesh, next(data.create_train_iterator(config, info)))
    outs = []
    for _ in range(2):
        state, _, _ = state_lib.initial_state(config, info, mesh)
        p_train, _ = loop.make_steps(config, 10, mesh)
        state, step_metrics, _ = p_train(state, batch)
        outs.append((jax.tree.leaves(state.params), step_metrics.compute()))
    for a, b in zip(outs[0][0], outs[1][0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert 0 < float(outs[0][1]["accuracy"]) < 1


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory):
    """root/<class>/*.png: 40 images of 'common', 8 of 'rare' (all in the train split)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imbalanced")
    rng = np.random.default_rng(0)
    for name, count in (("common", 40), ("rare", 8)):
        (root / name).mkdir()
        for i in range(count):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return str(root)


def folder_config(path, data_dir, pipeline, balance):
    config = load_config()
    config.dataset.update(
        name="folder",
        path=path,
        data_dir=data_dir,
        image_size=8,
        crop_fraction=1.0,
        split_fractions=(1.0, 0.0, 0.0),
        eval_split="train",
        pipeline=pipeline,
        balance=balance,
    )
    config.dataset.mean, config.dataset.std = (0.5,) * 3, (0.5,) * 3
    config.batch_size, config.eval_batch_size = 16, 16
    return config


@pytest.mark.parametrize("pipeline", ["tf", "device"])
def test_balanced_sampling_on_an_imbalanced_folder(imbalanced_folder, tmp_path, pipeline):
    rare_share = {}
    for balance in ("none", "sampling"):
        config = folder_config(imbalanced_folder, str(tmp_path), pipeline, balance)
        info = data.get_dataset_info(config)
        assert info.class_names == ("common", "rare")
        stream = data.create_train_iterator(config, info, mesh=parallel.create_mesh())
        labels = np.concatenate([np.asarray(next(stream)["label"]) for _ in range(30)])
        rare_share[balance] = labels.mean()
    assert abs(rare_share["none"] - 8 / 48) < 0.05, rare_share
    assert abs(rare_share["sampling"] - 0.5) < 0.1, rare_share


def test_main_inspect_warns_on_imbalance_and_measures_folder_images(imbalanced_folder, tmp_path):
    workdir = tmp_path / "w"
    proc = run_python(
        [
            "main.py",
            "--mode=inspect",
            "--config=configs/folder_cnn.py",
            f"--config.dataset.path={imbalanced_folder}",
            f"--config.dataset.data_dir={tmp_path}",
            "--config.dataset.split_fractions=(0.75,0.0,0.25)",
            "--config.dataset.validation_split=",
            f"--workdir={workdir}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: strong class imbalance: 'common' has" in proc.stdout
    assert "Report: " in proc.stdout and "inspect.md" in proc.stdout
    summary = json.loads((workdir / "inspect" / "inspect.json").read_text())
    assert [sum(summary["class_counts"][s]) for s in ("train", "test")] == [
        summary["splits"]["train"]["examples"],
        summary["splits"]["eval"]["examples"],
    ]
    assert sum(map(sum, summary["class_counts"].values())) == 48
    assert summary["image_sizes"]["train"]["sampled"] == summary["splits"]["train"]["examples"]
    assert summary["folder"]["layout"] == "class"


def test_train_split_too_big_for_memory_is_not_cached(digits_config, monkeypatch, caplog):
    from imgcls.data.pipelines import tf_data

    digits_config.dataset.pipeline = "tf"  # the tf.data pipeline's cache
    info = data.get_dataset_info(digits_config)
    small = data.create_train_iterator(digits_config, info)
    assert "Not caching" not in caplog.text
    monkeypatch.setattr(tf_data, "CACHE_MEMORY_FRACTION", 1e-12)
    uncached_config = digits_config.copy_and_resolve_references()
    uncached_config.dataset.cache = False
    expected = next(data.create_train_iterator(uncached_config, info))
    got = next(data.create_train_iterator(digits_config, info))
    assert "Not caching the decoded train split" in caplog.text
    np.testing.assert_array_equal(got["image"], expected["image"])  # as with cache=False
    assert next(small)["image"].shape == got["image"].shape
