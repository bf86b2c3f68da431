"""The airbench recipes (configs/cifar10_airbench94.py, 96): network, whitening, optimizer
groups, schedule, alternating flip, lookahead; tiny sizes, plus a short CIFAR-10 JPEG run."""

import os
import pathlib
import signal
import tarfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, load_config
from flax import traverse_util

import imgcls
from imgcls import data, models, parallel
from imgcls.data.augment import jax_ops
from imgcls.data.pipelines import device as device_pipeline
from imgcls.models import airbench
from imgcls.run import checkpointing
from imgcls.training import lookahead, optim, schedules, state
from imgcls.training.preemption import Preempted

SHARED_DATA = pathlib.Path(ROOT).resolve().parent / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.gz"
TINY_WIDTHS = (8, 16, 16)


def correlated_images(n=300, size=8, seed=0):
    """Images whose neighbouring pixels and channels are strongly correlated (as photos)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, size // 2, size // 2, 1))
    smooth = np.repeat(np.repeat(base, 2, axis=1), 2, axis=2)
    return smooth + 0.3 * rng.normal(size=(n, size, size, 3))


def test_whitening_maps_training_patches_to_identity_covariance():
    images = correlated_images()
    kernel = airbench.whitening_filters(images)
    assert kernel.shape == (2, 2, 3, 24)  # the filters and their negatives
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])
    out = jax.lax.conv_general_dilated(
        jnp.asarray(images, jnp.float32),
        jnp.asarray(kernel[..., :12]),
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    flat = np.asarray(out, np.float64).reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)  # uncentred, as the filters are computed
    np.testing.assert_allclose(covariance, np.eye(12), atol=0.02)


def test_the_network_has_the_papers_shape():
    model = models.create_model({"name": "airbench94"}, 10)
    x = jnp.zeros((2, 32, 32, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    assert model.apply(variables, x).shape == (2, 10)
    params = variables["params"]
    assert params["whiten"]["kernel"].shape == (2, 2, 3, 24)
    # BatchNorm without a learned scale; a bias-free head.
    flat = traverse_util.flatten_dict(params)
    assert not [k for k in flat if k[-1] == "scale"]
    assert set(params["head"]) == {"kernel"}
    # The 3x3 convs start as the identity on their first input-many filters (dirac).
    conv = np.asarray(params["ConvGroup_1"]["Conv_0"]["kernel"])  # 3x3, 64 -> 256
    np.testing.assert_array_equal(conv[1, 1, :, :64], np.eye(64))
    np.testing.assert_array_equal(conv[0, 0, :, :64], 0)
    assert models.count_params(params) == 1_971_640  # airbench94: about 2M
    big = models.create_model({"name": "airbench96"}, 10)
    shapes = jax.eval_shape(big.init, jax.random.key(0), x)["params"]  # no need to compile it
    assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == 9_915_704


def test_decoupled_hyperparameters_convert_to_per_step_values():
    lr, coefficient = optim.decoupled_sgd(11.5, 0.0153, 0.85, 1024)
    kilostep = 1024 * (1 + 1 / (1 - 0.85))  # the reference's kilostep_scale
    assert lr == pytest.approx(11.5 / kilostep * 1024)  # PyTorch's lr x the batch (mean loss)
    assert lr == pytest.approx(1.5)
    # Per step the weights shrink by lr x coefficient = the reference's wd = 0.0153 x 1024 / s.
    assert lr * coefficient == pytest.approx(0.0153 * 1024 / kilostep)
    # The same step size whatever the batch: the learning rate is per 1024 examples.
    assert optim.decoupled_sgd(11.5, 0.0153, 0.85, 512)[0] == pytest.approx(0.75)


def airbench_config(**overrides):
    config = load_config("cifar10_airbench94")
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def test_schedule_values_at_the_stated_steps():
    config = airbench_config()
    fn = schedules.create_learning_rate_schedule(config, steps_per_epoch=48, num_train_steps=475)
    peak, warmup, total = 1.5, int(0.23 * 9.9 * 48), 475
    assert warmup == 109
    for step in range(total):  # the reference's get_lr, on this run's length
        if step < warmup:
            expected = 0.2 + 0.8 * step / warmup
        else:
            expected = 1.0 - 0.93 * (step - warmup) / (total - warmup)
        assert float(fn(step)) == pytest.approx(peak * expected, rel=1e-5), step
    big = load_config("cifar10_airbench96")
    fn = schedules.create_learning_rate_schedule(big, steps_per_epoch=48, num_train_steps=1776)
    assert float(fn(0)) == pytest.approx(0.2 * float(fn(177)))  # 10% warm-up from 0.2x
    assert float(fn(1776)) == pytest.approx(0.0, abs=1e-7)  # then linearly to 0


def test_optimizer_groups_follow_the_reference():
    """One SGD step by hand: other parameters at lr with the decay wd / lr, BatchNorm biases at
    64 x lr with a decay 64 x smaller (the same per-step decay), the whitening kernel never,
    the whitening bias only for whiten_bias_epochs."""
    config = airbench_config()
    params = {
        "whiten": {"kernel": jnp.ones((2, 2, 3, 24)), "bias": jnp.ones(24)},
        "ConvGroup_0": {"BatchNorm_0": {"bias": jnp.ones(4)}, "Conv_0": {"kernel": jnp.ones(3)}},
    }
    groups = optim.sgd_groups(config, params)
    assert groups["whiten"] == {"kernel": "frozen", "bias": "whiten_bias"}
    assert groups["ConvGroup_0"] == {
        "BatchNorm_0": {"bias": "norm_bias"},
        "Conv_0": {"kernel": "other"},
    }
    lr, coefficient = optim.decoupled_sgd(11.5, 0.0153, 0.85, 1024)
    tx = optim.create_optimizer(config, lambda count: lr, steps_per_epoch=2)  # 3 epochs: 6 steps
    grads = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), params)
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    nesterov = 1 + 0.85  # the first Nesterov step: (1 + momentum) x the gradient

    def first_step(rate, decay):
        return -nesterov * rate * (0.5 + decay * 1.0)

    conv = updates["ConvGroup_0"]["Conv_0"]["kernel"]
    np.testing.assert_allclose(conv, first_step(lr, coefficient), rtol=1e-6)
    norm = updates["ConvGroup_0"]["BatchNorm_0"]["bias"]
    np.testing.assert_allclose(norm, first_step(64 * lr, coefficient / 64), rtol=1e-6)
    np.testing.assert_array_equal(updates["whiten"]["kernel"], 0)
    np.testing.assert_allclose(updates["whiten"]["bias"], first_step(lr, coefficient), rtol=1e-6)
    for _ in range(5):  # steps 2-6 still train the whitening bias; step 7 does not
        updates, opt_state = tx.update(grads, opt_state, params)
        assert np.all(np.asarray(updates["whiten"]["bias"]) != 0)
    updates, opt_state = tx.update(grads, opt_state, params)
    np.testing.assert_array_equal(updates["whiten"]["bias"], 0)
    assert np.all(np.asarray(updates["ConvGroup_0"]["Conv_0"]["kernel"]) != 0)


def test_lookahead_matches_a_reference_loop():
    """train_step.lookahead against the reference's loop, written out here: every 5 steps
    ema.lerp_(net, 1 - decay) and net.copy_(ema), decay = 0.95^5 (steps / total)^3; after the
    last step the net becomes the ema."""
    total, every = 12, 5
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(total, 3)).astype(np.float32)
    initial = np.zeros(3, np.float32)
    s = state.LookaheadTrainState.create(
        apply_fn=None,
        params={"w": jnp.asarray(initial)},
        batch_stats={"m": jnp.asarray(initial)},
        tx=optax.identity(),
        slow={"params": {"w": jnp.asarray(initial)}, "batch_stats": {"m": jnp.asarray(initial)}},
    )
    net, ema = initial.copy(), initial.copy()
    for step, delta in enumerate(deltas, start=1):
        s = s.replace(
            step=step,
            params={"w": s.params["w"] + delta},
            batch_stats={"m": s.batch_stats["m"] + delta},
        )
        s = lookahead.lookahead(s, every, 0.95, 3.0, total)
        net = net + delta
        if step % every == 0:
            decay = 0.95**5 * (step / total) ** 3
            ema = ema + (1 - decay) * (net - ema)  # torch's lerp_
            net = ema.copy()
        if step >= total:
            net = ema.copy()
        np.testing.assert_allclose(np.asarray(s.params["w"]), net, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(s.batch_stats["m"]), net, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(s.slow["params"]["w"]), ema, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(s.params["w"]), np.asarray(s.slow["params"]["w"]))


def tiny_config(data_dir, **overrides):
    """airbench94's recipe on 32x32 synthetic images, a narrow network, 4 steps per epoch."""
    config = airbench_config(**overrides)
    config.dataset.name = "synthetic"
    config.dataset.data_dir = str(data_dir)
    config.dataset.image_shape = (32, 32, 3)
    config.dataset.num_train_examples = 64
    config.dataset.num_eval_examples = 32
    config.model.widths = TINY_WIDTHS
    config.half_precision = False
    config.batch_size = 16
    config.eval_batch_size = 32
    config.num_train_steps = -1
    config.data_init_images = 48
    config.num_epochs = 3.0
    config.optimizer.warmup_epochs = 0.5
    config.optimizer.whiten_bias_epochs = 1.0
    config.checkpoint_every_steps = 4
    config.keep_checkpoints = 10
    config.log_every_steps = 4
    config.final_report = False
    return config


def variables_at(config, workdir, step):
    with checkpointing.Checkpointer.of_workdir(workdir) as ckpt:
        template, _, _ = state.initial_state(
            config, data.get_dataset_info(config), parallel.create_mesh()
        )
        restored = ckpt.restore(template, step=step)
    return jax.tree.map(np.asarray, restored.params)


def test_whitening_is_set_from_the_data_frozen_and_its_bias_stops(data_dir, tmp_path):
    config = tiny_config(data_dir, lookahead_every=0)  # lookahead would average the bias too
    workdir = str(tmp_path)
    imgcls.train_and_evaluate(config, workdir)
    info = data.get_dataset_info(config)
    expected = state.data_init_values(config, info)[("whiten", "kernel")]
    initial = variables_at(config, workdir, 4)["whiten"]
    later = [variables_at(config, workdir, step)["whiten"] for step in (8, 12)]
    for params in [initial, *later]:  # frozen at the data's whitening filters
        np.testing.assert_array_equal(params["kernel"], expected)
    assert np.any(initial["bias"] != 0)  # trained in epoch 1 (steps 1-4)...
    for params in later:  # ...and not after it
        np.testing.assert_array_equal(params["bias"], initial["bias"])


def test_alternating_flip_mirrors_every_image_in_alternate_epochs_and_resumes(data_dir):
    config = tiny_config(data_dir)
    config.augment.random_crop_padding = 0  # only the flip
    info = data.get_dataset_info(config)
    originals, _ = device_pipeline.load_split(config, info, "train")
    mirrored = originals[:, :, ::-1]
    it = device_pipeline.DeviceTrainIterator(config, info)
    steps = it.steps_per_epoch
    batches = [np.asarray(next(it)["image"]) for _ in range(3 * steps)]
    seen = []
    for epoch in range(3):
        images = np.concatenate(batches[epoch * steps : (epoch + 1) * steps])
        flips = {}
        for image in images:
            plain = np.flatnonzero((originals == image).all(axis=(1, 2, 3)))
            flipped = np.flatnonzero((mirrored == image).all(axis=(1, 2, 3)))
            assert len(plain) + len(flipped) == 1  # each image is one original, or its mirror
            flips[int(plain[0]) if len(plain) else int(flipped[0])] = not len(plain)
        assert sorted(flips) == list(range(len(originals)))  # every image once per epoch
        seen.append(flips)
    assert 0.25 < np.mean(list(seen[0].values())) < 0.75  # a random half first
    for a, b in zip(seen, seen[1:], strict=False):
        assert all(a[i] != b[i] for i in a)  # then the other way round, every epoch
    resumed = device_pipeline.DeviceTrainIterator(config, info, start_step=steps + 1)
    for batch in batches[steps + 1 :]:
        np.testing.assert_array_equal(np.asarray(next(resumed)["image"]), batch)


def test_alternating_flip_and_cutout_need_the_device_pipeline(data_dir):
    config = tiny_config(data_dir)
    config.dataset.pipeline = "tf"
    info = data.get_dataset_info(config)
    with pytest.raises(ValueError, match="alternating_flip=True: only the device input pipeline"):
        data.create_train_iterator(config, info)
    config.dataset.pipeline = "auto"
    config.augment.cutout = 4
    assert data.resolve_pipeline(config, info, log=False).dataset.pipeline == "device"


def test_cutout_fills_one_square_inside_each_image():
    images = jnp.full((16, 12, 12, 3), 255, jnp.uint8)
    out = np.asarray(jax_ops.cutout(images, jax.random.key(0), 5, (1, 2, 3)))
    for image in out:
        filled = (image != 255).all(axis=-1)
        rows, cols = np.flatnonzero(filled.any(axis=1)), np.flatnonzero(filled.any(axis=0))
        assert filled.sum() == 25 and len(rows) == len(cols) == 5
        np.testing.assert_array_equal(image[filled], np.tile([1, 2, 3], (25, 1)))


def test_max_pool_valid_floors_odd_sizes_as_torch():
    x = jax.random.normal(jax.random.key(0), (2, 31, 31, 4))
    from imgcls.models.pooling import max_pool

    np.testing.assert_array_equal(
        max_pool(x, (2, 2), strides=(2, 2), padding="VALID"),
        nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID"),
    )
    assert max_pool(x, (2, 2), strides=(2, 2), padding="VALID").shape == (2, 15, 15, 4)


def interrupt_at(monkeypatch, at_call):
    real = parallel.global_batch
    calls = {"n": 0}

    def interrupting(mesh, batch):
        calls["n"] += 1
        if calls["n"] == at_call:
            signal.raise_signal(signal.SIGINT)
        return real(mesh, batch)

    monkeypatch.setattr(parallel, "global_batch", interrupting)
    return real


@pytest.mark.skipif(not CIFAR_ARCHIVE.exists(), reason=f"{CIFAR_ARCHIVE} not found")
def test_short_run_on_the_cifar10_jpeg_folder_learns_and_resumes_bitwise(
    tmp_path, data_dir, monkeypatch
):
    """airbench94's whole recipe (narrower) on 200 CIFAR-10 JPEGs per class for 4 epochs: well
    above chance with the TTA; interrupted at step 7 (between lookahead syncs) and resumed,
    the same final weights and result bit for bit."""
    root = tmp_path / "cifar"
    with tarfile.open(CIFAR_ARCHIVE) as tar:
        wanted = [
            m
            for m in tar.getmembers()
            if m.isfile()
            and (
                (m.name.split("/")[-3:-2] == ["train"] and os.path.basename(m.name) < "0200")
                or (m.name.split("/")[-3:-2] == ["test"] and os.path.basename(m.name) < "0050")
            )
        ]
        tar.extractall(root, members=wanted, filter="data")
    top = next(p for p in root.rglob("train") if p.is_dir()).parent
    config = airbench_config()
    config.dataset.name = "folder"
    config.dataset.path = str(top)
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.dataset.train_split = "train"
    config.dataset.eval_split = "test"
    config.dataset.validation_fraction = 0.0
    config.model.widths = (16, 32, 32)
    config.half_precision = False
    config.batch_size = 200
    config.eval_batch_size = 500
    config.num_train_steps = -1
    config.num_epochs = 4.0  # 40 steps
    config.optimizer.warmup_epochs = 0.23 * 4.0
    config.checkpoint_every_steps = 20
    config.log_every_steps = 10
    config.final_report = False
    full = imgcls.train_and_evaluate(config, str(tmp_path / "full"))
    print(f"airbench94 (16/32/32), 2,000 CIFAR-10 JPEGs, 40 steps: {full['eval_accuracy']:.4f}")
    assert full["eval_accuracy"] > 0.25, full  # chance: 0.1 (0.314 on the dev machine)

    real = interrupt_at(monkeypatch, 7)
    with pytest.raises(Preempted):
        imgcls.train_and_evaluate(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(parallel, "global_batch", real)
    resumed = imgcls.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed == full
    a = variables_at(config, str(tmp_path / "full"), 40)
    b = variables_at(config, str(tmp_path / "resumed"), 40)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
