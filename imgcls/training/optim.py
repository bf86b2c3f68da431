"""Optimizer and learning-rate schedule, built from `config.optimizer`.

With `config.freeze_backbone` the parameters are split into two groups with
`optax.multi_transform`: 'head' (every parameter under a module named `head`, the classifier of
every model here) and 'backbone' (the rest). Both run the same optimizer, so the optimizer state
has one structure for the whole run (checkpoints and resume do not care whether the backbone is
frozen yet); the backbone's learning rate is 0 until `unfreeze_step` and then
`config.backbone_learning_rate_scale` x the schedule's.

Recipes that treat parameters differently (the CIFAR-10 speed runs: `config.optimizer.decoupled`,
`bias_lr_scale`, `whiten_bias_epochs`, a model's frozen parameters) get their groups from
`sgd_groups`; every other config builds exactly the optimizer it always did.

Two wrappers act on the whole update, outside the groups: gradient clipping by global norm
(`config.optimizer.clip_norm`, first) and, with `config.optimizer.schedule='plateau'`, the
reduce-on-plateau scale (last), whose state the training loop advances after each validation
(`observe_plateau`). Off, neither exists, and the optimizer state is what it always was.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from optax.contrib import reduce_on_plateau

from imgcls import models
from imgcls.config.choices import OPTIMIZERS
from imgcls.models import contract
from imgcls.models.airbench import WHITEN_NAME

KILO = 1024  # the examples per step that airbench's decoupled hyperparameters refer to


def decoupled_sgd(learning_rate: float, weight_decay: float, momentum: float, batch_size: int):
    """(learning rate, weight-decay coefficient) of SGD on the batch's mean loss equal to
    airbench's decoupled hyperparameters.

    There, `learning_rate` and `weight_decay` are per 1024 examples of a summed loss, and the
    step size is divided by 1 + 1 / (1 - momentum), the gain of (Nesterov) momentum on a
    constant gradient, so that each can be tuned alone: PyTorch's lr = learning_rate / s and
    weight decay = weight_decay x batch_size / s with s = 1024 (1 + 1 / (1 - momentum)), the
    decay given as weight_decay / lr to the optimizer. On the mean loss (the gradient 1 /
    batch_size of the sum's) that is lr x batch_size, and the coefficient added to the
    gradient before momentum becomes weight_decay / learning_rate: per step, the weights
    shrink by their product, weight_decay x batch_size / s, whatever the learning rate.
    """
    kilostep = KILO * (1 + 1 / (1 - momentum))
    return learning_rate * batch_size / kilostep, weight_decay / learning_rate


def peak_learning_rate(config) -> float:
    """The schedule's peak, per step (config.optimizer.decoupled converted)."""
    opt = config.optimizer
    if opt.decoupled:
        return decoupled_sgd(opt.learning_rate, opt.weight_decay, opt.momentum, config.batch_size)[
            0
        ]
    return opt.learning_rate


def _decay_mask(params):
    """Weight decay applies to kernels only, not to biases or BatchNorm scales/offsets."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(
    config, learning_rate_fn, unfreeze_step: int | None = None, steps_per_epoch: int = 0
) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum and coupled weight decay, or AdamW (decoupled).

    With `unfreeze_step` (see `unfreeze_step()`; None: one group, as without freezing) the head
    follows `learning_rate_fn` and the backbone `backbone_schedule(...)`. Configs with
    parameter groups (`uses_groups`) get `grouped_sgd`; whiten_bias_epochs counts epochs of
    `steps_per_epoch` steps.
    """
    if uses_groups(config):
        if unfreeze_step is not None:
            raise ValueError(
                "config.freeze_backbone cannot be combined with config.optimizer.decoupled, "
                "bias_lr_scale, whiten_bias_epochs or a model with frozen parameters."
            )
        return _with_wrappers(config, grouped_sgd(config, learning_rate_fn, steps_per_epoch))
    if unfreeze_step is None:
        return _with_wrappers(config, _base_optimizer(config, learning_rate_fn))
    backbone_lr = backbone_schedule(
        learning_rate_fn, unfreeze_step, config.backbone_learning_rate_scale
    )
    grouped = optax.multi_transform(
        {
            HEAD: _base_optimizer(config, learning_rate_fn),
            BACKBONE: _base_optimizer(config, backbone_lr),
        },
        param_groups,
    )
    return _with_wrappers(config, grouped)


def _with_wrappers(config, tx) -> optax.GradientTransformation:
    """`tx` after global-norm clipping and before the plateau scale, when they are on."""
    opt = config.optimizer
    if opt.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(opt.clip_norm), tx)
    if uses_plateau(config):
        tx = optax.chain(tx, _plateau_scale(config))
    return tx


def _sgd(opt, learning_rate_fn, weight_decay, mask) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum and weight decay added to the gradient (masked)."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.sgd(learning_rate_fn, momentum=opt.momentum or None, nesterov=opt.nesterov),
    )


def _base_optimizer(config, learning_rate_fn) -> optax.GradientTransformation:
    opt = config.optimizer
    if opt.name == "sgd":
        return _sgd(opt, learning_rate_fn, opt.weight_decay, _decay_mask)
    if opt.name == "adamw":
        return optax.adamw(
            learning_rate_fn, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=_decay_mask
        )
    if opt.name == "lars":  # biases and BatchNorm: neither decayed nor trust-ratio scaled
        return optax.lars(
            learning_rate_fn,
            weight_decay=opt.weight_decay,
            weight_decay_mask=_decay_mask,
            trust_coefficient=opt.trust_coefficient,
            trust_ratio_mask=_decay_mask,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
        )
    if opt.name == "lamb":
        # optax.lamb, except that biases and BatchNorm are also kept out of the trust ratio (as
        # in the LAMB paper's BERT code and big_vision), not only out of weight decay.
        return optax.chain(
            optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=LAMB_EPS),
            optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask),
            optax.masked(optax.scale_by_trust_ratio(), _decay_mask),
            optax.scale_by_learning_rate(learning_rate_fn),
        )
    raise ValueError(
        f"Unknown optimizer '{opt.name}' (config.optimizer.name). "
        f"Valid optimizers: {', '.join(OPTIMIZERS)}."
    )


FROZEN, NORM_BIAS, WHITEN_BIAS, OTHER = "frozen", "norm_bias", "whiten_bias", "other"


def uses_groups(config) -> bool:
    opt = config.optimizer
    return bool(
        opt.decoupled
        or opt.bias_lr_scale != 1.0
        or opt.whiten_bias_epochs >= 0
        or models.frozen_params(config.model.name)
    )


def _key_names(path) -> tuple[str, ...]:
    return tuple(contract.key_name(key) for key in path)


def sgd_groups(config, params):
    """The group of every parameter: 'frozen' (the model's FROZEN paths), 'whiten_bias' (a
    whitening layer's bias, with whiten_bias_epochs >= 0), 'norm_bias' (BatchNorm biases) or
    'other'."""
    frozen = set(models.frozen_params(config.model.name))
    whiten_bias = config.optimizer.whiten_bias_epochs >= 0

    def group(path, _):
        names = _key_names(path)
        if names in frozen:
            return FROZEN
        if whiten_bias and names == (WHITEN_NAME, "bias"):
            return WHITEN_BIAS
        if names[-1] == "bias" and any("norm" in n.lower() for n in names[:-1]):
            return NORM_BIAS
        return OTHER

    return jax.tree_util.tree_map_with_path(group, params)


def grouped_sgd(config, learning_rate_fn, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD (Nesterov) over `sgd_groups`: frozen parameters never change; BatchNorm biases
    learn bias_lr_scale x faster with the same per-step decay; the whitening bias stops after
    whiten_bias_epochs. With config.optimizer.decoupled, learning_rate_fn is already per step
    (peak_learning_rate) and weight decay applies to every parameter, as in airbench;
    otherwise weight decay is coupled and on kernels only, as `_base_optimizer`'s."""
    opt = config.optimizer
    if opt.name != "sgd":
        raise ValueError(
            f"config.optimizer.name={opt.name!r}: decoupled, bias_lr_scale, whiten_bias_epochs "
            "and models with frozen parameters (airbench) need 'sgd'."
        )
    scale = float(opt.bias_lr_scale)
    if opt.decoupled:
        decay = decoupled_sgd(opt.learning_rate, opt.weight_decay, opt.momentum, 1)[1]
        mask = None
    else:
        decay, mask = opt.weight_decay, _decay_mask

    def sgd(lr_fn, coefficient):
        return _sgd(opt, lr_fn, coefficient, mask)

    whiten_epochs = opt.whiten_bias_epochs
    if whiten_epochs >= 0 and steps_per_epoch <= 0:
        raise ValueError("config.optimizer.whiten_bias_epochs needs the run's steps_per_epoch.")
    whiten_steps = int(round(whiten_epochs * steps_per_epoch))
    return optax.multi_transform(
        {
            FROZEN: optax.set_to_zero(),
            NORM_BIAS: sgd(lambda count: scale * learning_rate_fn(count), decay / scale),
            WHITEN_BIAS: sgd(
                lambda count: jnp.where(count < whiten_steps, learning_rate_fn(count), 0.0), decay
            ),
            OTHER: sgd(learning_rate_fn, decay),
        },
        functools.partial(sgd_groups, config),
    )


LAMB_EPS = 1e-6  # optax.lamb's (and the LAMB paper's) epsilon
HEAD, BACKBONE = "head", "backbone"  # the parameter groups of config.freeze_backbone
# unfreeze_step() when the backbone never unfreezes (unfreeze_after_epochs < 0): int32 max.
NEVER = 2**31 - 1


def param_groups(params):
    """'head' or 'backbone' for every leaf of a parameter tree (optax.multi_transform labels)."""
    groups = jax.tree_util.tree_map_with_path(
        lambda path, _: HEAD if contract.is_head(path) else BACKBONE, params
    )
    if HEAD not in jax.tree.leaves(groups):
        raise ValueError(
            "config.freeze_backbone needs a classifier module named 'head' (every imgcls model "
            "has one); this model's parameters have none."
        )
    return groups


def unfreeze_step(config, steps_per_epoch: int) -> int | None:
    """The first step that trains the backbone; None when config.freeze_backbone is off.

    0 (unfreeze_after_epochs=0) never freezes but still gives the backbone its own learning
    rate; NEVER (unfreeze_after_epochs < 0) keeps it frozen for the whole run.
    """
    if not config.freeze_backbone:
        return None
    if config.unfreeze_after_epochs < 0:
        return NEVER
    return min(NEVER, int(round(config.unfreeze_after_epochs * steps_per_epoch)))


def backbone_frozen(unfreeze: int | None, step: int) -> bool:
    """Whether the backbone is frozen at `step` (before its update) given unfreeze_step()."""
    return unfreeze is not None and step < unfreeze


def backbone_schedule(learning_rate_fn, unfreeze: int, scale: float):
    """0 before step `unfreeze`, then `scale` x learning_rate_fn.

    A learning rate of exactly 0 makes the backbone's updates exactly zero (-0 x finite), so its
    parameters stay bitwise unchanged while frozen; its gradients still feed the optimizer's
    moments, so Adam's statistics are warm (not biased towards 0) when it unfreezes.
    """

    def schedule(count):
        return jnp.where(count < unfreeze, 0.0, scale * learning_rate_fn(count))

    return schedule


def uses_plateau(config) -> bool:
    return config.optimizer.schedule == "plateau"


def plateau_transform(config) -> optax.GradientTransformationExtraArgs:
    """optax's reduce-on-plateau, fed one validation value per call (a decrease improves)."""
    opt = config.optimizer
    peak = opt.learning_rate
    return reduce_on_plateau(
        factor=opt.plateau_factor,
        patience=opt.plateau_patience,
        rtol=opt.plateau_threshold,
        min_scale=opt.plateau_min_lr / peak if peak > 0 else 0.0,
    )


def _plateau_scale(config) -> optax.GradientTransformation:
    """Multiplies the updates by the plateau state's scale and leaves the state alone: the
    train step only applies the scale, observe_plateau (after each validation) changes it."""
    plateau = plateau_transform(config)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: state.scale.astype(u.dtype) * u, updates), state

    return optax.GradientTransformation(plateau.init, update)
