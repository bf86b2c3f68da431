"""Exponential moving average of the weights (config.ema_decay), as timm's ModelEma keeps it.

An average of the recent weights often evaluates better than the last ones, at the cost of
one more copy of the variables. The average covers the parameters and the BatchNorm
statistics, lives in the TrainState (`ema`, a {'params', 'batch_stats'} dict) and so in every
checkpoint of a run that has it; a run without it has no `ema` at all, and its checkpoints are
what they always were. The update is a pure function of the state, so a resumed run continues
it exactly. Where the EMA lives elsewhere: the state class (imgcls.training.state.EmaTrainState),
the step's update (imgcls.training.step), validation of both weights (eval_ema_*, the best
checkpoint by the better one: imgcls.run.checkpointing), and --weights=ema|raw of eval, predict,
export and serve (imgcls.run.restore).

With ema_warmup_power p > 0 the decay of update t (t = 1 for the first) is
min(ema_decay, 1 - t^-p), timm's ModelEmaV3 warm-up (gamma 1): early averages do not drag the
random initialisation along for thousands of steps.
"""

import jax
import jax.numpy as jnp


def enabled(config) -> bool:
    """Whether `config` keeps an EMA of the weights."""
    return config.ema_decay > 0


def decay_at(step, decay: float, warmup_power: float):
    """The decay of the update made by train step `step` (0 for the first step)."""
    decay = jnp.asarray(decay, jnp.float32)
    if warmup_power <= 0:
        return decay
    updates = jnp.asarray(step, jnp.float32) + 1.0
    return jnp.minimum(decay, 1.0 - updates ** (-warmup_power))


def update(average, variables, decay):
    """decay * average + (1 - decay) * variables, leaf by leaf, in each leaf's dtype."""

    def mix(old, new):
        d = decay.astype(old.dtype)
        return d * old + (1 - d) * new

    return jax.tree.map(mix, average, variables)


def initial(variables) -> dict:
    """The average before any step: the variables themselves (a copy, not an alias)."""
    return jax.tree.map(jnp.copy, variables)
