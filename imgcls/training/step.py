"""The per-device train step and its data-parallel (jit + shard_map) form.

Written pmap-style: each device sees its shard of the global batch and reduces gradients and
BatchNorm statistics over the 'data' mesh axis. The options of the config that live inside the
step (mixup/cutmix, class weights, gradient accumulation, the moving average of the weights,
lookahead) are one frozen StepOptions, built once from the config; each is a Python value read
when the step is traced, so an option that is off adds nothing to the computation. Imports and
runs without TensorFlow.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from imgcls import parallel
from imgcls.data.augment import jax_ops
from imgcls.data.normalize import mean_std, normalize
from imgcls.evaluation import metrics as metrics_lib
from imgcls.losses import soft_cross_entropy
from imgcls.models import contract
from imgcls.training import ema, lookahead

AXIS = parallel.AXIS


def dropout_rng(seed: int, step, device_index):
    """A fresh dropout key per step and device, derived from the seed alone (no RNG state)."""
    key = jax.random.fold_in(jax.random.key(seed), 1)
    return jax.random.fold_in(jax.random.fold_in(key, step), device_index)


def mixing_rng(seed: int, step, device_index):
    """The mixup/cutmix key of a step and device (independent of the dropout key)."""
    key = jax.random.fold_in(jax.random.key(seed), 2)
    return jax.random.fold_in(jax.random.fold_in(key, step), device_index)


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What the train step reads of the config, fixed when the step is made (`from_config`).

    Each field is a Python value read while the step is traced: an option that is off adds
    nothing to the computation. mixup/cutmix mix this device's examples (soft targets);
    class_weights (one per class) weight each example's loss by its target class; with
    grad_accum_steps = k > 1 the shard is cut into k micro-batches whose gradients are averaged
    (`accumulate`; unroll_accumulation: its `unroll`); with ema_decay > 0 the state's `ema`
    follows the new weights (imgcls.training.ema); with lookahead_every > 0 the weights return
    to their slow average (imgcls.training.lookahead), which needs the run's total_steps.
    """

    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    metrics_cls: type
    label_smoothing: float
    mixup: float
    cutmix: float
    class_weights: tuple[float, ...] | None
    grad_accum_steps: int
    unroll_accumulation: bool
    ema_decay: float
    ema_warmup_power: float
    lookahead_every: int
    lookahead_decay: float
    lookahead_power: float
    total_steps: int

    @classmethod
    def from_config(cls, config, num_classes: int, mesh, class_weights=None, total_steps=0):
        lookahead_every = int(config.lookahead_every)
        if lookahead_every > 0 and total_steps <= 0:
            raise ValueError("config.lookahead_every > 0 needs the run's total_steps.")
        mean, std = mean_std(config)
        return cls(
            seed=config.seed,
            mean=mean,
            std=std,
            num_classes=num_classes,
            metrics_cls=metrics_lib.metrics_collection(num_classes),
            label_smoothing=config.label_smoothing,
            mixup=float(config.augment.mixup),
            cutmix=float(config.augment.cutmix),
            class_weights=None if class_weights is None else tuple(class_weights),
            grad_accum_steps=int(config.grad_accum_steps),
            unroll_accumulation=all(d.platform == "cpu" for d in mesh.devices.flat),
            ema_decay=float(config.ema_decay),
            ema_warmup_power=float(config.ema_warmup_power),
            lookahead_every=lookahead_every,
            lookahead_decay=float(config.lookahead_decay),
            lookahead_power=float(config.lookahead_power),
            total_steps=int(total_steps),
        )


def train_step(state, batch, options: StepOptions):
    """One SGD step on this device's shard; gradients and BatchNorm statistics sync over 'data'.

    Returns (state, this step's metrics, finite): a step whose loss, gradients or BatchNorm
    statistics are not finite leaves the state unchanged but for the step count (`guarded`).
    """
    images, targets, rng = _inputs(state, batch, options)
    grads, (per_example, logits, batch_stats) = _gradients(state, images, targets, rng, options)
    grads = lax.pmean(grads, AXIS)
    new_state = _updated(state, grads, batch_stats, options)
    step_metrics = options.metrics_cls.gather_from_model_output(
        axis_name=AXIS, loss=per_example, logits=logits, labels=batch["label"], targets=targets
    )
    loss = lax.pmean(per_example.mean(), AXIS)
    return guarded(state, new_state, step_metrics, loss, (grads, batch_stats))


def _inputs(state, batch, options: StepOptions):
    """(normalized images, targets, dropout key) of this device's shard, mixed when asked."""
    o = options
    images = normalize(batch["image"], o.mean, o.std)
    device = lax.axis_index(AXIS)
    rng = dropout_rng(o.seed, state.step, device)
    targets = jax.nn.one_hot(batch["label"], o.num_classes)
    if o.mixup or o.cutmix:
        key = mixing_rng(o.seed, state.step, device)
        images, targets = jax_ops.mix(images, targets, key, o.mixup, o.cutmix)
    return images, targets, rng


def _gradients(state, images, targets, rng, options: StepOptions):
    """(gradients, (per-example losses, logits, new BatchNorm statistics)) of the shard."""
    o = options

    def loss_fn(params, batch_stats, images, targets, rng):
        variables = {contract.PARAMS: params, contract.BATCH_STATS: batch_stats}
        logits, updates = state.apply_fn(
            variables, images, train=True, rngs={"dropout": rng}, mutable=[contract.BATCH_STATS]
        )
        per_example = soft_cross_entropy(logits, targets, o.label_smoothing)
        if o.class_weights is not None:
            per_example = per_example * (targets @ jnp.asarray(o.class_weights, jnp.float32))
        new_stats = updates.get(contract.BATCH_STATS, batch_stats)
        return per_example.mean(), (per_example, logits, new_stats)

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if o.grad_accum_steps > 1:
        return accumulate(
            grad_fn,
            state.params,
            state.batch_stats,
            images,
            targets,
            rng,
            o.grad_accum_steps,
            o.unroll_accumulation,
        )
    return grad_fn(state.params, state.batch_stats, images, targets, rng)


def _updated(state, grads, batch_stats, options: StepOptions):
    """The state after the optimizer's update, then the EMA's and lookahead's (when on)."""
    o = options
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if o.ema_decay > 0:
        decay = ema.decay_at(state.step, o.ema_decay, o.ema_warmup_power)
        trained = contract.variables_of(new_state)
        new_state = new_state.replace(ema=ema.update(state.ema, trained, decay))
    if o.lookahead_every > 0:
        new_state = lookahead.lookahead(
            new_state, o.lookahead_every, o.lookahead_decay, o.lookahead_power, o.total_steps
        )
    return new_state


def guarded(state, new_state, step_metrics, loss, checked):
    """(new_state, step_metrics, finite), or where the loss or an array of `checked` (the
    gradients and new BatchNorm statistics) is not finite, (state with only its step count
    advanced, empty metrics, False): the loop decides whether to go on.

    The new weights are not checked: from finite gradients they are finite unless an update
    passes 3e38, and checking them costs a pass over every weight before the select can run (5%
    of resnet18's step on a CPU, which otherwise fuses the select into the update).
    """
    finite = jnp.isfinite(loss) & all_finite(checked)
    skipped = state.replace(step=new_state.step)
    state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, skipped)
    step_metrics = jax.tree.map(lambda m: jnp.where(finite, m, jnp.zeros_like(m)), step_metrics)
    return state, step_metrics, finite


def accumulate(grad_fn, params, batch_stats, images, targets, rng, steps: int, unroll=False):
    """The gradient of the whole shard as the mean of `steps` micro-batch gradients.

    The micro-batches run one after another in a lax.scan, so only one micro-batch's
    activations are alive at a time (a batch that does not fit in memory still trains).
    unroll=True unrolls the scan (the same values), for CPUs: XLA:CPU compiles the
    kernel-gradient convolutions inside a loop body to a slow generic kernel (the cnn's step
    with 4 micro-batches of batch 256 took 211 ms looped, 17 ms unrolled), and on a CPU memory
    is seldom what accumulation is for.
    BatchNorm normalises each micro-batch by its own statistics and updates its running
    averages once per micro-batch, as `steps` smaller steps would; without BatchNorm the result
    equals one step on the whole shard up to floating-point rounding. Dropout draws a key per
    micro-batch. Returns (gradients, (per-example losses, logits, batch_stats)) like grad_fn,
    with the per-example outputs in the shard's order.
    """
    size = images.shape[0]
    if size % steps:
        raise ValueError(
            f"A device's batch of {size} examples cannot be cut into config.grad_accum_steps="
            f"{steps} equal micro-batches; make config.batch_size a multiple of "
            f"{steps} x the number of devices."
        )

    def micro(x):
        return x.reshape((steps, size // steps, *x.shape[1:]))

    def body(carry, inputs):
        total, stats = carry
        micro_images, micro_targets, index = inputs
        micro_rng = jax.random.fold_in(rng, index)
        grads, (per_example, logits, stats) = grad_fn(
            params, stats, micro_images, micro_targets, micro_rng
        )
        return (jax.tree.map(jnp.add, total, grads), stats), (per_example, logits)

    zeros = jax.tree.map(jnp.zeros_like, params)
    inputs = (micro(images), micro(targets), jnp.arange(steps))
    (total, batch_stats), (per_example, logits) = lax.scan(
        body, (zeros, batch_stats), inputs, unroll=unroll
    )
    grads = jax.tree.map(lambda g: g / steps, total)
    return grads, (per_example.reshape(size), logits.reshape(size, -1), batch_stats)


def all_finite(tree):
    """Whether every element of every array of `tree` is finite (one boolean)."""
    flags = [jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)]
    return jnp.stack(flags).all() if flags else jnp.array(True)


def make_train_step(config, num_classes: int, mesh, class_weights=None, total_steps: int = 0):
    """The data-parallel (jit + shard_map) train step f(state, global batch) -> (state,
    metrics, finite); the state's buffers are donated. total_steps: the run's length, which
    config.lookahead_every needs."""
    options = StepOptions.from_config(config, num_classes, mesh, class_weights, total_steps)
    return parallel.data_parallel(
        functools.partial(train_step, options=options),
        mesh,
        in_specs=(P(), P(AXIS)),
        out_specs=(P(), P(), P()),
        donate_argnums=(0,),
    )
