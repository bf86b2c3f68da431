"""Transfer learning: warm start (transfer.warm_start) and a frozen / unfrozen backbone (optim).

The source is a tiny ResNet trained briefly on digits; the targets are synthetic datasets of
the same image shape with another class count. The warm-start-beats-scratch test trains on the
real CIFAR-10 and flowers folders of ../shared/data and skips when they are absent. The Keras
ResNet50 warm start is in tests/test_keras_import.py (it reuses that file's Keras model).
"""

import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import time

import jax
import numpy as np
import pytest
from conftest import folder_config, load_config
from flax import traverse_util

import imgcls
from imgcls import data, models, parallel
from imgcls.run import checkpointing
from imgcls.training import state as state_lib
from imgcls.transfer import warm_start

TINY = {"name": "resnet18", "stem": "small", "num_filters": 4, "stage_sizes": (1, 1)}
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.gz"
FLOWERS_ARCHIVE = SHARED_DATA / "flowers5.tar.gz"
HEAD = ["params/head/bias", "params/head/kernel"]


def flat(variables):
    """{'params/...': array, 'batch_stats/...': array} as numpy."""
    tree = {k: jax.tree.map(np.asarray, dict(variables[k])) for k in ("params", "batch_stats")}
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def variables_of(state):
    return flat({"params": state.params, "batch_stats": state.batch_stats})


def saved(workdir, step=None):
    """The params and batch_stats of a checkpoint of `workdir` (latest by default), flat."""
    directory = os.path.join(workdir, "checkpoints")
    with checkpointing.Checkpointer(directory, read_only=True) as ckpt:
        return flat(ckpt.restore_variables(ckpt.latest_step() if step is None else step))


def same(a, b, keys):
    return all(np.array_equal(a[k], b[k]) for k in keys)


@pytest.fixture(scope="module")
def source(tmp_path_factory, data_dir):
    """The workdir of a tiny ResNet trained for a few steps on digits (10 classes, 8x8x1)."""
    config = load_config()
    config.dataset.data_dir = data_dir
    config.model = dict(TINY)
    config.batch_size = 32
    config.num_train_steps = 8
    config.optimizer.warmup_epochs = 0.0
    config.final_report = False
    workdir = str(tmp_path_factory.mktemp("source"))
    imgcls.train_and_evaluate(config, workdir)
    return workdir


def target_config(source_workdir, **overrides):
    """A tiny ResNet on 5 synthetic classes of digits' shape, warm-started from the source."""
    config = load_config()
    config.dataset.name = "synthetic"
    config.dataset.num_classes = 5
    config.dataset.image_shape = (8, 8, 1)
    config.dataset.num_train_examples = 64  # 4 steps per epoch
    config.dataset.num_eval_examples = 32
    config.model = dict(TINY)
    config.batch_size = 16
    config.eval_batch_size = 32
    config.optimizer.warmup_epochs = 0.0
    config.num_train_steps = 5
    config.eval_every_epochs = 100.0
    config.log_every_steps = 100
    config.final_report = False
    config.init_from = source_workdir
    for key, value in overrides.items():
        config[key] = value
    return config


def fresh_state(config):
    info = data.get_dataset_info(config)
    state, _, _ = state_lib.initial_state(config, info, parallel.create_mesh())
    return state


def test_parse_init_from(tmp_path):
    parse = warm_start.parse_init_from
    assert parse("") is None
    assert parse("keras") == warm_start.Source("keras", "")
    assert parse("keras:/w/r50.h5") == warm_start.Source("keras", "/w/r50.h5")
    assert parse("runs/a") == warm_start.Source("checkpoint", "runs/a")
    for which in ("best", "latest", "120"):
        assert parse(f"runs/a:{which}") == warm_start.Source("checkpoint", "runs/a", which)
    assert parse("gs://bucket/a") == warm_start.Source("checkpoint", "gs://bucket/a")
    assert parse("runs/a:first") == warm_start.Source("checkpoint", "runs/a:first")
    odd = str(tmp_path / "run:7")
    os.mkdir(odd)  # an existing directory is taken whole
    assert parse(odd) == warm_start.Source("checkpoint", odd)


def test_warm_start_into_another_class_count(source, tmp_path):
    config = target_config(source)
    state = fresh_state(config)
    init = variables_of(state)
    state, report = warm_start.warm_start(config, state, str(tmp_path))
    loaded, src = variables_of(state), saved(source)

    backbone = [k for k in loaded if "/head/" not in k]
    assert same(loaded, src, backbone)  # params and BatchNorm statistics, bitwise
    assert any(k.startswith("batch_stats/") for k in backbone)
    assert same(loaded, init, HEAD)  # a fresh init of the target (same seed)
    assert src["params/head/kernel"].shape == (8, 10)
    assert init["params/head/kernel"].shape == (8, 5)
    assert int(state.step) == 0
    assert sorted(report["reinitialised"]) == HEAD
    assert report["reinitialised_shapes"]["params/head/kernel"] == {
        "source": [8, 10],
        "target": [8, 5],
    }
    assert sorted(report["loaded"]) == sorted(backbone)
    assert report["left_out"] == report["missing"] == []
    assert report["counts"] == {
        "loaded": len(backbone),
        "reinitialised": 2,
        "left_out": 0,
        "missing": 0,
    }
    with open(tmp_path / warm_start.REPORT_FILE) as f:
        assert json.load(f)["loaded"] == report["loaded"]
    assert "step 8" in warm_start.summary(report)


def _shapes(model_config, num_classes):
    """{'params', 'batch_stats'} shape structs of a model (no compilation)."""
    overrides = {"axis_name": None} if model_config["name"] != "cnn" else {}
    model = models.create_model(model_config, num_classes, **overrides)
    dummy = jax.ShapeDtypeStruct((1, 8, 8, 1), np.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), dummy)


def test_matching_rules(source):
    src = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in saved(source).items()})

    # The same class count: the head is loaded too.
    loaded, report = warm_start.match(_shapes(TINY, 10), src)
    assert report["reinitialised"] == [] and set(HEAD) <= set(report["loaded"])

    # Another width outside the head: an error naming each array with both shapes.
    with pytest.raises(ValueError) as info:
        warm_start.match(_shapes({**TINY, "num_filters": 8}, 10), src, "the source")
    message = str(info.value)
    assert message.startswith("config.init_from: 30 array(s) outside the classifier head")
    assert "params/conv_init/kernel (3, 3, 1, 4) -> (3, 3, 1, 8);" in message
    assert "batch_stats/bn_init/mean (4,) -> (8,)" in message

    # A deeper target: the extra block stays at init ('missing'); a shallower one drops it.
    _, report = warm_start.match(_shapes({**TINY, "stage_sizes": (1, 2)}, 5), src)
    assert report["missing"] and all("ResNetBlock_2" in k for k in report["missing"])
    assert report["left_out"] == []
    _, report = warm_start.match(_shapes({**TINY, "stage_sizes": (1,)}, 5), src)
    assert report["left_out"] and all("ResNetBlock_1" in k for k in report["left_out"])

    # Another model family: (almost) nothing outside the head matches.
    cnn = {"name": "cnn", "features": (4,), "dense_features": 8}
    with pytest.raises(ValueError, match="only 0 of the 4 arrays .* in the source .*family"):
        warm_start.match(_shapes(cnn, 5), src, "the source")


def test_bad_sources_are_clear_errors(source, tmp_path):
    state = None  # never reached: the source is checked first
    config = target_config(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere/checkpoints does not exist.*W:best"):
        warm_start.warm_start(config, state)
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    config.init_from = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no checkpoints in .*empty"):
        warm_start.warm_start(config, state)
    config.init_from = f"{source}:7"
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 7 .*saved steps: \[8\]"):
        warm_start.warm_start(config, state)
    config.init_from = f"keras:{tmp_path / 'r50.h5'}"
    with pytest.raises(FileNotFoundError, match="r50.h5"):
        warm_start.warm_start(config, state)


@pytest.fixture(scope="module")
def frozen_run(source, tmp_path_factory):
    """5 steps warm-started and frozen, unfrozen after half an epoch (= 2 steps)."""
    config = target_config(
        source,
        freeze_backbone=True,
        unfreeze_after_epochs=0.5,
        checkpoint_every_steps=1,
        keep_checkpoints=10,
    )
    workdir = str(tmp_path_factory.mktemp("frozen"))
    imgcls.train_and_evaluate(config, workdir)
    return config, workdir


def test_frozen_backbone_is_bitwise_unchanged_until_unfrozen(source, frozen_run):
    config, workdir = frozen_run
    src, init = saved(source), variables_of(fresh_state(config))
    steps = {step: saved(workdir, step) for step in (1, 2, 3, 5)}
    backbone = [k for k in init if "/head/" not in k]
    batch_stats = [k for k in backbone if k.startswith("batch_stats/")]
    for step in (1, 2):  # frozen: steps 0 and 1 update only the head
        assert same(steps[step], src, backbone)
        assert not same(steps[step], init, ["params/head/kernel"])
    assert not same(steps[1], steps[2], ["params/head/kernel"])
    for step in (3, 5):  # unfrozen from step 2 on: parameters and BatchNorm statistics train
        assert not any(np.array_equal(steps[step][k], src[k]) for k in batch_stats)
        changed = [k for k in backbone if not np.array_equal(steps[step][k], src[k])]
        assert len(changed) == len(backbone)
    with open(os.path.join(workdir, warm_start.REPORT_FILE)) as f:
        assert sorted(json.load(f)["reinitialised"]) == HEAD


class Interrupted(Exception):
    pass


def test_resume_after_unfreezing_equals_uninterrupted(frozen_run, tmp_path, monkeypatch):
    config, full = frozen_run
    workdir = str(tmp_path / "resumed")
    real_global_batch, calls = parallel.global_batch, []

    def crash_after_3_steps(mesh, batch):
        calls.append(1)
        if len(calls) > 3:
            raise Interrupted()
        return real_global_batch(mesh, batch)

    monkeypatch.setattr(parallel, "global_batch", crash_after_3_steps)
    with pytest.raises(Interrupted):
        imgcls.train_and_evaluate(config, workdir)
    monkeypatch.setattr(parallel, "global_batch", real_global_batch)
    os.remove(os.path.join(workdir, warm_start.REPORT_FILE))
    imgcls.train_and_evaluate(config, workdir)  # resumes at step 3 (unfrozen): no warm start
    assert not os.path.exists(os.path.join(workdir, warm_start.REPORT_FILE))

    directory = os.path.join(workdir, "checkpoints")
    with checkpointing.Checkpointer(directory, read_only=True) as ckpt:
        assert ckpt.all_steps()[-3:] == [3, 4, 5]
    template = fresh_state(config)
    with (
        checkpointing.Checkpointer(os.path.join(full, "checkpoints"), read_only=True) as a,
        checkpointing.Checkpointer(directory, read_only=True) as b,
    ):
        x, y = a.restore(template, 5), b.restore(template, 5)
    for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))  # incl. optimizer state


def test_freezing_a_model_without_batchnorm_option(data_dir, tmp_path):
    """cnn has no frozen_backbone field: the optimizer alone freezes its parameters."""
    config = load_config()
    config.dataset.data_dir = data_dir
    config.model.features = (4,)
    config.model.dense_features = 8
    config.freeze_backbone = True
    config.num_train_steps = 3
    config.final_report = False
    imgcls.train_and_evaluate(config, str(tmp_path))
    after, before = saved(str(tmp_path)), variables_of(fresh_state(config))
    assert same(after, before, [k for k in before if "/head/" not in k])
    assert not same(after, before, HEAD)


def _untar(archive, destination, *patterns):
    """Unpacks (the members matching shell `patterns` of) archive into destination."""
    destination.mkdir(parents=True, exist_ok=True)
    if shutil.which("tar"):
        command = ["tar", "-xzf", str(archive), "-C", str(destination)]
        subprocess.run(command + (["--wildcards", *patterns] if patterns else []), check=True)
    else:
        import fnmatch

        with tarfile.open(archive) as tar:
            members = [
                m
                for m in tar.getmembers()
                if not patterns or any(fnmatch.fnmatch(m.name, p) for p in patterns)
            ]
            tar.extractall(destination, members=members, filter="data")
    return destination


def transfer_config(path, data_dir, model):
    config = folder_config(path, data_dir, std=(0.25, 0.25, 0.25))
    config.augment.random_crop_padding = 0
    config.augment.random_resized_crop = True
    config.augment.area_range = (0.35, 1.0)
    config.augment.horizontal_flip = True
    config.model = dict(model)
    config.batch_size = 64
    config.eval_batch_size = 500
    config.optimizer.warmup_epochs = 0.2
    config.eval_every_epochs = 1000.0
    config.log_every_steps = 1000
    config.checkpoint_every_steps = 100_000
    return config


@pytest.mark.skipif(
    not (CIFAR_ARCHIVE.exists() and FLOWERS_ARCHIVE.exists()),
    reason=f"{CIFAR_ARCHIVE} or {FLOWERS_ARCHIVE} not found",
)
def test_warm_start_beats_scratch_on_flowers(tmp_path):
    """A small ResNet pretrained on CIFAR-10 (10,000 images) fine-tunes better on flowers."""
    start = time.time()
    model = {"name": "resnet18", "stem": "small", "num_filters": 16, "stage_sizes": (1, 1, 1)}
    # 1,000 training and 100 test images per class: train/<class>/0xxx.jpg, test/<class>/00xx.
    cifar = _untar(CIFAR_ARCHIVE, tmp_path / "cifar", "train/*/0*.jpg", "test/*/00*.jpg")
    source = transfer_config(cifar, tmp_path / "tfds", model)
    source.optimizer.learning_rate = 0.01  # adamw
    source.num_train_steps = 400
    source_result = imgcls.train_and_evaluate(source, str(tmp_path / "cifar_run"))
    source_seconds = time.time() - start

    flowers = _untar(FLOWERS_ARCHIVE, tmp_path / "flowers") / "flowers"
    results = {}
    for init_from in ("", str(tmp_path / "cifar_run")):
        config = transfer_config(flowers, tmp_path / "tfds", model)
        config.dataset.eval_split = "validation+test"  # 865 photos: less noisy than test alone
        config.optimizer.name = "sgd"
        config.optimizer.learning_rate = 0.05
        config.num_train_steps = 60
        config.init_from = init_from
        workdir = str(tmp_path / ("warm" if init_from else "scratch"))
        results["warm" if init_from else "scratch"] = imgcls.train_and_evaluate(config, workdir)
    warm, scratch = results["warm"]["eval_accuracy"], results["scratch"]["eval_accuracy"]
    print(
        f"CIFAR-10 source: test accuracy {source_result['eval_accuracy']:.4f} "
        f"({source_seconds:.1f}s); flowers after 60 steps, validation+test accuracy: "
        f"warm start {warm:.4f}, from scratch {scratch:.4f} ({time.time() - start:.1f}s in all)"
    )
    assert source_result["eval_accuracy"] > 0.3  # chance: 0.1
    assert warm > scratch


def test_transfer_config_fits_the_keras_weights():
    """configs/transfer_resnet50_folder.py builds resnet50_v1, whose arrays are Keras' ResNet50's
    (1000 classes, as imgcls.transfer.keras_import returns them) but for the head."""
    from imgcls.transfer.keras_import import KERAS_RESNET50_MEAN, MODEL_NAME, NUM_CLASSES

    config = load_config("transfer_resnet50_folder")
    assert config.init_from == "keras" and config.model.name == MODEL_NAME
    assert config.freeze_backbone and config.unfreeze_after_epochs == 3.0
    assert tuple(config.dataset.mean) == KERAS_RESNET50_MEAN
    model = models.from_config(config, 5, frozen_backbone=True)
    assert model.frozen_backbone and model.dtype == np.dtype("bfloat16")
    dummy = jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)
    target = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), dummy)
    keras = models.create_model(config.model, NUM_CLASSES, axis_name=None)
    source = jax.eval_shape(lambda x: keras.init(jax.random.key(0), x), dummy)
    _, report = warm_start.match(target, source)
    assert sorted(report["reinitialised"]) == HEAD
    assert report["left_out"] == report["missing"] == []
    assert report["loaded_scalars"] == 25_636_712 - (2048 * 1000 + 1000)  # all but the head
