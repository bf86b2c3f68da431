"""--mode=predict: predictions on image files agree with evaluation; bad files are reported."""

import csv
import io
import json
import os

import numpy as np
import pytest
from conftest import run_python
from PIL import Image

import imgcls
from imgcls.data import images
from imgcls.data.sources import folder
from imgcls.evaluation import evaluate
from imgcls.inference import predict


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _split_files(config, split):
    """The relative path of every example of a folder split, in the order evaluation reads it."""
    from imgcls.data._tf import tfds

    builder = folder.prepared_builder(config)
    ds = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    return [ex["file"].decode() for ex in ds]


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_on_folder_files_equals_evaluation(tiny_folder_workdir):
    """Files of JPEG, PNG and BMP of several sizes: same probabilities as --mode=eval's logits."""
    workdir, config = tiny_folder_workdir
    result = evaluate.evaluate_checkpoint(workdir, "latest")
    saved = np.load(os.path.join(result["report_dir"], "predictions.npz"))
    files = _split_files(config, "test")
    assert len(files) == len(saved["index"]) > 10
    predictor = predict.Predictor(workdir, "latest", batch_size=5)  # 5: several padded batches
    paths = [os.path.join(config.dataset.path, files[i]) for i in saved["index"]]
    out = predict.predict_files(predictor, paths, top_k=3)
    assert not out["errors"] and [p["file"] for p in out["predictions"]] == paths
    expected = _softmax(saved["logits"])
    for row, probs in zip(out["predictions"], expected, strict=True):
        order = np.argsort(-probs, kind="stable")[:3]
        assert [t["class"] for t in row["top_k"]] == [predictor.class_names[i] for i in order]
        np.testing.assert_allclose(
            [t["probability"] for t in row["top_k"]], probs[order], atol=1e-5
        )
    names = list(predictor.class_names)
    top1 = np.array([names.index(r["top_k"][0]["class"]) for r in out["predictions"]])
    assert np.mean(top1 == saved["labels"]) == pytest.approx(result["accuracy"], abs=1e-6)
    assert result["accuracy"] > 0.6  # the colours are learnable (chance: 1/3)


@pytest.fixture(scope="module")
def digits_workdir(tmp_path_factory, digits_config_module):
    workdir = str(tmp_path_factory.mktemp("digits_run"))
    imgcls.train_and_evaluate(digits_config_module, workdir)
    return workdir


@pytest.fixture(scope="module")
def digits_config_module(data_dir):
    from conftest import load_config

    config = load_config("default")
    config.dataset.data_dir = data_dir
    config.num_train_steps = 60
    config.log_every_steps = 20
    config.final_report = False
    return config


def test_predict_cli_on_digits_matches_eval(digits_workdir, tmp_path):
    """main.py --mode=predict on PNGs of the digits test split: the console table, CSV and JSON
    outputs agree with --mode=eval's predictions; a bad and a missing file are reported."""
    result = evaluate.evaluate_checkpoint(digits_workdir, "latest")
    saved = np.load(os.path.join(result["report_dir"], "predictions.npz"))
    from imgcls.data._tf import tfds

    builder = tfds.builder(
        "digits", data_dir=json.load(open(f"{digits_workdir}/config.json"))["dataset"]["data_dir"]
    )
    images = [ex["image"] for ex in tfds.as_numpy(builder.as_dataset(split="test"))]
    photos = tmp_path / "photos"
    photos.mkdir()
    chosen = [int(i) for i in saved["index"][:12]]
    for i in chosen:
        (photos / f"{i:04d}.png").write_bytes(_png(images[i][..., 0]))
    (photos / "notes.txt").write_text("not an image")  # not an image extension: not listed
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out_csv, out_json = tmp_path / "preds.csv", tmp_path / "preds.json"
    args = ["main.py", "--mode=predict", f"--workdir={digits_workdir}", "--top_k=3"]
    proc = run_python([*args, f"--output={out_csv}", str(photos), str(tmp_path / "missing.png")])
    assert proc.returncode == 1, proc.stderr  # some files failed; the others are predicted
    assert "12 image(s) predicted, 2 error(s)" in proc.stdout
    assert "broken.jpg" in proc.stdout and "missing.png: no such file" in proc.stdout
    proc = run_python([*args, f"--output={out_json}", *sorted(map(str, photos.glob("0*.png")))])
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out_csv)))
    predicted = [r for r in rows if not r["error"]]
    assert {r["file"] for r in rows if r["error"]} == {
        str(photos / "broken.jpg"),
        str(tmp_path / "missing.png"),
    }
    from_json = json.load(open(out_json))
    # the default checkpoint is the best validated one: here the last, step 60
    assert from_json["step"] == 60 and from_json["checkpoint"] == "best"
    expected = _softmax(saved["logits"][:12])
    by_file = {os.path.basename(r["file"]): r for r in predicted}
    for i, probs in zip(chosen, expected, strict=True):
        row = by_file[f"{i:04d}.png"]
        assert row["class_1"] == str(int(np.argmax(probs)))  # digits' class names are '0'..'9'
        assert float(row["probability_1"]) == pytest.approx(probs.max(), abs=1e-5)
        js = next(p for p in from_json["predictions"] if p["file"].endswith(f"{i:04d}.png"))
        assert [t["class"] for t in js["top_k"]][0] == row["class_1"]
        assert js["top_k"][0]["probability"] == pytest.approx(probs.max(), abs=1e-6)


def test_predictor_resizes_other_sizes_and_reports_bad_images(digits_workdir):
    predictor = predict.Predictor(digits_workdir, batch_size=2)
    assert (predictor.checkpoint, predictor.step) == ("best", 60)
    big = np.zeros((40, 30), np.uint8)
    big[5:35, 12:18] = 255  # a "1", 5x the model's 8x8
    image = predictor.preprocess(_png(big))
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8 and image.max() > 100
    with pytest.raises(images.NotAnImage, match="not an image"):
        predictor.preprocess(b"hello, world")
    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(jpeg, format="JPEG")
    with pytest.raises(images.BrokenImage, match="truncated or corrupt"):
        predictor.preprocess(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")  # ~50 KB on disk, 400 Mpixels
    with pytest.raises(images.ImageTooLarge, match="decompression bomb"):
        predictor.preprocess(bomb.getvalue())
    with pytest.raises(ValueError, match=r"the model takes \(8, 8, 1\)"):
        predictor.predict_images(np.zeros((1, 16, 16, 1), np.uint8))
    probs = predictor.predict_images(np.stack([image] * 5))  # 3 calls of the batch of 2
    assert probs.shape == (5, 10) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs[0], probs[4])


def bad_checksum_png(array) -> bytes:
    """A PNG whose image data chunk has a wrong CRC: PIL reads it, TensorFlow does not."""
    data = bytearray(_png(array))
    start = data.index(b"IDAT")
    length = int.from_bytes(data[start - 4 : start], "big")
    data[start + 4 + length] ^= 0xFF
    return bytes(data)


def test_crop_limits_and_corrupt_checksums(tiny_folder_workdir):
    """The folder model center-crops: a 1 x 200,000 image (a few hundred bytes) would be resized
    to 18 x 3.6 million pixels first, so serve's pixel limit refuses it; predict (no limit)
    reads a PNG with a bad checksum as the intact file."""
    workdir, _ = tiny_folder_workdir
    predictor = predict.Predictor(workdir, batch_size=2)
    sliver = io.BytesIO()
    Image.new("RGB", (200_000, 1)).save(sliver, format="PNG")
    with pytest.raises(images.ImageTooLarge, match="crop it closer to a square"):
        predictor.preprocess(sliver.getvalue())  # max_pixels=MAX_PIXELS, as serve uses
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    intact = predictor.preprocess(_png(image), max_pixels=None)
    np.testing.assert_array_equal(
        predictor.preprocess(bad_checksum_png(image), max_pixels=None), intact
    )
    with pytest.raises(ValueError, match="at least 1 class"):
        predictor.top_k(predictor.predict_images(intact[None]), 0)


def test_default_batch_size():
    assert [predict.default_batch_size(n) for n in (0, 1, 2, 3, 9, 64, 65, 10_000)] == [
        1,
        1,
        2,
        4,
        16,
        64,
        64,
        64,
    ]


def test_find_images_and_output_errors(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for name in ("a/x.png", "a/y.JPG", "a/.z.png", "a/.hidden/w.png", "a/readme.md", "b.webp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a" / "linked").symlink_to(tmp_path / "c")  # followed, as the dataset code does
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "v.gif").write_bytes(b"")
    (tmp_path / "c" / "loop").symlink_to(tmp_path / "a")  # ... but a loop is walked once
    files, errors = predict.find_images(
        [str(tmp_path / "a"), str(tmp_path / "b.webp"), str(tmp_path / "empty")]
    )
    assert files == [
        str(tmp_path / "a/linked/v.gif"),
        str(tmp_path / "a/x.png"),
        str(tmp_path / "a/y.JPG"),
        str(tmp_path / "b.webp"),
    ]
    assert errors == [{"file": str(tmp_path / "empty"), "error": "folder holds no image files"}]
    with pytest.raises(ValueError, match=r"ending in \.csv or \.json"):
        predict.write_output({"predictions": [], "errors": []}, str(tmp_path / "out.txt"))


def test_predictor_needs_a_trained_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        predict.Predictor(str(tmp_path))


def test_predict_console_summary():
    result = {
        "checkpoint": "best",
        "step": 60,
        "predictions": [
            {"file": "a.png", "top_k": [{"class": "7", "probability": 0.9}]},
            {"file": "long_name.png", "top_k": [{"class": "1", "probability": 0.25}]},
        ],
        "errors": [{"file": "b.jpg", "error": "not an image"}],
    }
    assert predict.format_summary(result, "out.csv").splitlines() == [
        "file           top-1 (class probability)",
        "a.png          7 0.900",
        "long_name.png  1 0.250",
        "error: b.jpg: not an image",
        "Predictions: out.csv",
        "2 image(s) predicted, 1 error(s) (best checkpoint, step 60).",
    ]
    assert "Predictions:" not in predict.format_summary(result)


def test_predict_paths_checks_its_arguments_before_any_work(tmp_path):
    """No workdir is read (there is none) before these are refused."""
    with pytest.raises(ValueError, match="--top_k=0: give at least 1"):
        predict.predict_paths(str(tmp_path), ["a.png"], top_k=0)
    with pytest.raises(ValueError, match="needs image files or folders"):
        predict.predict_paths(str(tmp_path), [])
    with pytest.raises(ValueError, match=r"ending in \.csv or \.json"):
        predict.predict_paths(str(tmp_path), ["a.png"], output="out.txt")


def test_large_images_are_shrunk_first_and_give_nearly_the_same_pixels(digits_workdir):
    """A photo many times the model's size is shrunk by PIL before TensorFlow's resize (a JPEG
    decodes at 1/8 of its size): the preprocessed pixels stay within a few levels of resizing
    the whole image, as evaluation does."""
    predictor = predict.Predictor(digits_workdir, batch_size=2)
    y, x = np.mgrid[0:600, 0:800]
    smooth = ((x + 2 * y) * 255 / 2000).astype(np.uint8)
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(smooth).save(buffer, format=fmt)
        data = buffer.getvalue()
        stored, height, width, reencoded = images.read_image(
            data, 1, None, predictor.min_decoded_size
        )
        assert (height, width) == (600, 800) and reencoded
        with Image.open(io.BytesIO(stored)) as small:
            assert 16 <= min(small.size) <= 75, small.size  # (8x8 model: kept >= 16 x 16)
        shrunk = predictor.preprocess(data, max_pixels=None)
        whole = predictor._preprocess(data).numpy()  # TF's antialiased resize of it all
        assert np.abs(shrunk.astype(int) - whole.astype(int)).max() <= 4, fmt


def test_decoding_more_pixels_than_allowed_is_refused_before_decoding(digits_workdir):
    predictor = predict.Predictor(digits_workdir, batch_size=2)
    big = io.BytesIO()
    Image.new("L", (3000, 2000)).save(big, format="PNG")
    with pytest.raises(images.ImageTooLarge, match="6,000,000 pixels in memory"):
        predictor.preprocess(big.getvalue(), max_decoded_pixels=5_000_000)
    photo = io.BytesIO()  # the same as a JPEG decodes at 1/8: allowed
    Image.new("L", (3000, 2000)).save(photo, format="JPEG")
    assert predictor.preprocess(photo.getvalue(), max_decoded_pixels=5_000_000).shape == (8, 8, 1)
