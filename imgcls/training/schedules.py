"""Learning-rate schedules, built from `config.optimizer`, and reduce-on-plateau's observer.

The schedule (linear warmup, then cosine, constant or linear) is a function of the step that
the optimizer (imgcls.training.optim) follows. config.optimizer.schedule='plateau' is constant,
multiplied by a scale that the optimizer state holds (optim.plateau_transform) and `Plateau`
lowers after validations that do not improve; off, nothing of it exists.
"""

import functools

import jax
import optax
from absl import logging

from imgcls import parallel
from imgcls.config.choices import SCHEDULES
from imgcls.training import optim


def create_learning_rate_schedule(config, steps_per_epoch: int, num_train_steps: int):
    """Linear warmup from 0 to the peak rate, then cosine decay to 0 (or constant)."""
    opt = config.optimizer
    peak = optim.peak_learning_rate(config)
    warmup_steps = min(int(opt.warmup_epochs * steps_per_epoch), num_train_steps)
    if opt.schedule == "linear":
        start, end = opt.warmup_start_scale * peak, opt.end_scale * peak
        decay = optax.linear_schedule(peak, end, max(1, num_train_steps - warmup_steps))
        if warmup_steps == 0:
            return decay
        warmup = optax.linear_schedule(start, peak, warmup_steps)
        return optax.join_schedules([warmup, decay], [warmup_steps])
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak,
            warmup_steps=warmup_steps,
            decay_steps=max(num_train_steps, warmup_steps + 1),
            end_value=0.0,
        )
    if opt.schedule in ("constant", "plateau"):  # plateau: the loop scales it (observe_plateau)
        if warmup_steps == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup_steps), optax.constant_schedule(peak)],
            [warmup_steps],
        )
    raise ValueError(
        f"Unknown schedule '{opt.schedule}' (config.optimizer.schedule). "
        f"Valid schedules: {', '.join(SCHEDULES)}."
    )


def plateau_value(config, eval_metrics: dict) -> float:
    """The validation value reduce-on-plateau minimises: the loss, or minus the accuracy."""
    if config.optimizer.plateau_metric == "accuracy":
        return -float(eval_metrics["eval_accuracy"])
    return float(eval_metrics["eval_loss"])


def observe_plateau(config, plateau_state, value):
    """The plateau state after one validation `value` (jittable): after plateau_patience
    values without improvement the scale falls by plateau_factor, down to
    plateau_min_lr / learning_rate."""
    _, plateau_state = optim.plateau_transform(config).update({}, plateau_state, value=value)
    return plateau_state


def plateau_state(opt_state):
    """The reduce-on-plateau state of an optimizer state: the last entry of the outer chain."""
    return opt_state[-1]


def with_plateau_state(opt_state, new_state):
    return (*opt_state[:-1], new_state)


def plateau_scale(opt_state) -> float:
    """The current reduce-on-plateau factor on the schedule's learning rate."""
    return float(plateau_state(opt_state).scale)


class Plateau:
    """config.optimizer.schedule='plateau': feeds each validation result to the optimizer
    state's reduce-on-plateau scale (observe_plateau), logging when it falls."""

    def __init__(self, config, mesh):
        self.config = config
        self.update = jax.jit(
            functools.partial(observe_plateau, config),
            out_shardings=parallel.replicated(mesh),
        )

    def observe(self, state, eval_metrics):
        before = plateau_scale(state.opt_state)
        value = plateau_value(self.config, eval_metrics)
        new = self.update(plateau_state(state.opt_state), value)
        state = state.replace(opt_state=with_plateau_state(state.opt_state, new))
        after = plateau_scale(state.opt_state)
        if after < before:
            logging.info(
                "Validation %s has not improved for %d evaluations: learning rate x%g (now x%g "
                "the schedule's).",
                self.config.optimizer.plateau_metric,
                self.config.optimizer.plateau_patience,
                after / before,
                after,
            )
        return state
