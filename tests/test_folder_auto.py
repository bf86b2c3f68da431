"""The folder configs' 'auto' settings: split folders found by their common names, a stratified
validation split carved from train, image size / channels / mean / std and the cnn's depth from
the data, dataset errors that name the flag to set, and an auto-configured run that predict,
export and serve use from its workdir alone. Image trees are generated (tiny) in tmp_path."""

import io
import json
import logging
import os

import ml_collections
import numpy as np
import pytest
from conftest import load_config
from PIL import Image

import imgcls
from imgcls import data
from imgcls.config import resolve
from imgcls.data import auto, splits
from imgcls.data.sources import folder
from imgcls.evaluation import inspection
from imgcls.inference import export, predict
from imgcls.models import sizing

CLASSES = ("ant", "bee", "cow")


@pytest.fixture(autouse=True)
def _fresh_scan():
    folder.clear_cache()
    yield
    folder.clear_cache()


def _image(rng, label, height, width, mode):
    """A noisy image whose brightness (or dominant colour) is the class."""
    if mode == "L":
        return Image.fromarray((rng.integers(0, 80, (height, width)) + 70 * label).astype(np.uint8))
    pixels = rng.integers(0, 100, (height, width, 3))
    pixels[..., label % 3] += 120
    return Image.fromarray(pixels.astype(np.uint8)).convert(mode)


def make_tree(root, splits_per_class, size=(12, 12), mode="L", seed=0):
    """root/<split>/<class>/*.png with splits_per_class {split folder: images per class};
    the split '' means root/<class>/*. size is (H, W) or a function of the image index; mode
    is a PIL mode or a function of it."""
    rng = np.random.default_rng(seed)
    for split, count in splits_per_class.items():
        for label, name in enumerate(CLASSES):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                height, width = size(i) if callable(size) else size
                image_mode = mode(i) if callable(mode) else mode
                path = os.path.join(root, split, name, f"{i:03d}.png")
                _image(rng, label, height, width, image_mode).save(path)
    return str(root)


def folder_cnn(path, data_dir, **dataset):
    """configs/folder_cnn.py on `path`, with only what the test sets besides."""
    config = load_config("folder_cnn")
    config.dataset.path = str(path)
    config.dataset.data_dir = str(data_dir)
    for key, value in dataset.items():
        with config.dataset.ignore_type():
            config.dataset[key] = value
    return config


def plan(split_sizes, **dataset):
    """splits.split_plan of folder_cnn's split keys (or those given) over named splits."""
    config = folder_cnn("/nowhere", "")
    for key, value in dataset.items():
        with config.dataset.ignore_type():
            config.dataset[key] = value
    resolved, notes = splits.split_plan(config, split_sizes, "folder")
    ds = resolved.dataset
    roles = (ds.train_split, ds.validation_split, ds.eval_split)
    return roles, [splits.describe_splits(resolved, split_sizes), *notes]


def test_every_common_split_name_in_any_case():
    for train_name in splits.SPLIT_NAMES["train"]:
        for test_name in splits.SPLIT_NAMES["test"]:
            roles, _ = plan({train_name.upper(): 100, test_name.title(): 30})
            assert roles == (
                f"{train_name.upper()}[:90]",
                f"{train_name.upper()}[90:]",
                test_name.title(),
            )
    for val_name in splits.SPLIT_NAMES["validation"]:
        roles, notes = plan({"train": 100, val_name: 20, "test": 30})
        assert roles == ("train", val_name, "test")
        assert notes == [
            f"splits: train = train (100), validation = {val_name} (20), test = test (30)"
        ]


def test_missing_validation_or_test_split():
    roles, notes = plan({"Training_Set": 2000, "test_set": 2000})
    assert roles == ("Training_Set[:1800]", "Training_Set[1800:]", "test_set")
    assert notes == [
        "splits: train = Training_Set[:1800] (1,800), validation = Training_Set[1800:] (200), "
        "test = test_set (2,000)"
    ]
    roles, notes = plan({"trn": 50, "dev": 10})  # no test: the validation split reports
    assert roles == ("trn", "dev", "dev")
    assert "no test split: the final report is on the validation split 'dev'" in notes[1]
    roles, notes = plan({"train": 10})  # train alone: a carved part validates and reports
    assert roles == ("train[:9]", "train[9:]", "train[9:]")
    assert "validation split 'train[9:]'" in notes[1]


def test_explicit_values_win():
    sizes = {"train": 100, "val": 20, "test": 30, "extra": 5}
    roles, notes = plan(sizes, validation_split="extra")
    assert roles == ("train", "extra", "test")  # 'extra' has a role: no complaint about it
    roles, notes = plan({"train": 100, "val": 20, "test": 30}, validation_fraction="0.2")
    assert roles == ("train[:80]", "train[80:]", "test")
    assert "not on the split 'val'" in notes[1]
    roles, _ = plan({"train": 100, "test": 30}, validation_fraction=0.0)
    assert roles == ("train", "", "test")  # no validation split: validate on eval_split
    roles, _ = plan({"a": 100, "b": 30}, train_split="a", validation_split="", eval_split="b")
    assert roles == ("a", "", "b")
    roles, _ = plan({"train": 100, "val": 20, "test": 30}, eval_split="val+test[:50%]")
    assert roles == ("train", "val", "val+test[:50%]")  # TFDS split expressions work too


@pytest.mark.parametrize(
    "sizes, dataset, expected",
    [
        (
            {"train": 10, "holdout": 5},
            {},
            [
                "has the split(s) 'holdout', whose role its name does not tell (recognised: "
                "'train' as train). Say what each is, e.g. "
                "--config.dataset.validation_split=holdout, or rename it: train: train/training/",
                "test: test/testing/test_set/eval/tst (any case)",
            ],
        ),
        (
            {"train": 10, "training": 5},
            {},
            ["two train splits", "--config.dataset.train_split=train"],
        ),
        ({"test": 10, "val": 5}, {}, ["no training split", "--config.dataset.train_split=<name>"]),
        (
            {"training_set": 10, "test_set": 5},
            {"train_split": "train"},
            [
                "config.dataset.train_split='train': dataset 'folder' has no split 'train'",
                "Set --config.dataset.train_split=training_set",
            ],
        ),
        ({"train": 10}, {"validation_fraction": "1.5"}, ["--config.dataset.validation_fraction"]),
        ({"train": 10}, {"validation_fraction": "lots"}, ["--config.dataset.validation_fraction"]),
    ],
)
def test_split_errors_name_the_flag(sizes, dataset, expected):
    with pytest.raises(ValueError) as error:
        plan(sizes, **dataset)
    for text in expected:
        assert text in str(error.value)


def test_split_folders_found_and_validation_stratified(tmp_path):
    root = make_tree(tmp_path / "pets", {"Training_Set": 20, "TEST": 4})
    config = folder_cnn(root, tmp_path / "tfds")
    resolved, info, notes = data.resolve_dataset(config)
    ds = resolved.dataset
    assert (ds.train_split, ds.validation_split, ds.eval_split) == (
        "Training_Set[:54]",
        "Training_Set[54:]",
        "TEST",
    )
    assert notes[0] == (
        "splits: train = Training_Set[:54] (54), validation = Training_Set[54:] (6), "
        "test = TEST (12)"
    )
    # The carved validation part is stratified: 2 of each class's 20.
    assert data.count_labels(resolved, info, "Training_Set[54:]").tolist() == [2, 2, 2]
    assert data.count_labels(resolved, info, "TEST").tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="'holdout'.*--config.dataset.validation_split=holdout"):
        os.rename(os.path.join(root, "TEST"), os.path.join(root, "holdout"))
        folder.clear_cache()
        data.resolve_dataset(config)


def _pixels(root, split, channels):
    """Per-image means and mean squares of every image of root/split, in [0, 1] units."""
    means, squares = [], []
    for name in CLASSES:
        for file in sorted(os.listdir(os.path.join(root, split, name))):
            image = Image.open(os.path.join(root, split, name, file)).convert("RGB")
            pixels = np.asarray(image, np.float64).reshape(-1, 3) / 255.0
            if channels == 1:
                pixels = pixels @ np.array([0.299, 0.587, 0.114])[:, None]
            means.append(pixels.mean(0))
            squares.append((pixels**2).mean(0))
    mean, square = np.mean(means, 0), np.mean(squares, 0)
    return mean, np.sqrt(square - mean**2)


def _resolved(root, tmp_path, **dataset):
    """(resolved config.dataset, DatasetInfo, notes) of folder_cnn on root."""
    resolved, info, notes = data.resolve_dataset(folder_cnn(root, tmp_path / "tfds", **dataset))
    return resolved.dataset, info, notes


def test_auto_uniform_grayscale(tmp_path):
    root = make_tree(tmp_path / "digits", {"train": 6, "test": 2}, size=(28, 28), mode="L")
    ds, info, notes = _resolved(root, tmp_path)
    assert (ds.image_size, ds.channels, info.image_shape) == (0, 1, (28, 28, 1))
    mean, std = _pixels(root, "train", 1)
    np.testing.assert_allclose(ds.mean, mean, atol=1e-4)
    np.testing.assert_allclose(ds.std, std, atol=1e-4)
    assert "image_size: auto -> 0 (the native size: all 24 images are 28x28)" in notes
    assert "channels: auto -> 1 (all 24 images are grayscale)" in notes
    assert "the 18 images of the training split 'train', 1 channel(s))" in notes[-1]
    # An explicit native size now works on a folder whose images share one size.
    ds, info, _ = _resolved(root, tmp_path, image_size=0, channels=3, mean=(0.5,) * 3)
    assert (ds.image_size, info.image_shape, ds.mean) == (0, (28, 28, 3), (0.5,) * 3)
    np.testing.assert_allclose(ds.std, _pixels(root, "train", 3)[1], atol=1e-4)


def test_auto_mixed_size_rgb(tmp_path):
    sizes = [(40, 60), (52, 44), (70, 90), (36, 36), (120, 80)]  # shorter sides 40 44 70 36 80
    root = make_tree(tmp_path / "photos", {"": 5}, size=lambda i: sizes[i], mode="RGB")
    ds, info, notes = _resolved(root, tmp_path, split_fractions=(0.6, 0.2, 0.2))
    assert (ds.image_size, ds.channels, info.image_shape) == (48, 3, (48, 48, 3))  # median 44
    assert (
        "image_size: auto -> 48 (sizes vary (height 36-120, width 36-90): the median shorter "
        "side 44 rounded to a multiple of 8 in [32, 224])" in notes
    )
    assert "channels: auto -> 3 (15 of 15 images are in colour)" in notes
    fractions = (0.6, 0.2, 0.2)
    meta = folder.read_metadata(folder_cnn(root, tmp_path / "tfds", split_fractions=fractions))
    assert ds.mean == tuple(round(v, 4) for v in meta["splits"]["train"]["pixels"]["mean_rgb"])
    assert len(ds.std) == 3 and min(ds.std) > 0.05
    # Large images: the median shorter side is clamped to 224.
    stats = {"images": 2, "grayscale": 0, "height": {"min": 900, "max": 900}}
    stats |= {"width": {"min": 1200, "max": 1200}, "shorter_side": {"median": 900.0}}
    assert auto._auto_size(stats)[0] == 224


def test_auto_mixed_gray_and_rgb(tmp_path):
    root = make_tree(
        tmp_path / "mixed", {"train": 4, "val": 2}, mode=lambda i: "L" if i % 2 else "RGB"
    )
    resolved, info, notes = data.resolve_dataset(folder_cnn(root, tmp_path / "tfds"))
    ds = resolved.dataset
    assert (ds.channels, info.image_shape, ds.eval_split) == (3, (12, 12, 3), "val")
    assert "channels: auto -> 3 (9 of 18 images are in colour)" in notes
    mean, std = _pixels(root, "train", 3)
    np.testing.assert_allclose(ds.mean, mean, atol=1e-4)
    np.testing.assert_allclose(ds.std, std, atol=1e-4)
    # The grayscale images are decoded to 3 equal channels, the colour ones keep their colour.
    batch = next(iter(data.create_eval_iterator(resolved, info, "train")))
    images = batch["image"][batch["mask"]]
    gray = [(im[..., 0] == im[..., 1]).all() and (im[..., 1] == im[..., 2]).all() for im in images]
    assert sum(gray) == 6


def test_cnn_depth_follows_the_resolution():
    assert sizing.cnn_features(64, 64) == (16, 32, 64, 128)  # folder_cnn's features before 'auto'
    assert sizing.cnn_features(28, 28) == (16, 32, 64)  # 28 -> 14 -> 7 -> 4
    assert sizing.cnn_features(8, 8) == (16,)
    assert sizing.cnn_features(128, 96) == (16, 32, 64, 128, 256)  # 96 -> ... -> 3
    assert sizing.cnn_features(224, 224) == (16, 32, 64, 128, 256, 256)
    config = ml_collections.ConfigDict({"model": {"name": "cnn", "features": "(8, 8)"}})
    assert sizing.resolve_model(config, (28, 28, 1))[0].model.features == (8, 8)  # explicit


def test_empty_class_folder_is_reported(tmp_path, caplog):
    root = make_tree(tmp_path / "pets", {"train": 3, "test": 1})
    os.makedirs(os.path.join(root, "train", "dog"))
    os.makedirs(os.path.join(root, "test", "ant", "nested"))  # ant/ still has a file
    with caplog.at_level(logging.WARNING):
        _, info, _ = data.resolve_dataset(folder_cnn(root, tmp_path / "tfds"))
    assert info.class_names == CLASSES
    (warning,) = [r.getMessage() for r in caplog.records if "empty class folder" in r.getMessage()]
    assert "left out 1 empty class folder(s) (no files in them): train/dog/" in warning
    folder.clear_cache()
    with pytest.raises(ValueError, match="empty class folder.*train/dog/.*strict=False"):
        data.resolve_dataset(folder_cnn(root, tmp_path / "tfds", strict=True))


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """folder_cnn trained on a train/val folder of 12x12 grayscale images, with no other
    setting than the path (and a short schedule): (workdir, result, folder)."""
    tmp = tmp_path_factory.mktemp("auto_run")
    root = make_tree(tmp / "shapes", {"train": 16, "val": 4}, size=(12, 12), mode="L")
    config = folder_cnn(root, tmp / "tfds")
    config.num_train_steps = 24
    config.batch_size = 8
    config.eval_batch_size = 16
    config.final_report = False
    workdir = str(tmp / "run")
    result = imgcls.train_and_evaluate(config, workdir)
    return workdir, result, root


def test_auto_run_saves_resolved_values(auto_run):
    workdir, result, root = auto_run
    saved = json.load(open(os.path.join(workdir, "config.json")))
    ds = saved["dataset"]
    assert (ds["train_split"], ds["validation_split"], ds["eval_split"]) == ("train", "val", "val")
    assert (ds["image_size"], ds["channels"], ds["validation_fraction"]) == (0, 1, 0.0)
    assert len(ds["mean"]) == len(ds["std"]) == 1 and 0.2 < ds["mean"][0] < 0.8
    assert saved["model"]["features"] == [16, 32]  # 12 -> 6 -> 3
    assert json.load(open(os.path.join(workdir, "dataset_info.json")))["image_shape"] == [12, 12, 1]
    assert result["eval_accuracy"] > 0.5  # chance 1/3: the classes differ in brightness


def test_predict_export_serve_on_an_auto_run(auto_run, tmp_path):
    from fastapi.testclient import TestClient

    from imgcls.inference import serve

    workdir, result, root = auto_run
    predictor = predict.Predictor(workdir, batch_size=4)
    assert predictor.image_shape == (12, 12, 1)
    files = [
        os.path.join(root, "val", name, file)
        for name in CLASSES
        for file in sorted(os.listdir(os.path.join(root, "val", name)))
    ]
    images = np.stack([predictor.preprocess(open(f, "rb").read()) for f in files])
    probabilities = predictor.predict_images(images)
    labels = np.repeat(np.arange(len(CLASSES)), 4)
    accuracy = float((probabilities.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(result["eval_accuracy"], abs=1e-6)  # as validation saw them

    export.export_model(workdir, str(tmp_path / "export"))
    exported, model_info = export.load_jax_export(str(tmp_path / "export"))
    saved = json.load(open(os.path.join(workdir, "config.json")))["dataset"]
    assert model_info["image_shape"] == [12, 12, 1] and model_info["image_size"] == 0
    assert (model_info["mean"], model_info["std"]) == (saved["mean"], saved["std"])
    np.testing.assert_allclose(np.asarray(exported(images)), probabilities, atol=1e-5)

    buffer = io.BytesIO()  # another size, in colour
    Image.open(files[0]).convert("RGB").resize((30, 20)).save(buffer, format="PNG")
    upload = {"file": ("x.png", buffer.getvalue(), "image/png")}
    with TestClient(serve.create_app(predictor, top_k=2)) as client:
        response = client.post("/predict", files=upload)
    assert response.status_code == 200, response.text
    expected = predictor.predict_images(predictor.preprocess(buffer.getvalue())[None])[0]
    assert response.json()["predictions"][0]["class"] == CLASSES[int(expected.argmax())]


def test_inspect_prints_what_auto_chose(auto_run, tmp_path):
    _, _, root = auto_run
    config = folder_cnn(root, tmp_path / "tfds")
    summary = inspection.inspect_dataset(config, str(tmp_path / "inspect"))
    text = inspection.format_summary(summary)
    assert "splits: train = train (48), validation = val (12), test = val (12)" in text
    assert "image_size: auto -> 0 (the native size: all 60 images are 12x12)" in text
    assert "channels: auto -> 1 (all 60 images are grayscale)" in text
    assert "model.features: auto -> (16, 32)" in text
    assert "no test split" in text
    markdown = open(os.path.join(summary["inspect_dir"], "inspect.md")).read()
    assert "## Settings resolved from the data" in markdown and "mean/std: auto ->" in markdown
    _, _, notes = resolve.resolve_run(config)
    assert notes == summary["resolved"]


def test_auto_on_a_source_without_statistics():
    """A TFDS dataset records no statistics: a fixed image shape still resolves size and
    channels; mean/std need values, and the error names the flags."""
    config = load_config("default")
    with config.dataset.ignore_type():
        for key in auto.AUTO_KEYS:
            config.dataset[key] = "auto"
    with pytest.raises(ValueError) as error:
        auto.resolve_images(config.copy_and_resolve_references(), None, (8, 8, 1), "digits")
    assert "config.dataset.mean='auto' needs statistics" in str(error.value)
    assert "--config.dataset.mean='(0.5,)' and --config.dataset.std='(0.5,)'" in str(error.value)
    with config.dataset.ignore_type():
        config.dataset.mean, config.dataset.std = "(0.5,)", "0.25"  # as a --config flag gives them
    resolved, notes = auto.resolve_images(config, None, (8, 8, 1), "digits")
    ds = resolved.dataset
    assert (ds.image_size, ds.channels, ds.mean, ds.std) == (0, 1, (0.5,), (0.25,))
    assert notes == [
        "image_size: auto -> 0 (the native size 8x8 of 'digits')",
        "channels: auto -> 1 (the images of 'digits' have 1)",
    ]


def test_stratified_order_spreads_every_class():
    from imgcls.data.sources import folder_scan

    sizes = {0: 20, 1: 7, 2: 3}
    entries = [(f"c{c}/{i}.png", c, 1, 1) for c, n in sizes.items() for i in range(n)]
    order = folder_scan.stratified_order(list(reversed(entries)))
    assert sorted(order) == sorted(entries)
    assert order == folder_scan.stratified_order(entries)  # a function of the files alone
    labels = np.array([e[1] for e in order])
    for m in range(1, len(order) + 1):  # every tail holds each class in proportion, within 1
        tail = np.bincount(labels[-m:], minlength=3)
        expected = m * np.array(list(sizes.values())) / len(order)
        assert np.abs(tail - expected).max() < 1.0 + 1e-9, (m, tail, expected)


def test_overrides_of_auto_keys_pass_the_config_check():
    """--config.dataset.image_size=64 on folder_cnn arrives as the text '64' (the key is 'auto'
    there): the check reads it as the value it spells, and refuses text that spells none."""
    from imgcls.config import check as config_check

    config = folder_cnn("/data", "")
    with config.dataset.ignore_type():
        config.dataset.image_size, config.dataset.mean = "64", "(0.5, 0.5, 0.5)"
        config.dataset.validation_fraction = "0.2"
    assert config_check.problems(config) == []
    with config.dataset.ignore_type():
        config.dataset.image_size, config.dataset.validation_fraction = "big", "1.5"
    assert config_check.problems(config) == [
        "config.dataset.image_size='big' must be an integer >= 0 (or 'auto').",
        "config.dataset.validation_fraction='1.5' must be in [0, 1) (or 'auto').",
    ]
