"""The per-device train step and its data-parallel (jit + shard_map) form.

Written pmap-style: each device sees its shard of the global batch and reduces gradients and
BatchNorm statistics over the 'data' mesh axis. Options of the config that live inside the
step: mixup/cutmix, class weights, gradient accumulation (config.grad_accum_steps), the
moving average of the weights (config.ema_decay, imgcls.training.ema) and lookahead
(config.lookahead_every). Each is a Python value read
when the step is traced; off, it adds nothing to the computation, so configs that do not use
it train exactly as before it existed. Imports and runs without TensorFlow.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from imgcls import parallel
from imgcls.data.augment import jax_ops as jax_augment
from imgcls.data.normalize import mean_std, normalize
from imgcls.evaluation import metrics as metrics_lib
from imgcls.losses import soft_cross_entropy
from imgcls.training import ema

AXIS = parallel.AXIS


def dropout_rng(seed: int, step, device_index):
    """A fresh dropout key per step and device, derived from the seed alone (no RNG state)."""
    key = jax.random.fold_in(jax.random.key(seed), 1)
    return jax.random.fold_in(jax.random.fold_in(key, step), device_index)


def mixing_rng(seed: int, step, device_index):
    """The mixup/cutmix key of a step and device (independent of the dropout key)."""
    key = jax.random.fold_in(jax.random.key(seed), 2)
    return jax.random.fold_in(jax.random.fold_in(key, step), device_index)


def train_step(
    state,
    batch,
    *,
    seed,
    mean,
    std,
    label_smoothing,
    metrics_cls,
    num_classes,
    mixup=0.0,
    cutmix=0.0,
    class_weights=None,
    grad_accum_steps=1,
    unroll_accumulation=False,
    ema_decay=0.0,
    ema_warmup_power=0.0,
    lookahead_every=0,
    lookahead_decay=0.95,
    lookahead_power=3.0,
    total_steps=0,
):
    """One SGD step on this device's shard; gradients and BatchNorm statistics sync over 'data'.

    mixup/cutmix mix this device's examples (soft targets); class_weights (one per class)
    weight each example's loss by its target class, for imbalanced datasets. With
    grad_accum_steps = k > 1 the shard is cut into k micro-batches whose gradients are averaged
    (see `accumulate`; unroll_accumulation: `accumulate`'s `unroll`); with ema_decay > 0 the
    state's `ema` follows the new weights; with lookahead_every > 0, `lookahead`.
    """
    images = normalize(batch["image"], mean, std)
    labels = batch["label"]
    device = lax.axis_index(AXIS)
    rng = dropout_rng(seed, state.step, device)
    targets = jax.nn.one_hot(labels, num_classes)
    if mixup or cutmix:
        images, targets = jax_augment.mix(
            images, targets, mixing_rng(seed, state.step, device), mixup, cutmix
        )

    def loss_fn(params, batch_stats, images, targets, rng):
        variables = {"params": params, "batch_stats": batch_stats}
        logits, updates = state.apply_fn(
            variables, images, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
        )
        per_example = soft_cross_entropy(logits, targets, label_smoothing)
        if class_weights is not None:
            per_example = per_example * (targets @ jnp.asarray(class_weights, jnp.float32))
        return per_example.mean(), (per_example, logits, updates.get("batch_stats", batch_stats))

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if grad_accum_steps > 1:
        grads, (per_example, logits, batch_stats) = accumulate(
            grad_fn,
            state.params,
            state.batch_stats,
            images,
            targets,
            rng,
            grad_accum_steps,
            unroll_accumulation,
        )
    else:
        grads, (per_example, logits, batch_stats) = grad_fn(
            state.params, state.batch_stats, images, targets, rng
        )
    grads = lax.pmean(grads, AXIS)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if ema_decay > 0:
        decay = ema.decay_at(state.step, ema_decay, ema_warmup_power)
        trained = {"params": new_state.params, "batch_stats": new_state.batch_stats}
        new_state = new_state.replace(ema=ema.update(state.ema, trained, decay))
    if lookahead_every > 0:
        new_state = lookahead(
            new_state, lookahead_every, lookahead_decay, lookahead_power, total_steps
        )
    step_metrics = metrics_cls.gather_from_model_output(
        axis_name=AXIS, loss=per_example, logits=logits, labels=labels, targets=targets
    )
    # A step whose loss, gradients or new BatchNorm statistics are not finite changes nothing
    # but the step count: the variables (and their average), the optimizer stay the last good
    # ones and the step's metrics are empty (the loop decides whether to go on). The new
    # weights are not checked: from finite gradients they are finite unless an update passes
    # 3e38, and checking them costs a pass over every weight before the select can run (5% of
    # resnet18's step on a CPU, which otherwise fuses the select into the update).
    loss = lax.pmean(per_example.mean(), AXIS)
    finite = jnp.isfinite(loss) & all_finite((grads, batch_stats))
    skipped = state.replace(step=new_state.step)
    state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, skipped)
    step_metrics = jax.tree.map(lambda m: jnp.where(finite, m, jnp.zeros_like(m)), step_metrics)
    return state, step_metrics, finite


def lookahead_decay_at(done, every: int, decay: float, power: float, total_steps: int):
    """The slow weights' decay at the sync after step `done` (1-based): airbench's
    decay^every x (done / total_steps)^power, so that early syncs mostly follow the weights
    and late ones average over more and more of the run."""
    progress = jnp.asarray(done, jnp.float32) / total_steps
    return jnp.asarray(decay**every, jnp.float32) * progress**power


def lookahead(state, every: int, decay: float, power: float, total_steps: int):
    """After each step: every `every` steps the slow weights (params and BatchNorm statistics)
    become d x slow + (1 - d) x weights (d = lookahead_decay_at) and the weights restart from
    them; the last step (total_steps) also sets the weights to the slow ones, so the run ends
    on its average (airbench's lookahead, a pure function of the state: exact under resume)."""
    done = state.step
    trained = {"params": state.params, "batch_stats": state.batch_stats}
    sync = done % every == 0
    mixed = ema.update(
        state.slow, trained, lookahead_decay_at(done, every, decay, power, total_steps)
    )
    slow = jax.tree.map(lambda m, s: jnp.where(sync, m, s), mixed, state.slow)
    reset = sync | (done >= total_steps)
    weights = jax.tree.map(lambda s, w: jnp.where(reset, s, w), slow, trained)
    return state.replace(params=weights["params"], batch_stats=weights["batch_stats"], slow=slow)


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
    mean, std = mean_std(config)
    lookahead_every = int(config.get("lookahead_every", 0))
    if lookahead_every > 0 and total_steps <= 0:
        raise ValueError("config.lookahead_every > 0 needs the run's total_steps.")
    return parallel.data_parallel(
        functools.partial(
            train_step,
            seed=config.seed,
            mean=mean,
            std=std,
            label_smoothing=config.label_smoothing,
            metrics_cls=metrics_lib.metrics_collection(num_classes),
            num_classes=num_classes,
            mixup=float(config.augment.mixup),
            cutmix=float(config.augment.cutmix),
            class_weights=None if class_weights is None else tuple(class_weights),
            grad_accum_steps=int(config.get("grad_accum_steps", 1)),
            unroll_accumulation=all(d.platform == "cpu" for d in mesh.devices.flat),
            ema_decay=float(config.get("ema_decay", 0.0)),
            ema_warmup_power=float(config.get("ema_warmup_power", 0.0)),
            lookahead_every=lookahead_every,
            lookahead_decay=float(config.get("lookahead_decay", 0.95)),
            lookahead_power=float(config.get("lookahead_power", 3.0)),
            total_steps=int(total_steps),
        ),
        mesh,
        in_specs=(P(), P(AXIS)),
        out_specs=(P(), P(), P()),
        donate_argnums=(0,),
    )
