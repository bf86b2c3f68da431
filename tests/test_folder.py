"""Tests of imgcls.data.sources.folder: a folder of images as a dataset (dataset.name='folder').

Small image trees are generated with PIL in tmp_path (both layouts, many formats, unreadable
files). When ../shared/data holds the real CIFAR-10 (JPEG) and flowers archives, they are
prepared and trained on too; those tests skip with a reason otherwise.
"""

import io
import logging
import os
import pathlib
import shutil
import subprocess
import tarfile
import threading
import time

import numpy as np
import pytest
from conftest import folder_config
from PIL import Image, ImageOps

import imgcls
import imgcls.data as data
from imgcls.data import images
from imgcls.data.sources import catalog, folder, folder_scan
from imgcls.data.sources import registry as sources

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.gz"
FLOWERS_ARCHIVE = SHARED_DATA / "flowers5.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
CIFAR_CLASSES += ("dog", "frog", "horse", "ship", "truck")
LOSSLESS_ATOL = 1  # TF's RGB -> gray conversion of PNGs differs from PIL's by up to 1
JPEG_ATOL = 12  # TF's and PIL's JPEG decoders round differently


@pytest.fixture(autouse=True)
def _fresh_scan():
    """Every test scans its folders anew (prepared_builder remembers them per process)."""
    folder.clear_cache()
    yield
    folder.clear_cache()


def _pixels(rng, height, width, channels=3):
    """A smooth random image (so JPEG keeps it close): a gradient plus a colour offset."""
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 200 // max(width - 1, 1) + y * 50 // max(height - 1, 1))[..., None]
    offset = rng.integers(0, 60, (1, 1, channels))
    return np.clip(base + offset, 0, 255).astype(np.uint8)


def _save(path, image, fmt, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **kwargs)


def _expected(image, channels):
    """What a stored image must decode to: PIL's conversion to L or RGB, [H, W, C]."""
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array[..., None] if channels == 1 else array


class Tree:
    """A generated folder: what each readable file must decode to, and the unreadable ones."""

    def __init__(self, root):
        self.root = root
        self.expected = {}  # relative path -> (PIL image as the reader must see it, atol)
        self.unreadable = []  # relative paths
        self.reencoded = set()  # relative paths of files not stored as they are

    def add(self, rel, image, fmt, atol=LOSSLESS_ATOL, reencoded=False, seen=None, **kwargs):
        _save(self.root / rel, image, fmt, **kwargs)
        if seen is None:  # the image as PIL reads it back (palette, 16-bit, CMYK, ...)
            seen = Image.open(self.root / rel)
            seen.load()
        self.expected[rel] = (seen, atol)
        if reencoded:
            self.reencoded.add(rel)

    def add_unreadable(self, rel, content):
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_bytes(content)
        self.unreadable.append(rel)

    def label_of(self, rel, class_names):
        parts = rel.split("/")
        return class_names.index(parts[1] if parts[0] in ("train", "test") else parts[0])


def _jpeg_bytes(array, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def make_split_tree(root, seed=0):
    """root/{train,test}/<class>/ with every supported kind of file, and two unreadable ones."""
    rng = np.random.default_rng(seed)
    tree = Tree(root)
    rgb = lambda h, w: Image.fromarray(_pixels(rng, h, w))  # noqa: E731
    tree.add("train/cat/c1.jpg", rgb(24, 17), "JPEG", atol=JPEG_ATOL, quality=90)
    rgba = np.dstack([_pixels(rng, 13, 29), rng.integers(0, 256, (13, 29), np.uint8)])
    tree.add("train/cat/c2.png", Image.fromarray(rgba), "PNG")
    tree.add("train/cat/c3.bmp", rgb(9, 31), "BMP", reencoded=True)
    tree.add("train/cat/c4.gif", rgb(20, 20).convert("P"), "GIF", reencoded=True)
    tree.add("train/cat/more/nested.png", rgb(11, 12).convert("L"), "PNG")  # nested: still cat
    noise = rng.integers(0, 256, (64, 64, 3), np.uint8)
    tree.add_unreadable("train/cat/broken.jpg", _jpeg_bytes(noise)[:1500])  # truncated
    gray = Image.fromarray(_pixels(rng, 30, 8, 1)[..., 0])
    tree.add("train/dog/d1.jpg", gray, "JPEG", atol=JPEG_ATOL, quality=90)
    tree.add("train/dog/d2.webp", rgb(15, 18), "WEBP", reencoded=True, lossless=True)
    small = _pixels(rng, 7, 33, 1)[..., 0]
    wide = Image.fromarray(small.astype(np.uint16) * 257)  # 16-bit grayscale TIFF
    tree.add("train/dog/d3.tif", wide, "TIFF", reencoded=True, seen=Image.fromarray(small))
    palette = rgb(16, 10).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    tree.add("train/dog/d4.png", palette, "PNG", transparency=0)  # palette with transparency
    deep = (_pixels(rng, 12, 14, 1)[..., 0].astype(np.uint16) * 257 + 100).astype(np.uint16)
    tree.add(
        "train/dog/d5.png",
        Image.fromarray(deep),
        "PNG",
        seen=Image.fromarray((deep / 257).round().astype(np.uint8)),
    )  # 16-bit PNG
    tree.add_unreadable("train/dog/notes.txt", b"not an image\n")
    cmyk = rgb(10, 14).convert("CMYK")
    tree.add("train/fox/f1.jpg", cmyk, "JPEG", reencoded=True, quality=95)
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6  # stored 20 wide x 10 high, shown rotated: 10 x 20
    rotated = rgb(10, 20)
    _save(root / "train/fox/f2.jpg", rotated, "JPEG", quality=95, exif=exif.tobytes())
    shown = ImageOps.exif_transpose(Image.open(root / "train/fox/f2.jpg"))
    assert shown.size == (10, 20)
    tree.expected["train/fox/f2.jpg"] = (shown, LOSSLESS_ATOL)
    tree.reencoded.add("train/fox/f2.jpg")
    tree.add("test/cat/t1.png", rgb(8, 8), "PNG")
    tree.add("test/dog/t2.jpg", rgb(40, 36), "JPEG", atol=JPEG_ATOL, quality=90)
    # Ignored: hidden files and folders, and non-image files directly in the root.
    _save(root / "train/cat/.hidden.png", rgb(5, 5), "PNG")
    _save(root / ".git/objects/x.png", rgb(5, 5), "PNG")
    (root / "README.md").write_text("my pets\n")
    return tree


def make_class_tree(root, per_class=(20, 16, 18), seed=1):
    """root/<class>/*.png (3 classes, no split folders), plus a JPEG per class."""
    rng = np.random.default_rng(seed)
    tree = Tree(root)
    for c, (name, count) in enumerate(zip(("ant", "bee", "wasp"), per_class, strict=True)):
        for i in range(count):
            size = (int(rng.integers(6, 20)), int(rng.integers(6, 20)))
            image = Image.fromarray(_pixels(rng, *size) // 3 + 80 * c)
            tree.add(f"{name}/{name}{i:03d}.png", image, "PNG")
        tree.add(f"{name}/photo.jpg", Image.fromarray(_pixels(rng, 20, 20)), "JPEG", atol=JPEG_ATOL)
    return tree


def read_examples(builder, split, channels=3):
    """{relative path: (image, label)} of a prepared split, in the stored order, the images
    decoded to `channels` as FolderSource decodes them."""
    from imgcls.data import preprocess
    from imgcls.data._tf import tfds

    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: {**ex, "image": preprocess.decode(ex["image"], channels)})
    return {ex["file"].decode(): (ex["image"], int(ex["label"])) for ex in tfds.as_numpy(ds)}


def check_examples(tree, builder, class_names, channels, splits):
    seen = {}
    for split in splits:
        seen.update(read_examples(builder, split, channels))
    assert sorted(seen) == sorted(tree.expected)
    for rel, (image, label) in seen.items():
        expected, atol = tree.expected[rel]
        want = _expected(expected, channels)
        assert image.shape == want.shape, rel
        diff = np.abs(image.astype(int) - want.astype(int))
        assert diff.max() <= atol, (rel, diff.max())
        assert diff.mean() <= 2.0, (rel, diff.mean())
        assert label == tree.label_of(rel, class_names), rel


@pytest.mark.parametrize("channels", [3, 1])
def test_split_layout_mixed_formats(tmp_path, caplog, channels):
    tree = make_split_tree(tmp_path / "pets")
    config = folder_config(tree.root, tmp_path / "tfds", channels=channels)
    with caplog.at_level(logging.WARNING):
        info = data.get_dataset_info(config)
    assert info.class_names == ("cat", "dog", "fox")  # 'fox' only in train: same ids in test
    assert info.split_sizes == {"train": 12, "test": 2}
    assert info.image_shape == (16, 16, channels)

    builder = folder.prepared_builder(config)
    check_examples(tree, builder, info.class_names, channels, ("train", "test"))

    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "Skipped 2 unreadable" in warnings[0]
    assert "train/cat/broken.jpg" in warnings[0] and "train/dog/notes.txt" in warnings[0]

    meta = folder.read_metadata(config)
    assert meta["layout"] == "split" and meta["source"] == str(tree.root)
    assert meta["num_skipped"] == 2
    assert sorted(s["file"] for s in meta["skipped"]) == sorted(tree.unreadable)
    assert meta["splits"]["train"]["examples"] == 12
    assert meta["splits"]["train"]["class_counts"] == [5, 5, 2]
    assert meta["splits"]["test"]["class_counts"] == [1, 1, 0]
    reencoded = sum(s["reencoded"] for s in meta["splits"].values())
    assert reencoded == len(tree.reencoded)
    heights = [img.size[1] for img, _ in tree.expected.values()]
    widths = [img.size[0] for img, _ in tree.expected.values()]
    assert meta["image_size"]["height"] == {
        "min": min(heights),
        "median": float(np.median(heights)),
        "max": max(heights),
    }
    assert meta["image_size"]["width"]["max"] == max(widths)


def test_strict_fails_listing_unreadable_files(tmp_path):
    tree = make_split_tree(tmp_path / "pets")
    data_dir = tmp_path / "tfds"
    config = folder_config(tree.root, data_dir, strict=True)
    with pytest.raises(ValueError, match="strict") as error:
        folder.prepared_builder(config)
    for rel in tree.unreadable:
        assert rel in str(error.value)
    assert not list(data_dir.glob("*/*/*/dataset_info.json"))  # nothing was kept
    # Prepared leniently, the same folder still fails for a strict run.
    folder.prepared_builder(folder_config(tree.root, data_dir))
    folder.clear_cache()
    with pytest.raises(ValueError, match="broken.jpg"):
        data.get_dataset_info(config)


def test_class_layout_split_is_stable_when_files_are_added(tmp_path):
    tree = make_class_tree(tmp_path / "insects")
    fractions = (0.6, 0.2, 0.2)
    config = folder_config(tree.root, tmp_path / "tfds", split_fractions=fractions)
    info = data.get_dataset_info(config)
    assert info.class_names == ("ant", "bee", "wasp")
    builder = folder.prepared_builder(config)
    check_examples(tree, builder, info.class_names, 3, folder_scan.AUTO_SPLITS)
    before = {}
    for split in folder_scan.AUTO_SPLITS:
        for rel in read_examples(builder, split):
            before[rel] = split
    assert before == {rel: folder_scan.assign_split(rel, fractions) for rel in tree.expected}
    assert sum(info.split_sizes[s] for s in folder_scan.AUTO_SPLITS) == len(tree.expected) == 57
    assert set(before.values()) == set(folder_scan.AUTO_SPLITS)

    new = "bee/late_arrival.png"
    Image.fromarray(_pixels(np.random.default_rng(5), 9, 9)).save(tree.root / new)
    folder.clear_cache()
    info2 = data.get_dataset_info(config)
    builder2 = folder.prepared_builder(config)
    assert builder2.data_dir != builder.data_dir  # a new version of the folder was prepared
    after = {}
    for split in folder_scan.AUTO_SPLITS:
        for rel in read_examples(builder2, split):
            after[rel] = split
    assert after == {**before, new: folder_scan.assign_split(new, fractions)}
    assert sum(info2.split_sizes[s] for s in folder_scan.AUTO_SPLITS) == 58


def test_assign_split_proportions_and_empty_splits():
    paths = [f"class{i % 7}/img_{i}.jpg" for i in range(20000)]
    splits = [folder_scan.assign_split(p, (0.7, 0.1, 0.2)) for p in paths]
    for name, fraction in zip(folder_scan.AUTO_SPLITS, (0.7, 0.1, 0.2), strict=True):
        assert abs(splits.count(name) / len(paths) - fraction) < 0.015
    for c in range(7):  # roughly stratified: every class is split in about the same proportions
        train = [s for p, s in zip(paths, splits, strict=True) if p.startswith(f"class{c}/")]
        assert abs(train.count("train") / len(train) - 0.7) < 0.04
    assert {folder_scan.assign_split(p, (0.5, 0.0, 0.5)) for p in paths} == {"train", "test"}
    assert {folder_scan.assign_split(p, (1.0, 0.0, 0.0)) for p in paths} == {"train"}


def test_class_layout_omits_empty_splits(tmp_path):
    tree = make_class_tree(tmp_path / "insects", per_class=(6, 6, 6))
    config = folder_config(tree.root, tmp_path / "tfds", split_fractions=(0.75, 0.0, 0.25))
    info = data.get_dataset_info(config)
    assert set(info.split_sizes) == {"train", "test"}
    assert info.split_sizes["train"] + info.split_sizes["test"] == 21


def test_file_names_that_are_not_utf8(tmp_path):
    """Linux file names are bytes: names that are not UTF-8 are stored with escapes."""
    root = tmp_path / "pets"
    for name in ("cat", "dog"):
        _write(root / "train" / name / "a.png")
        _write(root / "test" / name / "a.png")
    raw = os.fsencode(root / "train" / "dog") + b"/caf\xe9.png"
    with open(raw, "wb") as f:
        f.write((root / "train/dog/a.png").read_bytes())
    bad_class = os.fsencode(root / "train") + b"/\xffowl"
    os.mkdir(bad_class)
    with open(bad_class + b"/b.png", "wb") as f:
        f.write((root / "train/dog/a.png").read_bytes())
    config = folder_config(root, tmp_path / "tfds")
    info = data.get_dataset_info(config)
    assert info.class_names == ("\\xffowl", "cat", "dog")
    files = read_examples(folder.prepared_builder(config), "train")
    assert sorted(files) == [
        "train/\\xffowl/b.png",
        "train/cat/a.png",
        "train/dog/a.png",
        "train/dog/caf\\xe9.png",
    ]


def test_unchanged_folder_is_not_prepared_again(tmp_path, monkeypatch):
    tree = make_class_tree(tmp_path / "insects")
    data_dir = tmp_path / "tfds"
    config = folder_config(tree.root, data_dir)
    data.get_dataset_info(config)
    (info_file,) = data_dir.glob("imgcls_image_folder/*/1.0.0/dataset_info.json")
    mtime = info_file.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("prepared again")

    folder.clear_cache()
    with monkeypatch.context() as patch:
        patch.setattr(folder.ImageFolder, "_split_generators", fail)
        info = data.get_dataset_info(config)
    assert sum(info.split_sizes[s] for s in folder_scan.AUTO_SPLITS) == 57
    assert list(data_dir.glob("imgcls_image_folder/*/1.0.0/dataset_info.json")) == [info_file]
    assert info_file.stat().st_mtime_ns == mtime
    assert len(list(data_dir.glob("imgcls_image_folder/*"))) == 1

    # Another channel count reads the same prepared dataset; a modified file (new mtime) is
    # another prepared dataset.
    data.get_dataset_info(folder_config(tree.root, data_dir, channels=1))
    assert len(list(data_dir.glob("imgcls_image_folder/*"))) == 1
    rel = next(iter(tree.expected))
    stat = (tree.root / rel).stat()
    os.utime(tree.root / rel, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    folder.clear_cache()
    data.get_dataset_info(config)
    assert len(list(data_dir.glob("imgcls_image_folder/*"))) == 2


def test_concurrent_preparation_is_safe(tmp_path, monkeypatch):
    """Two preparations of one folder in parallel: the loser of the race reads the winner's."""
    tree = make_class_tree(tmp_path / "insects", per_class=(5, 5, 5))
    data_dir = str(tmp_path / "tfds")
    scan = folder_scan.scan_folder(tree.root)
    barrier = threading.Barrier(2, timeout=60)
    original = folder.ImageFolder._split_generators

    def both_at_once(self, dl_manager):
        barrier.wait()  # both have found the dataset unprepared and start writing it
        return original(self, dl_manager)

    monkeypatch.setattr(folder.ImageFolder, "_split_generators", both_at_once)
    results, errors, made = [], [], []

    def make():
        made.append(1)
        return folder.ImageFolder(scan=scan, data_dir=data_dir)

    def prepare():
        try:
            results.append(catalog.prepare_builder(make))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(made) == 3  # the loser's rename failed; it made a builder of the winner's data
    assert len(results) == 2 and all(b.is_prepared() for b in results)
    assert results[0].data_dir == results[1].data_dir
    assert results[0].info.splits["train"].num_examples == len(scan.files["train"])
    assert len(list(pathlib.Path(data_dir).glob("imgcls_image_folder/*/*"))) == 1


def _write(path, image="png"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format=image.upper())


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "is empty"),
        (lambda root: _write(root / "a.png"), "images directly in it"),
        (lambda root: (_write(root / "cat/a.png"), _write(root / "dog/.b.png")), "only the class"),
        (lambda root: (_write(root / "x/cat/a.png"), _write(root / "x/dog/a.png")), None),
    ],
)
def test_layout_errors(tmp_path, setup, match):
    root = tmp_path / "images"
    setup(root)
    if match is None:  # root/<split>/<class>: a single split folder is fine
        scan = folder_scan.scan_folder(root)
        assert (scan.layout, scan.class_names, list(scan.files)) == ("split", ("cat", "dog"), ["x"])
        return
    with pytest.raises(ValueError, match=match) as error:
        folder_scan.scan_folder(root)
    assert str(root) in str(error.value) and "root/<class>" in str(error.value)


def test_config_errors(tmp_path):
    tree = make_class_tree(tmp_path / "insects", per_class=(3, 3, 3))
    for fractions in [(0.8, 0.1), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)]:
        with pytest.raises(ValueError, match="split_fractions"):
            folder.prepared_builder(folder_config(tree.root, tmp_path, split_fractions=fractions))
    with pytest.raises(ValueError, match="channels"):
        folder.prepared_builder(folder_config(tree.root, tmp_path, channels=2))
    with pytest.raises(ValueError, match="config.dataset.path is empty"):
        folder.prepared_builder(folder_config("", tmp_path))
    with pytest.raises(ValueError, match="--config.dataset.image_size=64"):
        data.get_dataset_info(folder_config(tree.root, tmp_path / "tfds", image_size=0))
    with pytest.raises(ValueError, match="'folder'"):
        sources.get_source(folder_config(tree.root, tmp_path, name="no_such_dataset_xyz"))


def test_split_with_no_readable_image_is_an_error(tmp_path):
    root = tmp_path / "pets"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            _write(root / split / name / "ok.png")
    (root / "test/cat/ok.png").write_bytes(b"garbage")
    (root / "test/dog/ok.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Split 'test'.*no readable image"):
        folder.prepared_builder(folder_config(root, tmp_path / "tfds"))


def test_train_and_eval_batches_through_the_pipeline(tmp_path):
    tree = make_class_tree(tmp_path / "insects")
    config = folder_config(tree.root, tmp_path / "tfds", validation_split="validation")
    config.augment.random_resized_crop = True
    config.augment.horizontal_flip = True
    info = data.get_dataset_info(config)
    assert info.num_classes == 3 and info.image_shape == (16, 16, 3)
    batch = next(data.create_train_iterator(config, info))
    assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (4,) and set(batch["label"]) <= {0, 1, 2}
    assert batch["image"].std() > 0
    for split in ("test", "validation"):
        batches = list(data.create_eval_iterator(config, info, split))
        labels = np.concatenate([b["label"][b["mask"]] for b in batches])
        assert len(labels) == info.split_sizes[split]
        split_labels = [
            tree.label_of(r, info.class_names)
            for r in tree.expected
            if folder_scan.assign_split(r, config.dataset.split_fractions) == split
        ]
        assert sorted(labels.tolist()) == sorted(split_labels)
    counts = data.count_labels(config, info, "train")
    assert counts.sum() == info.split_sizes["train"] and (counts > 0).all()


def _untar(archive, destination):
    """Unpacks archive into destination (with the tar program when there is one: faster)."""
    destination.mkdir(parents=True, exist_ok=True)
    if shutil.which("tar"):
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(destination)], check=True)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(destination, filter="data")
    return destination


@pytest.mark.skipif(not CIFAR_ARCHIVE.exists(), reason=f"{CIFAR_ARCHIVE} not found")
def test_cifar10_jpeg_folder(tmp_path):
    root = _untar(CIFAR_ARCHIVE, tmp_path / "cifar10")
    config = folder_config(root, tmp_path / "tfds", image_size=32)
    start = time.time()
    info = data.get_dataset_info(config)
    seconds = time.time() - start
    print(f"CIFAR-10 JPEG folder (60,000 files) prepared in {seconds:.1f}s")
    assert info.class_names == tuple(CIFAR_CLASSES)
    assert info.split_sizes == {"train": 50_000, "test": 10_000}
    meta = folder.read_metadata(config)
    assert meta["num_skipped"] == 0 and meta["layout"] == "split"
    assert meta["splits"]["train"]["class_counts"] == [5000] * 10
    assert meta["splits"]["test"]["class_counts"] == [1000] * 10
    assert meta["image_size"]["height"] == {"min": 32, "median": 32.0, "max": 32}
    assert sum(s["reencoded"] for s in meta["splits"].values()) == 0  # JPEGs kept as they are
    batches = data.create_eval_iterator(config, info, "test")
    batch = next(batches)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["mask"].all()
    assert seconds < 60


@pytest.mark.skipif(not FLOWERS_ARCHIVE.exists(), reason=f"{FLOWERS_ARCHIVE} not found")
def test_flowers_folder_trains_above_chance(tmp_path):

    root = _untar(FLOWERS_ARCHIVE, tmp_path / "flowers") / "flowers"
    config = folder_config(root, tmp_path / "tfds", image_size=32)
    config.dataset.validation_split = "validation"
    config.dataset.eval_split = "test"
    config.augment.random_crop_padding = 0
    config.augment.random_resized_crop = True
    config.augment.area_range = (0.35, 1.0)
    config.augment.horizontal_flip = True
    config.model.features = (32, 64)
    config.model.dense_features = 128
    config.batch_size = 64
    config.eval_batch_size = 256
    config.num_epochs = 4.0
    config.eval_every_epochs = 4.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 10_000
    start = time.time()
    result = imgcls.train_and_evaluate(config, str(tmp_path / "workdir"))
    print(f"flowers: test accuracy {result['eval_accuracy']:.4f} in {time.time() - start:.1f}s")
    info = data.get_dataset_info(config)
    assert info.class_names == ("daisy", "dandelion", "rose", "sunflower", "tulip")
    assert sum(info.split_sizes[s] for s in folder_scan.AUTO_SPLITS) == 4317
    assert result["eval_accuracy"] > 0.45  # chance: 0.24 (the largest class)
