"""Optimizer and learning-rate schedule, built from `config.optimizer`."""

import jax
import optax

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


def create_learning_rate_schedule(config, steps_per_epoch: int, num_train_steps: int):
    """Linear warmup from 0 to the peak rate, then cosine decay to 0 (or constant)."""
    opt = config.optimizer
    peak = opt.learning_rate
    warmup_steps = min(int(opt.warmup_epochs * steps_per_epoch), num_train_steps)
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak,
            warmup_steps=warmup_steps,
            decay_steps=max(num_train_steps, warmup_steps + 1),
            end_value=0.0,
        )
    if opt.schedule == "constant":
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


def _decay_mask(params):
    """Weight decay applies to kernels only, not to biases or BatchNorm scales/offsets."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(config, learning_rate_fn) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum and coupled weight decay, or AdamW (decoupled)."""
    opt = config.optimizer
    if opt.name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask),
            optax.sgd(learning_rate_fn, momentum=opt.momentum or None, nesterov=opt.nesterov),
        )
    if opt.name == "adamw":
        return optax.adamw(
            learning_rate_fn, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=_decay_mask
        )
    raise ValueError(
        f"Unknown optimizer '{opt.name}' (config.optimizer.name). "
        f"Valid optimizers: {', '.join(OPTIMIZERS)}."
    )
