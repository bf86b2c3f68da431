"""Tests of image folders labelled by a CSV/TSV file (imgcls.data.sources.folder_labels) and of
submission files from --mode=predict (imgcls.inference.submission), on generated trees."""

import csv
import json
import logging
import os

import numpy as np
import pytest
from conftest import folder_config
from PIL import Image

import imgcls
from imgcls.data.sources import folder, folder_labels
from imgcls.inference import predict

COLOURS = ("red", "green", "blue")


@pytest.fixture(autouse=True)
def _fresh_scan():
    folder.clear_cache()
    yield
    folder.clear_cache()


def _image(path, colour, rng, size=(12, 12)):
    """A small noisy image whose dominant channel is the colour's."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = rng.integers(0, 100, (*size, 3))
    pixels[..., COLOURS.index(colour)] += 150
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _write_table(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def make_competition_folder(root, per_class=8, test=6, seed=0):
    """P/train/<id>.png + P/labels.csv (id without extension, breed, a metadata column),
    P/test/<id>.png unlabelled, and a P/sample_submission.csv with one column per class (in
    another order than the sorted class names)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(per_class * len(COLOURS)):
        colour = COLOURS[i % len(COLOURS)]
        ident = f"{1000 + i}"
        _image(os.path.join(root, "train", f"{ident}.png"), colour, rng)
        rows.append([ident, colour, f"{i % 2}"])
    _write_table(os.path.join(root, "labels.csv"), ["id", "breed", "photographer"], rows)
    test_ids = []
    for i in range(test):
        ident = f"t{i:03d}"
        _image(os.path.join(root, "test", f"{ident}.png"), COLOURS[i % 3], rng)
        test_ids.append(ident)
    submission = [[ident, 0.3, 0.3, 0.4] for ident in reversed(test_ids)]
    _write_table(
        os.path.join(root, "sample_submission.csv"), ["id", "green", "red", "blue"], submission
    )
    return str(root), rows, list(reversed(test_ids))


def test_the_issue_folder_trains_its_labels_not_its_folders(tmp_path):
    """Issue 25: P/train/<id>.png, P/test/<id>.png and P/labels.csv used to train train-vs-test."""
    root, rows, _ = make_competition_folder(tmp_path / "pets")
    config = folder_config(root, tmp_path / "tfds")
    metadata = folder.read_metadata(config)
    assert metadata["layout"] == "labels" and metadata["class_names"] == ["blue", "green", "red"]
    labels = metadata["labels"]
    assert (labels["image_column"], labels["label_column"], labels["base"]) == (
        "id",
        "breed",
        "train",
    )
    assert labels["used"] == len(rows) and labels["left_out"] == {}
    assert sum(s["examples"] for s in metadata["splits"].values()) == len(rows)
    line = folder_labels.describe(labels, root)
    assert line.startswith(
        f"labels: {root}/labels.csv, image = id (+ extension) under {root}/train"
    )
    assert "label = breed (3 classes)" in line and "24 rows" in line
    # The resolved config names the file and the columns (W/config.json, eval, resume).
    resolved, _, notes = imgcls.data.resolve_dataset(config)
    assert resolved.dataset.labels == os.path.join(root, "labels.csv")
    assert (resolved.dataset.image_column, resolved.dataset.label_column) == ("id", "breed")
    assert notes[0] == line


def test_file_names_with_extensions_in_sub_folders_and_integer_labels(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "set"
    rows = []
    for i in range(18):
        label = (2, 10, 1)[i % 3]
        name = f"{'ab'[i % 2]}/{i}.png"
        _image(str(root / "images" / name), COLOURS[i % 3], rng)
        rows.append([f"images/{name}", label])
    _write_table(root / "train.csv", ["filename", "label"], rows)
    metadata = folder.read_metadata(folder_config(root, tmp_path / "tfds"))
    assert metadata["class_names"] == ["1", "2", "10"]  # integers in numeric order
    assert metadata["labels"]["base"] == "" and metadata["labels"]["extension_added"] is False
    counts = {s: v["examples"] for s, v in metadata["splits"].items()}
    assert sum(counts.values()) == 18 and set(counts) <= {"train", "validation", "test"}


def test_a_split_column_gives_the_splits_and_a_tsv_reads_as_well(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "tsv"
    rows = []
    for i in range(15):
        _image(str(root / f"{i}.jpg"), COLOURS[i % 3], rng)
        rows.append([f"{i}.jpg", COLOURS[i % 3], ("train", "train", "val", "test", "train")[i % 5]])
    _write_table(root / "meta.tsv", ["file", "colour", "subset"], rows, delimiter="\t")
    config = folder_config(root, tmp_path / "tfds")
    with config.dataset.ignore_type():
        for key in ("train_split", "validation_split", "eval_split", "validation_fraction"):
            config.dataset[key] = "auto"
    metadata = folder.read_metadata(config)
    assert metadata["labels"]["split_column"] == "subset"
    assert {s: v["examples"] for s, v in metadata["splits"].items()} == {
        "train": 9,
        "val": 3,
        "test": 3,
    }
    resolved, info, _ = imgcls.data.resolve_dataset(config)
    assert (resolved.dataset.train_split, resolved.dataset.validation_split) == ("train", "val")
    assert info.split_sizes["test"] == 3


def test_a_file_without_a_header_row(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "plain"
    rows = []
    for i in range(12):
        _image(str(root / "img" / f"x{i}.png"), COLOURS[i % 3], rng)
        rows.append([f"x{i}.png", COLOURS[i % 3]])
    _write_table(root / "labels.csv", None, rows)
    labels = folder.read_metadata(folder_config(root, tmp_path / "tfds"))["labels"]
    assert (labels["image_column"], labels["label_column"], labels["used"]) == ("1", "2", 12)


def test_column_detection_errors_and_explicit_choices(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "two"
    rows = []
    for i in range(12):
        _image(str(root / f"{i}.png"), COLOURS[i % 3], rng)
        rows.append([str(i), COLOURS[i % 3], ("a", "b")[i % 2]])
    _write_table(root / "labels.csv", ["image", "colour", "group"], rows)
    config = folder_config(root, tmp_path / "tfds")
    with pytest.raises(ValueError, match=r"colour \(3 values\), group \(2 values\).*label_column"):
        folder_labels.scan(config.dataset)
    config.dataset.label_column = "group"
    assert folder_labels.scan(config.dataset).class_names == ("a", "b")
    config.dataset.label_column = "size"
    with pytest.raises(ValueError, match="label_column=size: .* columns: image, colour, group"):
        folder_labels.scan(config.dataset)
    config.dataset.label_column = "2"  # a column number
    assert folder_labels.scan(config.dataset).class_names == tuple(sorted(COLOURS))

    _write_table(root / "other.csv", ["image", "colour"], [r[:2] for r in rows])
    config.dataset.label_column = "colour"  # both files have it
    with pytest.raises(
        ValueError, match=r"several labels files .*labels.csv, other.csv.*labels=FILE"
    ):
        folder_labels.scan(config.dataset)
    config.dataset.labels = "other.csv"  # relative to the folder
    assert folder_labels.scan(config.dataset).labels["file"] == str(root / "other.csv")
    config.dataset.labels = "missing.csv"
    with pytest.raises(ValueError, match=r"labels=missing.csv: no such file"):
        folder_labels.scan(config.dataset)

    config.dataset.labels = "other.csv"
    config.dataset.image_column = "colour"
    with pytest.raises(ValueError, match="image and the label column are both"):
        folder_labels.scan(config.dataset)
    _write_table(root / "other.csv", ["name", "colour"], [[f"z{i}", "red"] for i in range(9)])
    config.dataset.image_column = "auto"
    with pytest.raises(ValueError, match=r"No column .* names image files .*image_column=NAME"):
        folder_labels.scan(config.dataset)


def test_a_csv_that_names_no_image_leaves_class_folders_alone(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "classes"
    for i in range(12):
        _image(str(root / COLOURS[i % 3] / f"{i}.png"), COLOURS[i % 3], rng)
    _write_table(root / "notes.csv", ["who", "when"], [["me", "today"], ["you", "now"]])
    config = folder_config(root, tmp_path / "tfds")
    scan = folder_labels.scan(config.dataset)
    assert scan.layout == "class" and scan.class_names == tuple(sorted(COLOURS))
    # A column asked for, or a file that names the images but not clearly their labels, is an
    # error: not class folders trained silently instead.
    config.dataset.label_column = "when"
    with pytest.raises(ValueError, match="No column of the labels file .*notes.csv names image"):
        folder_labels.scan(config.dataset)
    config.dataset.label_column = "auto"
    rows = [[f"{COLOURS[i % 3]}/{i}.png", "x", "yz"[i % 2], "uvw"[i % 3]] for i in range(12)]
    _write_table(root / "notes.csv", ["path", "a", "b", "c"], rows)
    with pytest.raises(ValueError, match=r"which column .* b \(2 values\), c \(3 values\)"):
        folder_labels.scan(config.dataset)


def test_bad_rows_are_counted_and_named_or_refused_with_strict(tmp_path, caplog):
    root, rows, _ = make_competition_folder(tmp_path / "bad")
    rows = [list(r) for r in rows]
    rows[0][1] = ""  # an empty label
    rows.append(["9999", "red", "0"])  # its image is not there
    rows.append([rows[1][0], "blue" if rows[1][1] != "blue" else "red", "0"])  # two labels
    rows.append([rows[2][0], rows[2][1], "1"])  # a duplicate with the same label: kept once
    del rows[3]  # an image of train/ without a row
    rng = np.random.default_rng(6)
    _image(os.path.join(root, "train", "5000.png"), "red", rng)
    rows.append(["5000", "purple", "0"])  # a class with a single image
    _write_table(os.path.join(root, "labels.csv"), ["id", "breed", "photographer"], rows)
    config = folder_config(root, tmp_path / "tfds")
    with caplog.at_level(logging.WARNING):
        scan = folder_labels.scan(config.dataset)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    rows_warning = next(w for w in warnings if "Left out" in w)
    for part in (
        "1 rows whose image is not there (9999)",
        "1 rows with an empty label (line 2 (1000))",
        "1 images given different labels (train/1001.png",
        "1 images without a row (train/1003.png)",
    ):
        assert part in rows_warning, rows_warning
    assert any("single image (purple)" in w for w in warnings)
    assert scan.labels["used"] == 24 - 3 + 1
    assert scan.labels["left_out"]["images given different labels"] == 1
    config.dataset.strict = True
    with pytest.raises(ValueError, match=r"rows whose image is not there.*strict=True"):
        folder_labels.scan(config.dataset)


def test_an_edited_labels_file_prepares_the_folder_again(tmp_path):
    root, rows, _ = make_competition_folder(tmp_path / "edit")
    config = folder_config(root, tmp_path / "tfds")
    first = folder.read_metadata(config)
    folder.clear_cache()
    assert folder.read_metadata(config)["data_dir"] == first["data_dir"]  # unchanged: reused
    rows[0][1] = "green" if rows[0][1] != "green" else "red"
    _write_table(os.path.join(root, "labels.csv"), ["id", "breed", "photographer"], rows)
    folder.clear_cache()
    again = folder.read_metadata(config)
    assert again["data_dir"] != first["data_dir"] and again["fingerprint"] != first["fingerprint"]


def test_train_predict_and_a_submission_in_the_templates_shape(tmp_path):
    root, _, test_ids = make_competition_folder(tmp_path / "comp", per_class=10)
    config = folder_config(root, tmp_path / "tfds", validation_split="validation")
    config.num_train_steps = 6
    workdir = str(tmp_path / "w")
    imgcls.train_and_evaluate(config, workdir)
    saved = imgcls.run.workdir.load_config(workdir)
    assert saved.dataset.labels == os.path.join(root, "labels.csv")
    config.num_train_steps = 8  # a resume with the same 'auto' config resolves to the same file
    imgcls.train_and_evaluate(config, workdir)
    assert imgcls.run.workdir.read_metrics(workdir)[-1]["step"] == 8

    output = str(tmp_path / "out" / "submission.csv")
    template = os.path.join(root, "sample_submission.csv")
    result = predict.predict_paths(
        workdir, [os.path.join(root, "test")], output=output, submission=template
    )
    assert len(result["predictions"]) == len(test_ids)
    with open(output, newline="") as f:
        written = list(csv.reader(f))
    assert written[0] == ["id", "green", "red", "blue"]  # the template's header, its order
    assert [r[0] for r in written[1:]] == test_ids  # and its row order, not the files'
    for row in written[1:]:
        assert abs(sum(float(p) for p in row[1:]) - 1) < 1e-4
    # The probabilities are those predict gives each file, columns matched by class name.
    by_file = {os.path.basename(p["file"]): p["top_k"] for p in result["predictions"]}
    first = {t["class"]: t["probability"] for t in by_file[f"{test_ids[0]}.png"]}
    assert [float(p) for p in written[1][1:]] == pytest.approx(
        [first["green"], first["red"], first["blue"]], abs=1e-5
    )

    labels_template = str(tmp_path / "label_template.csv")
    _write_table(labels_template, ["image", "breed"], [[f"{i}.png", ""] for i in test_ids])
    predict.predict_paths(
        workdir, [os.path.join(root, "test")], output=output, submission=labels_template
    )
    with open(output, newline="") as f:
        written = list(csv.reader(f))
    assert written[0] == ["image", "breed"] and [r[0] for r in written[1:]] == [
        f"{i}.png" for i in test_ids
    ]
    assert {r[1] for r in written[1:]} <= set(COLOURS)

    wrong = str(tmp_path / "wrong.csv")
    _write_table(wrong, ["id", "red", "green", "cyan"], [[i, 0, 0, 1] for i in test_ids])
    with pytest.raises(
        ValueError, match=r"not known to the model: cyan\. not in the template: blue"
    ):
        predict.predict_paths(
            workdir, [os.path.join(root, "test")], output=output, submission=wrong
        )
    missing = str(tmp_path / "missing.csv")
    _write_table(missing, ["id", "label"], [["t999", ""], [test_ids[0], ""]])
    with pytest.raises(ValueError, match=r"1 name no predicted image \(t999\)"):
        predict.predict_paths(
            workdir, [os.path.join(root, "test")], output=output, submission=missing
        )
    with pytest.raises(ValueError, match=r"give --output=submission.csv"):
        predict.predict_paths(workdir, [os.path.join(root, "test")], submission=template)


def _tree(root, n=12, folder=lambda i: "", ext=".png"):
    """n images of the three colours under root/<folder(i)>/<i><ext>; their relative paths."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        path = os.path.join(folder(i), f"{i}{ext}") if folder(i) else f"{i}{ext}"
        _image(str(root / path), COLOURS[i % 3], rng)
        paths.append(path)
    return paths


def test_what_a_review_as_new_users_found(tmp_path):
    """Layouts and files as they come from notebooks, spreadsheets and competitions."""
    config = folder_config(tmp_path, tmp_path / "tfds")

    def scan(root, **dataset):
        folder.clear_cache()
        config.dataset.path = str(root)
        for key in ("labels", "image_column", "label_column"):
            config.dataset[key] = dataset.get(key, "auto")
        return folder_labels.scan(config.dataset)

    # An integer label next to a text metadata column: the label-like name wins, else an error.
    root = tmp_path / "a"
    paths = _tree(root / "images")
    rows = [[p, i % 3, "cam_" + "ab"[i % 2]] for i, p in enumerate(paths)]
    _write_table(root / "train.csv", ["image_id", "category_id", "source"], rows)
    assert scan(root).labels["label_column"] == "category_id"
    _write_table(root / "train.csv", ["id", "has_tumor", "sex"], rows)
    with pytest.raises(ValueError, match=r"has_tumor \(3 values\), sex \(2 values\)"):
        scan(root)

    # Class folders with a stray metadata CSV: not silently its column; a test.csv of ids only
    # is no labels file.
    root = tmp_path / "b"
    paths = _tree(root, folder=lambda i: COLOURS[i % 3])
    rows = [[p, "ann" if i < 6 else "bob"] for i, p in enumerate(paths)]
    _write_table(root / "metadata.csv", ["filename", "photographer"], rows)
    with pytest.raises(ValueError, match=r"class folders and the file metadata.csv.*labels=''"):
        scan(root)
    assert scan(root, labels="").layout == "class"
    assert scan(root, label_column="photographer").class_names == ("ann", "bob")
    os.remove(root / "metadata.csv")
    _write_table(root / "test.csv", ["id"], [[p] for p in paths])
    assert scan(root).layout == "class"

    # Images spread over sibling folders; ids in another case; absolute and notebook paths;
    # a semicolon-separated file with a pandas index column.
    root = tmp_path / "c"
    paths = _tree(root, n=18, folder=lambda i: f"part_{i % 2 + 1}", ext=".JPG")
    rows = [[i, os.path.basename(p).lower(), COLOURS[i % 3]] for i, p in enumerate(paths)]
    rows[0][1] = str(root / paths[0])
    rows[1][1] = "../input/c/" + paths[1]
    _write_table(root / "labels.csv", ["", "file", "label"], rows, delimiter=";")
    found = scan(root)
    assert found.labels["used"] == 18 and found.labels["left_out"] == {}
    assert found.labels["image_column"] == "file"

    # 40 classes of 2 images in a column named label; a fastai is_valid column.
    root = tmp_path / "d"
    rng = np.random.default_rng(8)
    rows = []
    for i in range(80):
        _image(str(root / f"{i}.png"), COLOURS[i % 3], rng)
        rows.append([f"{i}.png", f"class {i // 2}", "True" if i % 4 == 0 else "False"])
    _write_table(root / "labels.csv", ["fname", "label", "is_valid"], rows[:-1])
    found = scan(root)
    assert len(found.class_names) == 40 and found.labels["split_column"] == "is_valid"
    assert {s: len(f) for s, f in found.files.items()} == {"train": 59, "validation": 20}


def test_binary_templates_and_ids_spelled_otherwise():
    from imgcls.inference import submission

    template = submission.Template("t.csv", ["id", "dog"], ["./a.jpg", "B"])
    assert template.kind(("cat", "dog")) == "probabilities"
    assert template.class_order(("cat", "dog")) == [1]  # the probability of 'dog'
    assert submission.match_ids(template, ["x/b.JPG", "x/a.jpg"]) == [1, 0]
    label = submission.Template("t.csv", ["id", "label"], ["a"])
    assert label.kind(("cat", "dog")) == "label"


def test_resuming_a_run_written_before_the_labels_keys_existed(tmp_path):
    """Its W/config.json lacks dataset.labels & co: completed at 'auto', resolved to '' (class
    folders) now, which is what it trained on: not a change a resume refuses."""
    from imgcls.training import resume

    config = folder_config(tmp_path / "photos", tmp_path / "tfds")
    old = json.loads(config.to_json_best_effort())
    for key in ("labels", "image_column", "label_column"):
        del old["dataset"][key]
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(old))
    config.dataset.labels = ""  # as resolve_settings resolves class folders
    resume.check_resume(config, str(workdir), step=10)
    config.seed = 5
    with pytest.raises(ValueError, match=r"seed: 0 -> 5"):
        resume.check_resume(config, str(workdir), step=10)
