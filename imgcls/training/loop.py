"""Training: early stopping, reduce-on-plateau, the non-finite guard, and the loop.

Shaped like flax's examples/imagenet/train.py: the run is built by imgcls.training.state (dataset,
model, TrainState), stepped by imgcls.training.step, evaluated by imgcls.evaluation.evaluate, and
`train_and_evaluate` ties them together. The step imports and runs without TensorFlow; the
loop's metric writers (CLU) and the tf.data pipeline bring it in.
"""

import functools
import os
import time

import jax
from absl import logging

from imgcls import data, parallel
from imgcls.config import check as config_check
from imgcls.evaluation import evaluate
from imgcls.evaluation import metrics as metrics_lib
from imgcls.run import checkpointing
from imgcls.run import workdir as workdir_files
from imgcls.training import ema as ema_lib
from imgcls.training import optim
from imgcls.training import preemption as interrupts
from imgcls.training import state as state_lib
from imgcls.training import step as train_step
from imgcls.transfer import warm_start


def make_steps(config, num_classes: int, mesh, class_weights=None, total_steps: int = 0):
    """The data-parallel train step (imgcls.training.step) and eval step (evaluate.make_eval_step)
    of this config."""
    p_train = train_step.make_train_step(config, num_classes, mesh, class_weights, total_steps)
    return p_train, evaluate.make_eval_step(config, num_classes, mesh)


class EarlyStopping:
    """Stops when the validation accuracy has not improved for `patience` evaluations (with
    config.ema_decay, the better of the trained and the averaged weights' accuracy)."""

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


class TrainingDiverged(RuntimeError):
    """The loss or a gradient stopped being finite; nothing after the last good checkpoint
    was saved."""

    exit_status = 3


class NonFiniteGuard:
    """Reads the train step's `finite` flags, one step behind so that the host never waits
    for the device (flush() reads them all, before anything is logged or saved).

    on_nonfinite='stop' raises TrainingDiverged at the first non-finite step; 'skip' counts
    such steps (the step itself already left the state unchanged) and raises after
    max_in_a_row of them in a row.
    """

    def __init__(self, on_nonfinite: str, max_in_a_row: int, advice):
        self.skip = on_nonfinite == "skip"
        self.max_in_a_row = int(max_in_a_row)
        self.advice = advice  # f() -> what to do, for the error message
        self.pending, self.in_a_row, self.skipped = [], 0, 0

    def push(self, step: int, finite) -> None:
        self.pending.append((step, finite))
        if len(self.pending) > 1:
            self._check(*self.pending.pop(0))

    def flush(self) -> None:
        while self.pending:
            self._check(*self.pending.pop(0))

    def _check(self, step: int, finite) -> None:
        if bool(finite):
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.skipped += 1
        if not self.skip or self.in_a_row >= self.max_in_a_row:
            times = f" ({self.in_a_row} steps in a row)" if self.skip else ""
            raise TrainingDiverged(
                f"Training diverged at step {step}{times}: the loss or a gradient is not "
                f"finite (NaN or infinity). {self.advice()}"
            )
        logging.warning("Step %d is not finite: skipped (the weights are unchanged).", step)


def _divergence_advice(config, ckpt) -> str:
    latest = ckpt.latest_step()
    saved = (
        f"The last good checkpoint, step {latest}, stays the latest; nothing after it was saved."
        if latest is not None
        else "No checkpoint was saved."
    )
    tries = [f"a lower config.optimizer.learning_rate (now {config.optimizer.learning_rate:g})"]
    if config.half_precision:
        tries.append("config.half_precision=False")
    if config.on_nonfinite != "skip":
        tries.append("config.on_nonfinite='skip' to skip such steps")
    return f"{saved} Try {', or '.join(tries)}."


def _resumed_pipeline(config, workdir: str):
    """config, with pipeline 'auto' set to the pipeline the run in `workdir` started with (a
    resume must read the same batches, even where 'auto' would now choose otherwise)."""
    if config.dataset.pipeline != "auto":
        return config
    try:
        saved = workdir_files.load_config(workdir).dataset.pipeline
    except (FileNotFoundError, AttributeError, ValueError):
        return config
    if saved == "auto" or not os.path.isdir(os.path.join(workdir, checkpointing.DIRECTORY)):
        return config
    config = config.copy_and_resolve_references()
    config.dataset.pipeline = saved
    return config


class _Plateau:
    """config.optimizer.schedule='plateau': feeds each validation result to the optimizer
    state's reduce-on-plateau scale (optim.observe_plateau), logging when it falls."""

    def __init__(self, config, mesh):
        self.config = config
        self.update = jax.jit(
            functools.partial(optim.observe_plateau, config),
            out_shardings=parallel.replicated(mesh),
        )

    def observe(self, state, eval_metrics):
        before = optim.plateau_scale(state.opt_state)
        value = optim.plateau_value(self.config, eval_metrics)
        new = self.update(optim.plateau_state(state.opt_state), value)
        state = state.replace(opt_state=optim.with_plateau_state(state.opt_state, new))
        after = optim.plateau_scale(state.opt_state)
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


def _logged_rows(workdir: str, until_step: int) -> list[dict]:
    """The rows metrics.jsonl holds up to a step (what a resumed run has logged already)."""
    return [r for r in workdir_files.read_metrics(workdir) if r["step"] <= until_step]


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest intact checkpoint.

    Evaluates periodically on the validation split (config.dataset.validation_split, else
    eval_split) for the best checkpoint and early stopping; returns the last of those metrics,
    plus the final report's 'report_dir', 'report_split' and 'report_accuracy'. Raises
    TrainingDiverged when the loss stops being finite and interrupts.Preempted after SIGTERM or
    SIGINT (having saved a checkpoint of the step it stopped at).
    """
    # Here, not at the top: CLU's writers and progress reports import TensorFlow, and the train
    # step above runs without it.
    from clu import periodic_actions

    from imgcls.run import writers

    config_check.check(config)
    os.makedirs(workdir, exist_ok=True)
    config, info, _ = state_lib.resolve_run(config)
    config = data.resolve_pipeline(_resumed_pipeline(config, workdir), info)
    mesh = parallel.create_mesh()
    state_lib.check_config(config, info, mesh)

    steps_per_epoch = data.steps_per_epoch(config, info)
    eval_every = max(1, int(config.eval_every_epochs * steps_per_epoch))
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, checkpointing.DIRECTORY), keep=config.keep_checkpoints
    )
    # A fresh run (also a warm start, whose source may lack them) gets the model's
    # data-dependent initial values; a resume restores them.
    fresh = ckpt.latest_step() is None
    param_values = state_lib.data_init_values(config, info) if fresh else None
    state, learning_rate_fn, total_steps = state_lib.initial_state(config, info, mesh, param_values)
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

    logged = _logged_rows(workdir, start_step)
    writer = writers.create_writer(workdir, resume_step=start_step)
    stopper = EarlyStopping(config.early_stopping_patience)
    for row in logged:
        if "eval_accuracy" in row:
            stopper.update(checkpointing.best_score(row))
    p_train, p_eval = make_steps(
        config, info.num_classes, mesh, data.class_weights(config, info), total_steps
    )
    metrics_cls = metrics_lib.metrics_collection(info.num_classes)
    train_iter = data.create_train_iterator(config, info, start_step=start_step, mesh=mesh)
    validation_batches = data.eval_batches(config, info, data.validation_split(config))
    # The console's progress and ETA lines; the logged steps_per_sec is measured below, so that
    # metrics.jsonl has the same rows however often the run was interrupted.
    progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps, every_steps=config.log_every_steps, every_secs=None
    )
    guard = NonFiniteGuard(
        config.on_nonfinite,
        config.max_nonfinite_steps,
        functools.partial(_divergence_advice, config, ckpt),
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
        """eval_* of the trained weights and, with config.ema_decay, eval_ema_* of their
        average (the checkpoint ranks by the better accuracy: the log says which)."""
        scalars = {}
        with progress.timed("eval"):
            for name, variables in state_lib.evaluated_variables(state).items():
                merged = evaluate.evaluate_batches(p_eval, variables, validation_batches(), mesh)
                scalars.update(metrics_lib.to_scalars(merged, f"eval_{name}" if name else "eval"))
        writer.write_scalars(step, scalars)
        if checkpointing.EMA_METRIC in scalars:
            logging.info(
                "Step %d: validation accuracy %.4f (trained weights), %.4f (EMA): ranked by the "
                "%s weights.",
                step,
                scalars[checkpointing.BEST_METRIC],
                scalars[checkpointing.EMA_METRIC],
                "EMA" if checkpointing.best_weights(scalars) == "ema" else "trained",
            )
        return scalars

    plateau = _Plateau(config, mesh) if optim.uses_plateau(config) else None

    # The metrics accumulated since the last log line when the checkpoint was saved.
    saved = workdir_files.load_accumulator(workdir, start_step)
    train_metrics = metrics_lib.collection_from_json(metrics_cls, saved)
    eval_metrics, last_log = None, (start_step, time.time())
    steps = range(start_step, total_steps) if not stopper.should_stop else ()
    t0 = time.time()
    try:
        with interrupts.Preemption() as preemption:
            for step in steps:
                if unfreeze is not None and step >= unfreeze and state.apply_fn != unfrozen_apply:
                    logging.info("The backbone trains from step %d on (unfrozen).", step)
                    state = state.replace(apply_fn=unfrozen_apply)
                batch = parallel.global_batch(mesh, next(train_iter))
                state, step_metrics, finite = p_train(state, batch)
                done = step + 1
                guard.push(done, finite)
                train_metrics = (
                    step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
                )
                progress(done)
                stop = preemption.requested(done)
                log_now = done % config.log_every_steps == 0 or done == total_steps
                eval_now = done % eval_every == 0 or done == total_steps
                save_now = eval_now or stop or done % config.checkpoint_every_steps == 0
                if log_now or save_now:
                    guard.flush()  # nothing non-finite is logged, evaluated or saved
                if log_now:
                    scalars = metrics_lib.to_scalars(train_metrics, "train")
                    scalars["learning_rate"] = float(learning_rate_fn(step))
                    if plateau:
                        scalars["learning_rate"] *= optim.plateau_scale(state.opt_state)
                    scalars["steps_per_sec"] = (done - last_log[0]) / (time.time() - last_log[1])
                    if guard.skip:
                        scalars["skipped_steps"] = guard.skipped
                    writer.write_scalars(done, scalars)
                    train_metrics, last_log = None, (done, time.time())
                eval_metrics = run_eval(state, done) if eval_now else None
                if eval_metrics and plateau:  # before the save: a resume continues from it
                    state = plateau.observe(state, eval_metrics)
                if save_now:
                    if jax.process_index() == 0:
                        accumulated = metrics_lib.collection_to_json(train_metrics)
                        workdir_files.save_accumulator(workdir, done, accumulated, ckpt.all_steps())
                    ckpt.save(done, state, eval_metrics)
                if stop:
                    raise interrupts.Preempted(preemption.signum, done, workdir)
                if eval_metrics and stopper.update(checkpointing.best_score(eval_metrics)):
                    logging.info(
                        "Early stopping at step %d: no better validation accuracy than %.4f "
                        "for %d evaluations.",
                        done,
                        stopper.best,
                        stopper.patience,
                    )
                    break
        if eval_metrics is None:  # finished before this call: report on the final state
            last_row = next((r for r in reversed(logged) if "eval_accuracy" in r), None)
            if last_row is not None and last_row["step"] == int(state.step):
                eval_metrics = {k: v for k, v in last_row.items() if k.startswith("eval_")}
            else:
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
    if config.final_report:  # of the weights --mode=eval uses by default (EMA when kept)
        weights = ema_lib.default_weights(config)
        variables = state_lib.evaluated_variables(state)["ema" if weights == "ema" else ""]
        results = evaluate.evaluate_variables(
            config, workdir, variables, int(state.step), info, mesh, "final", weights=weights
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
    averaged = checkpointing.EMA_METRIC in result
    lines = []
    if validation:
        lines.append(f"Final validation accuracy: {result['eval_accuracy']:.4f}")
        if averaged:
            lines[-1] += f" (EMA weights: {result[checkpointing.EMA_METRIC]:.4f})"
    if "report_dir" in result:
        weights = " (EMA weights)" if averaged else ""
        lines.append(
            f"Final {result['report_split']} accuracy{weights}: {result['report_accuracy']:.4f}"
        )
        lines.append(f"Report: {os.path.join(result['report_dir'], 'report.md')}")
    elif not validation:
        lines.append(
            f"Final {config.dataset.eval_split} accuracy: {result['eval_accuracy']:.4f}  "
            f"loss: {result['eval_loss']:.4f}  (workdir: {workdir})"
        )
        if averaged:
            lines.append(
                f"EMA weights: accuracy {result[checkpointing.EMA_METRIC]:.4f}  "
                f"loss: {result['eval_ema_loss']:.4f}"
            )
    return "\n".join(lines)
