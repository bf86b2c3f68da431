"""Learning-rate schedules and optimizers from the config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from imgcls import optim


def test_warmup_then_cosine_to_zero():
    config = load_config()
    config.optimizer.learning_rate = 0.4
    config.optimizer.warmup_epochs = 2
    fn = optim.create_learning_rate_schedule(config, steps_per_epoch=10, num_train_steps=100)
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
    fn = optim.create_learning_rate_schedule(config, steps_per_epoch=10, num_train_steps=100)
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
    with pytest.raises(ValueError, match="Unknown optimizer 'adagrad'.*sgd, adamw"):
        optim.create_optimizer(config, 0.1)
    config.optimizer.schedule = "step"
    with pytest.raises(ValueError, match="Unknown schedule 'step'"):
        optim.create_learning_rate_schedule(config, 10, 100)


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
