"""Learning-rate schedules and optimizers from the config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from imgcls.training import optim, schedules


def test_warmup_then_cosine_to_zero():
    config = load_config()
    config.optimizer.learning_rate = 0.4
    config.optimizer.warmup_epochs = 2
    fn = schedules.create_learning_rate_schedule(config, steps_per_epoch=10, num_train_steps=100)
    assert float(fn(0)) == 0.0
    np.testing.assert_allclose(float(fn(10)), 0.2, rtol=1e-6)  # half-way through warmup
    np.testing.assert_allclose(float(fn(20)), 0.4, rtol=1e-6)  # peak
    np.testing.assert_allclose(float(fn(60)), 0.2, rtol=1e-5)  # cosine half-way
    assert float(fn(100)) == pytest.approx(0.0, abs=1e-7)


def test_constant_schedule_after_warmup():
    config = load_config()
    config.optimizer.schedule = "constant"
    config.optimizer.learning_rate = 0.1
    config.optimizer.warmup_epochs = 1
    fn = schedules.create_learning_rate_schedule(config, steps_per_epoch=10, num_train_steps=100)
    np.testing.assert_allclose(float(fn(5)), 0.05, rtol=1e-6)
    np.testing.assert_allclose([float(fn(s)) for s in (10, 50, 99)], 0.1, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_skips_biases(name):
    config = load_config()
    config.optimizer.name = name
    config.optimizer.learning_rate = 0.0  # only weight decay could move anything
    config.optimizer.weight_decay = 0.5
    tx = optim.create_optimizer(config, lambda step: 0.0 if name == "adamw" else 0.1)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros((2,))}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(jnp.abs(updates["bias"]).max()) == 0.0
    if name == "sgd":  # coupled decay: the decay term passes through SGD's learning rate
        assert float(jnp.abs(updates["kernel"]).max()) > 0.0


def test_unknown_optimizer_and_schedule():
    config = load_config()
    config.optimizer.name = "adagrad"
    with pytest.raises(ValueError, match="Unknown optimizer 'adagrad'.*sgd, adamw, lars, lamb"):
        optim.create_optimizer(config, 0.1)
    config.optimizer.schedule = "step"
    with pytest.raises(ValueError, match="Unknown schedule 'step'"):
        schedules.create_learning_rate_schedule(config, 10, 100)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_frozen_backbone_then_scaled_learning_rate(name):
    """Groups 'head' / 'backbone': the backbone's update is exactly 0 until the unfreeze step,
    then the base optimizer's at backbone_learning_rate_scale x the schedule."""
    config = load_config()
    config.optimizer.name = name
    config.optimizer.momentum = 0.0
    config.optimizer.weight_decay = 0.0
    config.freeze_backbone = True
    config.unfreeze_after_epochs = 0.5
    config.backbone_learning_rate_scale = 0.1
    unfreeze = optim.unfreeze_step(config, steps_per_epoch=4)
    assert unfreeze == 2 and optim.backbone_frozen(unfreeze, 1)
    assert not optim.backbone_frozen(unfreeze, 2)
    tx = optim.create_optimizer(config, lambda step: 0.5, unfreeze)
    params = {"Conv_0": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 3))}}
    assert optim.param_groups(params) == {
        "Conv_0": {"kernel": "backbone"},
        "head": {"kernel": "head"},
    }
    grads = jax.tree.map(jnp.ones_like, params)
    opt_state = tx.init(params)
    structure = jax.tree.structure(opt_state)
    for step in range(4):
        updates, opt_state = tx.update(grads, opt_state, params)
        assert jax.tree.structure(opt_state) == structure
        head = float(updates["head"]["kernel"][0, 0])
        backbone = updates["Conv_0"]["kernel"]
        np.testing.assert_allclose(head, -0.5, rtol=1e-4)  # sgd: -lr*g; adam: -lr*sign(g)
        if step < 2:
            assert not np.asarray(backbone).any()  # exactly zero
        else:
            np.testing.assert_allclose(backbone, 0.1 * head, rtol=1e-4)


def test_freezing_options():
    config = load_config()
    assert optim.unfreeze_step(config, 10) is None  # freeze_backbone off: one group, as before
    config.freeze_backbone = True
    assert optim.unfreeze_step(config, 10) == optim.NEVER  # unfreeze_after_epochs < 0
    config.unfreeze_after_epochs = 0.0  # never frozen, but its own learning rate
    assert optim.unfreeze_step(config, 10) == 0 and not optim.backbone_frozen(0, 0)
    with pytest.raises(ValueError, match="module named 'head'"):
        optim.param_groups({"Dense_0": {"kernel": jnp.ones((2, 2))}})


def _layers():
    """A dense kernel and bias and a BatchNorm scale and offset, with their gradients."""
    params = {
        "Dense_0": {"kernel": jnp.full((3, 4), 2.0), "bias": jnp.full((4,), 3.0)},
        "BatchNorm_0": {"scale": jnp.full((4,), 1.5), "bias": jnp.full((4,), -1.0)},
    }
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.25), params)
    grads["Dense_0"]["kernel"] = jnp.full((3, 4), 0.5)
    return params, grads


@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_trust_ratio_and_decay_leave_biases_and_batchnorm_alone(name):
    """The layer-wise trust ratio (and weight decay) apply to kernels only: a bias or BatchNorm
    update is the plain momentum (LARS) or Adam (LAMB) step."""
    config = load_config()
    config.optimizer.name = name
    config.optimizer.weight_decay = 0.1
    lr, momentum, eps = 0.5, config.optimizer.momentum, optim.LAMB_EPS
    tx = optim.create_optimizer(config, lambda step: lr)
    params, grads = _layers()
    updates, _ = tx.update(grads, tx.init(params), params)
    w, g = np.asarray(params["Dense_0"]["kernel"]), np.asarray(grads["Dense_0"]["kernel"])
    if name == "lars":  # first Nesterov step: (1 + momentum) x the learning rate x the update
        step = (1 + momentum) * lr

        def direction(g):
            return g

        decayed = g + 0.1 * w
        ratio = config.optimizer.trust_coefficient * np.linalg.norm(w) / np.linalg.norm(decayed)
    else:  # first Adam step: m / (sqrt(v) + eps) = g / (|g| + eps)
        step = lr

        def direction(g):
            return g / (np.abs(g) + eps)

        decayed = direction(g) + 0.1 * w
        ratio = np.linalg.norm(w) / np.linalg.norm(decayed)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -step * ratio * decayed, rtol=1e-5)
    for layer, key in (("Dense_0", "bias"), ("BatchNorm_0", "scale"), ("BatchNorm_0", "bias")):
        expected = -step * direction(np.asarray(grads[layer][key]))
        np.testing.assert_allclose(updates[layer][key], expected, rtol=1e-4)  # float32 Adam
        assert abs(ratio - 1) > 0.01  # (so a trust-ratio-scaled update would not pass)


def test_gradient_clipping_by_global_norm():
    config = load_config()
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.0
    config.optimizer.weight_decay = 0.0
    config.optimizer.clip_norm = 0.5
    tx = optim.create_optimizer(config, lambda step: 1.0)
    params, grads = _layers()
    norm = float(optax_global_norm(grads))
    assert norm > 0.5
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax_global_norm(updates)) == pytest.approx(0.5, rel=1e-5)
    small = jax.tree.map(lambda g: g * 0.1 / norm, grads)  # below the norm: untouched
    updates, _ = tx.update(small, tx.init(params), params)
    jax.tree.map(lambda u, g: np.testing.assert_allclose(u, -g, rtol=1e-6), updates, small)


def optax_global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


def test_reduce_on_plateau_after_patience_evaluations_without_improvement():
    config = load_config()
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.0
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "plateau"
    config.optimizer.learning_rate = 1.0
    config.optimizer.plateau_patience = 2
    config.optimizer.plateau_factor = 0.5
    config.optimizer.plateau_threshold = 0.01
    config.optimizer.plateau_min_lr = 0.2
    fn = schedules.create_learning_rate_schedule(config, 10, 100)
    assert float(fn(0)) == 0.0 and float(fn(50)) == 1.0  # warmup, then constant
    tx = optim.create_optimizer(config, lambda step: 1.0)
    params, grads = _layers()
    opt_state = tx.init(params)
    scales = []
    # validation losses: better, better, 2 without a 1% improvement (-> x0.5), better, then
    # 4 more without (-> x0.5 twice, but not below plateau_min_lr / learning_rate = 0.2)
    for loss in (1.0, 0.9, 0.895, 0.9, 0.5, 0.6, 0.6, 0.6, 0.6):
        value = schedules.plateau_value(config, {"eval_loss": loss, "eval_accuracy": 0.5})
        new = schedules.observe_plateau(config, schedules.plateau_state(opt_state), value)
        opt_state = schedules.with_plateau_state(opt_state, new)
        scales.append(schedules.plateau_scale(opt_state))
    assert scales == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2])
    updates, _ = tx.update(grads, opt_state, params)  # the step applies the current scale
    jax.tree.map(lambda u, g: np.testing.assert_allclose(u, -0.2 * g, rtol=1e-6), updates, grads)
    config.optimizer.plateau_metric = "accuracy"
    assert schedules.plateau_value(config, {"eval_loss": 1.0, "eval_accuracy": 0.75}) == -0.75
