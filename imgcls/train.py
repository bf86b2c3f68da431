"""Training: losses and keys, the per-device train step, early stopping, and the loop.

Shaped like flax's examples/imagenet/train.py: the run is built by imgcls.state (dataset,
model, TrainState), evaluated by imgcls.evaluate, and `train_and_evaluate` ties them together.
The step itself imports and runs without TensorFlow; the loop's metric writers (CLU) and the
tf.data pipeline bring it in.
"""

import functools
import os
import time

import jax
import jax.numpy as jnp
from absl import logging
from jax import lax
from jax.sharding import PartitionSpec as P

from imgcls import checkpointing, data, evaluate, optim, parallel, warm_start
from imgcls import metrics as metrics_lib
from imgcls import state as state_lib
from imgcls import workdir as workdir_files
from imgcls.data import jax_augment
from imgcls.data.normalize import mean_std, normalize
from imgcls.losses import soft_cross_entropy

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


def make_train_step(config, num_classes: int, mesh, class_weights=None):
    """The data-parallel (jit + shard_map) train step f(state, global batch) -> (state,
    metrics); the state's buffers are donated."""
    mean, std = mean_std(config)
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
        ),
        mesh,
        in_specs=(P(), P(AXIS)),
        out_specs=(P(), P()),
        donate_argnums=(0,),
    )


def make_steps(config, num_classes: int, mesh, class_weights=None):
    """The data-parallel train step and eval step (evaluate.make_eval_step) of this config."""
    p_train = make_train_step(config, num_classes, mesh, class_weights)
    return p_train, evaluate.make_eval_step(config, num_classes, mesh)


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
    rows = workdir_files.read_metrics(workdir)
    return [r["eval_accuracy"] for r in rows if "eval_accuracy" in r and r["step"] <= until_step]


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint.

    Evaluates periodically on the validation split (config.dataset.validation_split, else
    eval_split) for the best checkpoint and early stopping; returns the last of those metrics,
    plus the final report's 'report_dir', 'report_split' and 'report_accuracy'.
    """
    # Here, not at the top: CLU's writers and progress reports import TensorFlow, and the train
    # step above runs without it.
    from clu import periodic_actions

    from imgcls import writers

    os.makedirs(workdir, exist_ok=True)
    config, info, _ = state_lib.resolve_run(config)
    mesh = parallel.create_mesh()
    state_lib.check_config(config, info, mesh)

    steps_per_epoch = data.steps_per_epoch(config, info)
    eval_every = max(1, int(config.eval_every_epochs * steps_per_epoch))
    state, learning_rate_fn, total_steps = state_lib.initial_state(config, info, mesh)

    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, checkpointing.DIRECTORY), keep=config.keep_checkpoints
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
    if jax.process_index() == 0:
        workdir_files.save(config, workdir, info)
    start_step = int(state.step)
    # config.freeze_backbone: from this step on, the model's BatchNorm trains again.
    unfreeze = optim.unfreeze_step(config, steps_per_epoch)
    unfrozen_apply = state_lib.create_model(config, info.num_classes).apply

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
            variables = state_lib.model_variables(state)
            merged = evaluate.evaluate_batches(p_eval, variables, batches, mesh)
            scalars = metrics_lib.to_scalars(merged, "eval")
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
        variables = state_lib.model_variables(state)
        results = evaluate.evaluate_variables(
            config, workdir, variables, int(state.step), info, mesh, "final"
        )
        eval_metrics = {
            **eval_metrics,
            "report_dir": results["report_dir"],
            "report_split": results["split"],
            "report_accuracy": results["accuracy"],
        }
    return eval_metrics


def format_result(result: dict, config, workdir: str) -> str:
    """The console summary of train_and_evaluate(config, workdir)'s result."""
    validation = config.dataset.validation_split or config.dataset.validation_fraction
    lines = []
    if validation:
        lines.append(f"Final validation accuracy: {result['eval_accuracy']:.4f}")
    if "report_dir" in result:
        lines.append(f"Final {result['report_split']} accuracy: {result['report_accuracy']:.4f}")
        lines.append(f"Report: {os.path.join(result['report_dir'], 'report.md')}")
    elif not validation:
        lines.append(
            f"Final {config.dataset.eval_split} accuracy: {result['eval_accuracy']:.4f}  "
            f"loss: {result['eval_loss']:.4f}  (workdir: {workdir})"
        )
    return "\n".join(lines)
