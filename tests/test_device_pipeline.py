"""The device-resident train pipeline: same examples as tf.data, exact resume, accuracy."""

import collections
import json

import jax
import numpy as np
import pytest
from conftest import load_config, run_python

import imgcls
from imgcls import data, parallel
from imgcls.training import loop


def synthetic_config(pipeline, **augment):
    config = load_config()
    config.dataset.update(
        name="synthetic",
        image_shape=(6, 6, 3),
        num_train_examples=200,
        num_eval_examples=40,
        pipeline=pipeline,
    )
    config.batch_size, config.eval_batch_size = 40, 40
    config.augment.random_crop_padding = 0
    config.augment.update(augment)
    return config


def epoch_items(iterator, steps):
    """Multiset of (image bytes, label) of `steps` batches."""
    counter = collections.Counter()
    for _ in range(steps):
        batch = next(iterator)
        for image, label in zip(
            np.asarray(batch["image"]), np.asarray(batch["label"]), strict=True
        ):
            counter[image.tobytes(), int(label)] += 1
    return counter


def test_device_and_tf_pipelines_yield_the_same_examples_per_epoch():
    tf_config, device_config = synthetic_config("tf"), synthetic_config("device")
    info = data.get_dataset_info(tf_config)
    spe = data.steps_per_epoch(tf_config, info)
    assert spe == 5  # 200 examples, batch 40: every example once per epoch
    tf_iter = data.create_train_iterator(tf_config, info)
    device_iter = data.create_train_iterator(device_config, info, mesh=parallel.create_mesh())
    for _ in range(2):  # two epochs
        expected = epoch_items(tf_iter, spe)
        assert sum(expected.values()) == 200 and len(expected) == 200
        assert epoch_items(device_iter, spe) == expected


def test_device_pipeline_shuffles_per_epoch_and_resumes_exactly():
    config = synthetic_config("device", random_crop_padding=1, horizontal_flip=True, erasing=0.5)
    info = data.get_dataset_info(config)
    mesh = parallel.create_mesh()
    stream = data.create_train_iterator(config, info, mesh=mesh)
    batches = [jax_to_numpy(next(stream)) for _ in range(12)]
    assert batches[0]["image"].dtype == np.uint8 and batches[0]["image"].shape == (40, 6, 6, 3)
    assert batches[0]["label"].dtype == np.int32
    labels_epoch0 = np.concatenate([b["label"] for b in batches[:5]])
    labels_epoch1 = np.concatenate([b["label"] for b in batches[5:10]])
    assert not np.array_equal(labels_epoch0, labels_epoch1)  # reshuffled
    assert sorted(labels_epoch0) == sorted(labels_epoch1)  # the same examples
    for start in (3, 7):
        resumed = data.create_train_iterator(config, info, start_step=start, mesh=mesh)
        for expected in batches[start:]:
            got = jax_to_numpy(next(resumed))
            np.testing.assert_array_equal(got["image"], expected["image"])
            np.testing.assert_array_equal(got["label"], expected["label"])


def jax_to_numpy(batch):
    return {k: np.asarray(v) for k, v in batch.items()}


def test_device_pipeline_refuses_tf_only_augmentations():
    config = synthetic_config("device", rotation=10.0)
    info = data.get_dataset_info(config)
    with pytest.raises(ValueError, match="rotation"):
        data.create_train_iterator(config, info, mesh=parallel.create_mesh())
    config = synthetic_config("threads")
    with pytest.raises(ValueError, match="pipeline='threads'"):
        data.create_train_iterator(config, info)


FOUR_DEVICES = """
import collections, json, logging, sys
logging.basicConfig(level=logging.INFO)  # absl's lines on stderr
import jax
import numpy as np
sys.path.insert(0, 'tests')
from test_device_pipeline import synthetic_config
from imgcls import data, parallel
from imgcls.data.pipelines import choice
config = synthetic_config('device', num_train_examples=203)
info = data.get_dataset_info(config)
# A budget for a shard of the split but not for all of it: each device gets a shard.
choice.DEVICE_MEMORY_FRACTION = 2 * 51 * 6 * 6 * 3 / choice.device_memory_bytes()
stream = data.create_train_iterator(config, info, mesh=parallel.create_mesh())
spe = data.steps_per_epoch(config, info)
batch = next(stream)
shards = [s.data.shape for s in batch['image'].addressable_shards]
seen = [np.asarray(batch['image'])] + [np.asarray(next(stream)['image']) for _ in range(spe - 1)]
images = np.concatenate(seen)
distinct = len({x.tobytes() for x in images})
print(json.dumps({'spe': spe, 'shards': shards, 'taken': len(images), 'distinct': distinct}))
"""


def test_a_split_too_big_for_every_device_is_sharded_and_each_shard_covered_once():
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = run_python(["-c", FOUR_DEVICES], flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # 203 examples on 4 devices: 50 per device, 3 left out; batch 40 = 10 per device.
    assert out["shards"] == [[10, 6, 6, 3]] * 4
    assert out["spe"] == 5 and out["taken"] == 200 and out["distinct"] == 200
    assert "order of its examples depends on the device count" in proc.stderr


EIGHT_DEVICES = """
import json, sys
import jax
import numpy as np
sys.path.insert(0, 'tests')
from test_device_pipeline import synthetic_config
from imgcls import data, parallel
one, eight = parallel.create_mesh(jax.devices()[:1]), parallel.create_mesh()
out = {}
for name, augment, balance in [
    ("crops, flips, cutout, erasing", dict(random_crop_padding=2, horizontal_flip=True,
                                           vertical_flip=True, cutout=2, erasing=0.5), "none"),
    ("alternating flip, balanced", dict(alternating_flip=True), "sampling"),
]:
    config = synthetic_config("device", num_train_examples=203, **augment)
    config.dataset.balance = balance
    info = data.get_dataset_info(config)
    streams = {1: data.create_train_iterator(config, info, mesh=one),
               8: data.create_train_iterator(config, info, mesh=eight)}
    steps = 2 * data.steps_per_epoch(config, info) + 1  # two epochs: both flip halves
    batches = {n: [jax.tree.map(np.asarray, next(stream)) for _ in range(steps)]
               for n, stream in streams.items()}
    same = all(
        np.array_equal(a[k], b[k]) for a, b in zip(batches[1], batches[8]) for k in a
    )
    resumed = jax.tree.map(np.asarray, next(data.create_train_iterator(config, info, 7, eight)))
    out[name] = {
        "same": same,
        "resumed_same": all(np.array_equal(resumed[k], batches[1][7][k]) for k in resumed),
        "shards": [s.data.shape for s in next(streams[8])["image"].addressable_shards][:2],
        "augmented": bool(np.any(batches[1][0]["image"] != batches[1][1]["image"])),
    }
print(json.dumps(out))
"""


def test_the_global_batches_are_the_same_on_one_and_eight_devices_also_after_a_resume():
    """The device pipeline's global batch is a function of (seed, step): the same images,
    augmented the same way, and labels on 1 and 8 devices (issue 24: it was not); a run
    resumed on 8 devices continues on the batches a 1-device run sees."""
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = run_python(["-c", EIGHT_DEVICES], flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, case in out.items():
        assert case["same"] and case["resumed_same"], name
        assert case["shards"] == [[5, 6, 6, 3]] * 2  # batch 40: 5 a device
        assert case["augmented"]


def test_device_pipeline_trains_as_well_as_tf_data(data_dir, tmp_path):
    """The default digits recipe, shortened: both pipelines reach the same accuracy band."""
    accuracies = {}
    for pipeline in ("tf", "device"):
        config = load_config()
        config.dataset.data_dir = data_dir
        config.dataset.pipeline = pipeline
        config.num_epochs = 15
        config.eval_every_epochs = 15
        config.final_report = False
        result = imgcls.train_and_evaluate(config, str(tmp_path / pipeline))
        accuracies[pipeline] = result["eval_accuracy"]
    assert accuracies["device"] > 0.97, accuracies
    assert abs(accuracies["device"] - accuracies["tf"]) < 0.02, accuracies


def test_auto_picks_the_device_pipeline_when_it_fits_and_can_augment(monkeypatch, tmp_path):
    from imgcls.data.pipelines import choice

    config = synthetic_config("auto", horizontal_flip=True, erasing=0.5)
    info = data.get_dataset_info(config)
    assert choice.choose(config, info)[0] == "device"
    assert isinstance(next(data.create_train_iterator(config, info))["image"], jax.Array)
    rotated = synthetic_config("auto", rotation=10.0)
    assert choice.choose(rotated, info) == (
        "tf",
        "config.augment.rotation only run in tf.data",
    )
    # The random-resized crop runs on the device at the native size (configs/folder_cnn.py).
    cropped = synthetic_config("auto", random_resized_crop=True)
    assert cropped.dataset.image_size == 0 and choice.choose(cropped, info)[0] == "device"
    cropped.dataset.image_size = 16  # images resized when loaded: the crop needs tf.data
    assert choice.choose(cropped, info) == (
        "tf",
        "config.augment.random_resized_crop only run in tf.data",
    )
    monkeypatch.setattr(choice, "DEVICE_MEMORY_FRACTION", 1e-9)
    pipeline, why = choice.choose(config, info)
    assert pipeline == "tf" and "is more than 0% of a device's memory" in why
    assert isinstance(next(data.create_train_iterator(config, info))["image"], np.ndarray)
    config.dataset.pipeline = "device"  # an explicit choice is kept
    assert choice.choose(config, info) == ("device", "config.dataset.pipeline")


def test_a_resumed_auto_run_keeps_the_pipeline_it_started_with(tmp_path):
    """W/config.json of a run that has checkpoints says which pipeline 'auto' chose then."""
    config = synthetic_config("auto")
    started = config.copy_and_resolve_references()
    started.dataset.pipeline = "tf"
    (tmp_path / "config.json").write_text(started.to_json())
    assert loop._resumed_pipeline(config, str(tmp_path)).dataset.pipeline == "auto"  # fresh
    (tmp_path / "checkpoints").mkdir()
    assert loop._resumed_pipeline(config, str(tmp_path)).dataset.pipeline == "tf"
