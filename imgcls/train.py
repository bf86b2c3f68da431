"""Training: the TrainState, per-device train/eval steps, and the train_and_evaluate loop.

Models, steps and metrics here import and run without TensorFlow; only
`train_and_evaluate` pulls in the tf.data input pipeline and the CLU writers.
"""

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from absl import logging
from flax.training import train_state
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from imgcls import checkpointing, models, optim, parallel, warm_start
from imgcls import metrics as metrics_lib
from imgcls import workdir as workdir_files
from imgcls.data import jax_augment
from imgcls.data.normalize import normalize

AXIS = parallel.AXIS


class TrainState(train_state.TrainState):
    batch_stats: Any


def init_rng(seed: int):
    return jax.random.fold_in(jax.random.key(seed), 0)


def dropout_rng(seed: int, step, device_index):
    """A fresh dropout key per step and device, derived from the seed alone (no RNG state)."""
    key = jax.random.fold_in(jax.random.key(seed), 1)
    return jax.random.fold_in(jax.random.fold_in(key, step), device_index)


def create_train_state(seed: int, model, image_shape, tx, mesh) -> TrainState:
    """Initialises the model and optimizer directly as arrays replicated over the mesh."""

    def init():
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        variables = model.init(init_rng(seed), dummy, train=False)
        return TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            tx=tx,
        )

    return jax.jit(init, out_shardings=parallel.replicated(mesh))()


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy against (optionally smoothed) integer labels."""
    return soft_cross_entropy(logits, jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)


def soft_cross_entropy(logits, targets, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy against target distributions (one-hot or mixed)."""
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


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
):
    """One SGD step on this device's shard; gradients and BatchNorm statistics sync over 'data'.

    mixup/cutmix mix this device's examples (soft targets); class_weights (one per class)
    weight each example's loss by its target class, for imbalanced datasets.
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

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, updates = state.apply_fn(
            variables, images, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
        )
        per_example = soft_cross_entropy(logits, targets, label_smoothing)
        if class_weights is not None:
            per_example = per_example * (targets @ jnp.asarray(class_weights, jnp.float32))
        return per_example.mean(), (per_example, logits, updates)

    grads, (per_example, logits, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, AXIS)
    state = state.apply_gradients(
        grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
    )
    step_metrics = metrics_cls.gather_from_model_output(
        axis_name=AXIS, loss=per_example, logits=logits, labels=labels, targets=targets
    )
    return state, step_metrics


# What an eval batch sends to the devices; its 'index' (position in the split) stays on the host.
EVAL_DEVICE_KEYS = ("image", "label", "mask")


def eval_step(state, batch, *, mean, std, metrics_cls):
    """Logits and masked metrics of one eval batch shard (padding examples have mask False)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = state.apply_fn(variables, normalize(batch["image"], mean, std), train=False)
    batch_metrics = metrics_cls.gather_from_model_output(
        axis_name=AXIS,
        loss=cross_entropy(logits, batch["label"]),
        logits=logits,
        labels=batch["label"],
        mask=batch["mask"],
    )
    return batch_metrics, logits


def make_eval_step(config, metrics_cls, mesh):
    """The data-parallel eval step: metrics merged over devices, logits sharded on 'data'."""
    return parallel.data_parallel(
        functools.partial(
            eval_step,
            mean=tuple(config.dataset.mean),
            std=tuple(config.dataset.std),
            metrics_cls=metrics_cls,
        ),
        mesh,
        in_specs=(P(), P(AXIS)),
        out_specs=(P(), P(AXIS)),
    )


def run_eval_step(p_eval, state, local_batch, mesh):
    """Runs the eval step on one host-local eval batch from the input pipeline."""
    device_batch = {k: local_batch[k] for k in EVAL_DEVICE_KEYS}
    return p_eval(state, parallel.global_batch(mesh, device_batch))


def make_steps(config, num_classes: int, mesh, class_weights=None):
    """The data-parallel (jit + shard_map) train and eval steps for this config."""
    metrics_cls = metrics_lib.metrics_collection(num_classes)
    p_train = parallel.data_parallel(
        functools.partial(
            train_step,
            seed=config.seed,
            mean=tuple(config.dataset.mean),
            std=tuple(config.dataset.std),
            label_smoothing=config.label_smoothing,
            metrics_cls=metrics_cls,
            num_classes=num_classes,
            mixup=float(config.augment.mixup),
            cutmix=float(config.augment.cutmix),
            class_weights=None if class_weights is None else tuple(class_weights),
        ),
        mesh,
        in_specs=(P(), P(AXIS)),
        out_specs=(P(), P()),
        donate_argnums=(0,),
    )
    return p_train, make_eval_step(config, metrics_cls, mesh)


def evaluate(p_eval, state, batches, mesh):
    """Merges the metrics of every eval batch; exact because padding is masked."""
    total = None
    for local_batch in batches:
        batch_metrics, _ = run_eval_step(p_eval, state, local_batch, mesh)
        total = batch_metrics if total is None else total.merge(batch_metrics)
    return total


def num_train_steps(config, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return max(1, int(config.num_epochs * steps_per_epoch))


def prepare_dataset(config):
    """Dataset info; with several processes, process 0 prepares the data while others wait."""
    from imgcls import data

    if jax.process_count() > 1:
        if jax.process_index() == 0:
            data.get_dataset_info(config)
        multihost_utils.sync_global_devices("imgcls: dataset prepared")
    return data.get_dataset_info(config)


def create_model(config, num_classes: int, frozen_backbone: bool = False):
    """The model of `config` for a dataset of `num_classes` classes.

    frozen_backbone=True makes BatchNorm use its running averages in training too (in models
    that have the option; the optimizer freezes the parameters of any model).
    """
    overrides = {}
    if frozen_backbone and "frozen_backbone" in models.model_fields(config.model.name):
        overrides["frozen_backbone"] = True
    return models.create_model(config.model, num_classes, config.half_precision, **overrides)


def initial_state(config, info, mesh):
    """The freshly initialised TrainState of `config`, its schedule and its total step count.

    Also the template that checkpoints of `config` are restored into.
    """
    from imgcls import data

    steps_per_epoch = data.steps_per_epoch(config, info)
    total_steps = num_train_steps(config, steps_per_epoch)
    unfreeze = optim.unfreeze_step(config, steps_per_epoch)
    model = create_model(config, info.num_classes, optim.backbone_frozen(unfreeze, 0))
    learning_rate_fn = optim.create_learning_rate_schedule(config, steps_per_epoch, total_steps)
    tx = optim.create_optimizer(config, learning_rate_fn, unfreeze)
    state = create_train_state(config.seed, model, info.image_shape, tx, mesh)
    return state, learning_rate_fn, total_steps


def _check_config(config, info, mesh) -> None:
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    channels = info.image_shape[-1]
    for key in ("mean", "std"):
        if len(config.dataset[key]) not in (1, channels):
            raise ValueError(
                f"config.dataset.{key} has {len(config.dataset[key])} values but the images "
                f"have {channels} channels; give 1 or {channels} values."
            )
    if config.unfreeze_after_epochs >= 0 and not config.freeze_backbone:
        logging.warning("config.unfreeze_after_epochs has no effect without freeze_backbone.")


class EarlyStopping:
    """Stops when the validation accuracy has not improved for `patience` evaluations."""

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best, self.since_best = -float("inf"), 0

    def update(self, accuracy: float) -> bool:
        """Records one evaluation; True when training should stop."""
        if accuracy > self.best:
            self.best, self.since_best = accuracy, 0
        else:
            self.since_best += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience


def _logged_eval_accuracies(workdir: str, until_step: int) -> list[float]:
    """The eval_accuracy values metrics.jsonl holds up to a step (replayed on resume)."""
    from imgcls.sweep_results import read_metrics

    rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    return [r["eval_accuracy"] for r in rows if "eval_accuracy" in r and r["step"] <= until_step]


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint.

    Evaluates periodically on the validation split (config.dataset.validation_split, else
    eval_split) for the best checkpoint and early stopping; returns the last of those metrics,
    plus the final report's 'report_dir', 'report_split' and 'report_accuracy'.
    """
    from clu import periodic_actions

    from imgcls import data, writers

    os.makedirs(workdir, exist_ok=True)
    info = prepare_dataset(config)
    config = data.resolve_splits(config, info)
    info = data.get_dataset_info(config)
    mesh = parallel.create_mesh()
    _check_config(config, info, mesh)

    steps_per_epoch = data.steps_per_epoch(config, info)
    eval_every = max(1, int(config.eval_every_epochs * steps_per_epoch))
    state, learning_rate_fn, total_steps = initial_state(config, info, mesh)

    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints
    )
    if ckpt.latest_step() is not None:
        state = ckpt.restore(state)
        logging.info("Resumed from checkpoint at step %d.", int(state.step))
        if config.init_from:
            logging.info("config.init_from=%r is ignored: resuming.", config.init_from)
    elif config.init_from:
        state, _ = warm_start.warm_start(config, state, workdir)
    # Only now: a resume that fails (another model's checkpoints) keeps the files that describe
    # the checkpoints, which eval, predict, export and serve read.
    workdir_files.save(config, workdir, info)
    start_step = int(state.step)
    # config.freeze_backbone: from this step on, the model's BatchNorm trains again.
    unfreeze = optim.unfreeze_step(config, steps_per_epoch)
    unfrozen_apply = create_model(config, info.num_classes).apply

    writer = writers.create_writer(workdir, resume_step=start_step)
    stopper = EarlyStopping(config.early_stopping_patience)
    for accuracy in _logged_eval_accuracies(workdir, start_step):
        stopper.update(accuracy)
    p_train, p_eval = make_steps(config, info.num_classes, mesh, data.class_weights(config, info))
    train_iter = data.create_train_iterator(config, info, start_step=start_step, mesh=mesh)
    validation_batches = data.eval_batches(config, info, data.validation_split(config))
    progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps
    )
    logging.info(
        "Training %s on %s: %d steps (%d per epoch), global batch %d on %d devices; "
        "validating on '%s'.",
        config.model.name,
        info.name,
        total_steps,
        steps_per_epoch,
        config.batch_size,
        mesh.devices.size,
        data.validation_split(config),
    )

    def run_eval(state, step):
        with progress.timed("eval"):
            batches = validation_batches()
            scalars = metrics_lib.to_scalars(evaluate(p_eval, state, batches, mesh), "eval")
        writer.write_scalars(step, scalars)
        return scalars

    t0 = time.time()
    train_metrics, eval_metrics = None, None
    steps = range(start_step, total_steps) if not stopper.should_stop else ()
    try:
        for step in steps:
            if unfreeze is not None and step >= unfreeze and state.apply_fn != unfrozen_apply:
                logging.info("The backbone trains from step %d on (unfrozen).", step)
                state = state.replace(apply_fn=unfrozen_apply)
            batch = parallel.global_batch(mesh, next(train_iter))
            state, step_metrics = p_train(state, batch)
            train_metrics = (
                step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
            )
            done = step + 1
            progress(done)
            if done % config.log_every_steps == 0 or done == total_steps:
                scalars = metrics_lib.to_scalars(train_metrics, "train")
                scalars["learning_rate"] = float(learning_rate_fn(step))
                writer.write_scalars(done, scalars)
                train_metrics = None
            eval_metrics = None
            if done % eval_every == 0 or done == total_steps:
                eval_metrics = run_eval(state, done)
            if eval_metrics or done % config.checkpoint_every_steps == 0:
                ckpt.save(done, state, eval_metrics)
            if eval_metrics and stopper.update(eval_metrics["eval_accuracy"]):
                logging.info(
                    "Early stopping at step %d: no better validation accuracy than %.4f for "
                    "%d evaluations.",
                    done,
                    stopper.best,
                    stopper.patience,
                )
                break
        if eval_metrics is None:  # finished before this call: report on the final state
            eval_metrics = run_eval(state, int(state.step))
        last_step = int(state.step)
        if stopper.patience > 0 and ckpt.best_step() not in (None, last_step):
            best = ckpt.best_step()
            state = ckpt.restore(state, step=best)
            logging.info("Early stopping is on: the final report uses the best step, %d.", best)
    finally:  # also on interruption: complete an in-flight checkpoint write, flush the logs
        ckpt.close()
        writer.flush()
    logging.info("Trained %d steps in %.1fs.", last_step - start_step, time.time() - t0)
    if config.final_report:
        from imgcls import evaluate as report_eval  # (train.evaluate is the loop's eval)

        results = report_eval.evaluate_state(config, workdir, state, info, mesh, "final")
        eval_metrics = {
            **eval_metrics,
            "report_dir": results["report_dir"],
            "report_split": results["split"],
            "report_accuracy": results["accuracy"],
        }
    return eval_metrics
