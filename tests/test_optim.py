"""Learning-rate schedules and optimizers from the config."""

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
