"""Tests of imgcls.data: the digits builder, sources, and exactly resumable batch iterators.

They use the digits set bundled with scikit-learn (prepared once into a temporary data_dir),
synthetic data, and tfds.testing.mock_data, so nothing is downloaded.
"""

import collections
import importlib.util
import itertools
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import imgcls.data as data

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_default_config():
    spec = importlib.util.spec_from_file_location("default_config", ROOT / "configs/default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config


get_config = _load_default_config()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def make_config(data_dir, batch_size=64, eval_batch_size=100, seed=0, **dataset):
    """The default config on data_dir; keyword arguments set config.augment or config.dataset."""
    config = get_config()
    config.seed, config.batch_size, config.eval_batch_size = seed, batch_size, eval_batch_size
    config.dataset.data_dir = data_dir
    config.augment.random_crop_padding = 0  # no augmentation unless a test asks for it
    config.dataset.pipeline = "tf"  # the tf.data pipeline (test_device_pipeline.py: the other)
    for key, value in dataset.items():
        (config.augment if key in config.augment else config.dataset)[key] = value
    return config


def synthetic_config(**overrides):
    dataset = dict(name="synthetic", image_shape=(12, 12, 3), num_train_examples=200)
    dataset["num_eval_examples"] = 90
    dataset.update(overrides)
    return make_config("", batch_size=32, eval_batch_size=40, **dataset)


def items(batches):
    """Multiset of (image bytes, label) of the unmasked examples of some batches."""
    counter = collections.Counter()
    for batch in batches:
        mask = batch.get("mask", np.ones(len(batch["label"]), bool))
        for image, label in zip(batch["image"][mask], batch["label"][mask], strict=True):
            counter[image.tobytes(), int(label)] += 1
    return counter


def read_split(data_dir, split):
    import tensorflow_datasets as tfds

    ds = tfds.builder("digits", data_dir=data_dir).as_dataset(split=split)
    return collections.Counter(
        (ex["image"].tobytes(), int(ex["label"])) for ex in tfds.as_numpy(ds)
    )


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def simulate_process(monkeypatch, index, count):
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(jax, "process_count", lambda: count)


def test_import_does_not_import_tensorflow():
    code = "import sys, imgcls.data; assert 'tensorflow' not in sys.modules, 'TF imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_normalize():
    images = np.array([[0, 255], [51, 102]], np.uint8)[..., None]
    out = data.normalize(images, (0.5,), (0.25,))
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(np.asarray(out)[..., 0], [[-2.0, 2.0], [-1.2, -0.4]], atol=1e-6)


def test_digits_builder(data_dir):
    from sklearn.datasets import load_digits

    info = data.get_dataset_info(make_config(data_dir))
    assert info.name == "digits" and info.num_classes == 10
    assert info.class_names == tuple(str(d) for d in range(10))
    assert info.image_shape == (8, 8, 1)
    sizes = info.split_sizes
    assert sizes["train"] + sizes["test"] == 1797 and abs(sizes["test"] - 360) <= 5

    test = read_split(data_dir, "test")
    class_counts = collections.Counter(load_digits().target.tolist())
    test_counts = collections.Counter(label for (_, label), n in test.items() for _ in range(n))
    assert all(test_counts[c] == class_counts[c] // 5 for c in range(10)), test_counts
    # The test split is exactly every 5th example of each class, in load_digits order.
    digits = load_digits()
    expected, seen = collections.Counter(), collections.Counter()
    for image, label in zip(digits.images, digits.target.tolist(), strict=True):
        if seen[label] % 5 == 4:
            pixels = np.round(image * 255 / 16).astype(np.uint8)[..., None]
            expected[pixels.tobytes(), label] += 1
        seen[label] += 1
    assert test == expected

    batch = next(data.create_eval_iterator(make_config(data_dir), info))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (100, 8, 8, 1)
    assert batch["image"].min() == 0 and batch["image"].max() == 255
    assert batch["label"].dtype == np.int32 and set(batch["label"]) <= set(range(10))


def test_train_iterator_deterministic_per_seed(data_dir):
    config = make_config(data_dir, horizontal_flip=True, random_crop_padding=1)
    info = data.get_dataset_info(config)
    first = list(itertools.islice(data.create_train_iterator(config, info), 3))
    again = list(itertools.islice(data.create_train_iterator(config, info), 3))
    assert_batches_equal(first, again)
    assert first[0]["image"].shape == (64, 8, 8, 1) and first[0]["label"].dtype == np.int32
    other = next(data.create_train_iterator(make_config(data_dir, seed=1), info))
    assert not np.array_equal(first[0]["label"], other["label"])


@pytest.mark.parametrize(
    "start, dataset",
    [
        (7, dict(random_crop_padding=2, horizontal_flip=True)),
        (20, dict(random_crop_padding=2, horizontal_flip=True, cache=False)),  # spe = 22
        (21, dict(image_size=12, random_resized_crop=True, horizontal_flip=True)),
    ],
)
def test_train_resume_is_exact(data_dir, start, dataset):
    config = make_config(data_dir, **dataset)
    info = data.get_dataset_info(config)
    assert data.steps_per_epoch(config, info) == 1442 // 64 == 22
    full = list(itertools.islice(data.create_train_iterator(config, info, 0), start, start + 5))
    resumed = list(itertools.islice(data.create_train_iterator(config, info, start), 5))
    assert_batches_equal(full, resumed)


def test_augmentation_changes_images_not_order(data_dir):
    plain = make_config(data_dir)
    info = data.get_dataset_info(plain)
    augmented = make_config(data_dir, random_crop_padding=2, horizontal_flip=True)
    a = next(data.create_train_iterator(plain, info))
    b = next(data.create_train_iterator(augmented, info))
    np.testing.assert_array_equal(a["label"], b["label"])
    assert (a["image"] != b["image"]).any(axis=(1, 2, 3)).mean() > 0.5


def test_epoch_covers_train_split_once(data_dir):
    config = make_config(data_dir)
    info = data.get_dataset_info(config)
    spe = data.steps_per_epoch(config, info)
    batches = list(itertools.islice(data.create_train_iterator(config, info), 2 * spe))
    split = read_split(data_dir, "train")
    for epoch in (batches[:spe], batches[spe:]):
        seen = items(epoch)
        assert seen <= split  # Each example at most once (as often as it occurs in the split).
        assert seen.total() == spe * 64 == split.total() - 1442 % 64
    assert not np.array_equal(batches[0]["label"], batches[spe]["label"])  # Reshuffled.


@pytest.mark.parametrize("dataset", [dict(), dict(image_size=10, random_resized_crop=True)])
def test_eval_iterator_covers_split_once(data_dir, dataset):
    config = make_config(data_dir, **dataset)
    info = data.get_dataset_info(config)
    batches = list(data.create_eval_iterator(config, info))
    assert len(batches) == data.num_eval_batches(config, info) == 4  # ceil(355 / 100)
    size = dataset.get("image_size", 8)
    for batch in batches:
        assert batch["image"].shape == (100, size, size, 1) and batch["mask"].dtype == bool
    masks = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(masks, np.arange(400) < 355)
    last = batches[-1]
    assert not last["image"][~last["mask"]].any() and not last["label"][~last["mask"]].any()
    if not dataset:
        assert items(batches) == read_split(data_dir, "test")
    again = list(data.create_eval_iterator(config, info))
    assert_batches_equal(batches, again)


def test_two_processes_get_disjoint_slices(data_dir, monkeypatch):
    config = make_config(data_dir, eval_batch_size=64)
    info = data.get_dataset_info(config)
    slices, eval_batches = [], []
    for index in range(2):
        simulate_process(monkeypatch, index, 2)
        train_slice = items(data.create_eval_iterator(config, info, split="train"))
        assert abs(train_slice.total() - 1442 / 2) <= 1
        spe = data.steps_per_epoch(config, info)
        assert spe == (1442 // 2) // 32
        epoch = list(itertools.islice(data.create_train_iterator(config, info), spe))
        assert epoch[0]["image"].shape == (32, 8, 8, 1)
        assert items(epoch) <= train_slice
        slices.append(train_slice)
        batches = list(data.create_eval_iterator(config, info))
        assert len(batches) == data.num_eval_batches(config, info) == 6  # ceil(178 / 32)
        eval_batches.append(items(batches))
    assert slices[0] + slices[1] == read_split(data_dir, "train")
    assert eval_batches[0] + eval_batches[1] == read_split(data_dir, "test")


def test_synthetic(monkeypatch):
    config = synthetic_config(image_size=16)
    info = data.get_dataset_info(config)
    assert info == data.DatasetInfo(
        name="synthetic",
        num_classes=10,
        class_names=tuple(str(c) for c in range(10)),
        image_shape=(16, 16, 3),
        split_sizes={"train": 200, "test": 90},
    )
    batch = next(data.create_train_iterator(config, info))
    assert batch["image"].shape == (32, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert data.steps_per_epoch(config, info) == 6

    config = synthetic_config()
    info = data.get_dataset_info(config)
    batches = list(data.create_eval_iterator(config, info))
    assert len(batches) == 3
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, np.arange(90) % 10)
    images = np.concatenate([b["image"][b["mask"]] for b in batches]).astype(np.float32)
    brightness = [images[labels == c].mean() for c in range(10)]
    assert np.all(np.diff(brightness) > 10)  # Learnable: brightness encodes the class.
    assert_batches_equal(batches, list(data.create_eval_iterator(config, info)))
    other = next(data.create_eval_iterator(synthetic_config(), info))  # Same seed, same data.
    np.testing.assert_array_equal(other["image"], batches[0]["image"])
    reseeded = synthetic_config()
    reseeded.seed = 1
    reseeded_batch = next(data.create_eval_iterator(reseeded, info))
    assert not np.array_equal(reseeded_batch["image"], other["image"])

    # Simulated processes split the synthetic train split disjointly too.
    parts = []
    for index in range(2):
        simulate_process(monkeypatch, index, 2)
        parts.append(items(data.create_eval_iterator(config, info, split="train")))
    simulate_process(monkeypatch, 0, 1)
    assert parts[0] + parts[1] == items(data.create_eval_iterator(config, info, split="train"))
    assert not parts[0] & parts[1]


def test_unknown_dataset_and_split(data_dir):
    with pytest.raises(ValueError, match=r"Unknown dataset 'no_such_dataset_xyz'.*cifar10"):
        data.get_dataset_info(make_config(data_dir, name="no_such_dataset_xyz"))
    with pytest.raises(ValueError, match=r"no split 'validation'.*'test', 'train'"):
        data.get_dataset_info(make_config(data_dir, eval_split="validation"))
    config = make_config(data_dir)
    info = data.get_dataset_info(config)
    with pytest.raises(ValueError, match=r"no split 'valid'.*'test', 'train'"):
        data.create_eval_iterator(config, info, split="valid")
    with pytest.raises(ValueError, match=r"no split 'validation'.*'test', 'train'"):
        data.get_dataset_info(synthetic_config(eval_split="validation"))


def test_split_expression(data_dir):
    config = make_config(data_dir, eval_split="train[:10%]")
    info = data.get_dataset_info(config)
    assert info.split_sizes["train[:10%]"] == 144
    batches = list(data.create_eval_iterator(config, info))
    assert len(batches) == 2 and sum(b["mask"].sum() for b in batches) == 144


def test_batch_size_errors(data_dir, monkeypatch):
    config = make_config(data_dir)
    info = data.get_dataset_info(config)
    with pytest.raises(ValueError, match="larger than the 1442 examples"):
        data.create_train_iterator(make_config(data_dir, batch_size=2048), info)
    simulate_process(monkeypatch, 0, 3)
    with pytest.raises(ValueError, match=r"config.batch_size=64 .* divisible .* \(3\)"):
        data.create_train_iterator(config, info)
    with pytest.raises(ValueError, match=r"config.eval_batch_size=100 .* divisible"):
        data.create_eval_iterator(config, info)


def test_tfds_catalog_dataset_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    config = make_config(str(tmp_path), batch_size=8, eval_batch_size=16, name="cifar10")
    with tfds.testing.mock_data(num_examples=20):
        info = data.get_dataset_info(config)
        assert info.num_classes == 10 and info.image_shape == (32, 32, 3)
        batch = next(data.create_train_iterator(config, info))
        assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
        batches = list(data.create_eval_iterator(config, info))
        assert [int(b["mask"].sum()) for b in batches] == [16, 4]


def test_eval_index_is_position_in_split_across_processes(data_dir, monkeypatch):
    """`index` numbers the split in read order, also when 2 processes each read a slice."""
    config = make_config(data_dir, eval_batch_size=64)
    info = data.get_dataset_info(config)
    single = list(data.create_eval_iterator(config, info))
    images = np.concatenate([b["image"][b["mask"]] for b in single])
    order = np.concatenate([b["index"][b["mask"]] for b in single])
    np.testing.assert_array_equal(order, np.arange(355))
    assert all((b["index"][~b["mask"]] == -1).all() for b in single)
    seen = []
    for index in range(2):
        simulate_process(monkeypatch, index, 2)
        for b in data.create_eval_iterator(config, info):
            for i, image in zip(b["index"][b["mask"]], b["image"][b["mask"]], strict=True):
                np.testing.assert_array_equal(image, images[i])  # the same example
                seen.append(int(i))
    assert sorted(seen) == list(range(355))


def test_count_labels(data_dir):
    config = make_config(data_dir)
    info = data.get_dataset_info(config)
    for split, total in (("train", 1442), ("test", 355)):
        counts = data.count_labels(config, info, split)
        expected = collections.Counter(label for _, label in read_split(data_dir, split).elements())
        assert counts.tolist() == [expected[c] for c in range(10)] and counts.sum() == total
    synthetic = synthetic_config()
    counts = data.count_labels(synthetic, data.get_dataset_info(synthetic), "test")
    assert counts.tolist() == [9] * 10  # label = index % 10 over 90 examples


def test_concurrent_preparation_of_the_same_data_dir(tmp_path):
    """Parallel sweep trials (or hosts) preparing one data_dir all end up reading it."""
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from tests.test_data import make_config; import imgcls.data as data;"
        "print(data.get_dataset_info(make_config(sys.argv[1])).split_sizes)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert "'train': 1442" in out


@pytest.mark.parametrize("error", [FileExistsError(17, "exists"), OSError(39, "not empty")])
def test_losing_the_preparation_race_reads_the_winners_data(error):
    """TFDS renames its finished folder into place; the processes that lose the race get
    EEXIST or ENOTEMPTY (seen in CI) and must read the winner's. Any other failure stands."""
    from imgcls.data.sources.catalog import prepare_builder

    prepared = {"by_other": False}

    class Builder:
        def is_prepared(self):
            return prepared["by_other"]

        def download_and_prepare(self, download_config=None):
            prepared["by_other"] = True  # the winner finished first
            raise error

    assert prepare_builder(Builder).is_prepared()

    class Broken(Builder):
        def download_and_prepare(self, download_config=None):
            raise error

    prepared["by_other"] = False
    with pytest.raises(OSError):
        prepare_builder(Broken)
