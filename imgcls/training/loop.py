"""The training loop: `train_and_evaluate(config, workdir)`, read top to bottom.

Shaped like flax's examples/imagenet/train.py, in named pieces: `set_up` checks and resolves
the config against its data and devices, `start_state` resumes, warm-starts or initialises the
TrainState (imgcls.training.state), `Loop` runs the steps (imgcls.training.step) and each step's
bookkeeping (logging, validation by imgcls.evaluation, checkpoints by imgcls.run, the guards
and schedules of this package), and `final_report` ends with evaluation's report. The step
imports and runs without TensorFlow; CLU's writers and the tf.data pipeline bring it in.
"""

import dataclasses
import functools
import os
import sys
import time
from typing import Any

import jax
from absl import logging

from imgcls import data, models, parallel
from imgcls.config import check as config_check
from imgcls.config import resolve, schema
from imgcls.evaluation import evaluate
from imgcls.evaluation import metrics as metrics_lib
from imgcls.evaluation import step as eval_step
from imgcls.run import checkpointing, interrupts, lock, restore
from imgcls.run import workdir as workdir_files
from imgcls.training import early_stopping, guards, optim, preemption, resume, schedules
from imgcls.training import state as state_lib
from imgcls.training import step as train_step
from imgcls.transfer import warm_start


def make_steps(config, num_classes: int, mesh, class_weights=None, total_steps: int = 0):
    """The data-parallel train step (imgcls.training.step) and eval step
    (imgcls.evaluation.step) of this config."""
    p_train = train_step.make_train_step(config, num_classes, mesh, class_weights, total_steps)
    return p_train, eval_step.make_eval_step(config, num_classes, mesh)


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


def _logged_rows(workdir: str, until_step: int) -> list[dict]:
    """The rows metrics.jsonl holds up to a step (what a resumed run has logged already)."""
    return [r for r in workdir_files.read_metrics(workdir) if r["step"] <= until_step]


@dataclasses.dataclass
class Run:
    """A training run once set up: its resolved config, dataset, devices and checkpoints."""

    config: Any
    workdir: str
    info: data.DatasetInfo
    mesh: Any
    ckpt: checkpointing.Checkpointer
    steps_per_epoch: int


def set_up(config, workdir: str) -> Run:
    """The run of `config` (checked) in `workdir`: every 'auto' value resolved, the input
    pipeline chosen (a resume keeps its own), the devices; a resume's config checked against
    the run's own (imgcls.training.resume)."""
    config, info, _ = resolve.resolve_run(config)
    config = data.resolve_pipeline(_resumed_pipeline(config, workdir), info)
    mesh = parallel.create_mesh()
    config_check.check_with_data(config, info, mesh)
    directory = os.path.join(workdir, checkpointing.DIRECTORY)
    ckpt = checkpointing.Checkpointer(
        directory, config.keep_checkpoints, trust_unverified=config.trust_unverified_checkpoints
    )
    if ckpt.latest_step() is not None:
        resume.check_resume(config, workdir, ckpt.latest_step(), record=jax.process_index() == 0)
    return Run(config, workdir, info, mesh, ckpt, data.steps_per_epoch(config, info))


def start_state(run: Run):
    """(state, learning-rate schedule, total steps): the latest intact checkpoint's state, else
    a warm start (config.init_from) or a fresh one; then W/config.json and dataset_info.json.

    A fresh run (also a warm start, whose source may lack them) gets the model's data-dependent
    initial values; a resume restores them. The files are written only now, so a resume that
    fails (another model's checkpoints) keeps those that describe the checkpoints.
    """
    config, ckpt = run.config, run.ckpt
    resume = ckpt.latest_step() is not None
    values = None if resume else state_lib.data_init_values(config, run.info)
    state, learning_rate_fn, total_steps = state_lib.initial_state(
        config, run.info, run.mesh, values
    )
    if resume:
        state = ckpt.restore(state)
        logging.info("Resumed from checkpoint at step %d.", int(state.step))
        if config.init_from:
            logging.info("config.init_from=%r is ignored: resuming.", config.init_from)
    elif config.init_from:
        state, _ = warm_start.warm_start(config, state, run.workdir)
    if jax.process_index() == 0:
        workdir_files.save(config, run.workdir, run.info)
    return state, learning_rate_fn, total_steps


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest intact checkpoint.

    Evaluates periodically on the validation split (config.dataset.validation_split, else
    eval_split) for the best checkpoint and early stopping; returns the last of those metrics,
    plus the final report's 'report_dir', 'report_split' and 'report_accuracy'. Raises
    guards.TrainingDiverged when the loss stops being finite and preemption.Preempted after
    SIGTERM or SIGINT (having saved a checkpoint of the step it stopped at).
    """
    config = schema.complete(config)  # an older W/config.json, a hand-built config
    config_check.check(config)  # one line per bad value, before any work
    os.makedirs(workdir, exist_ok=True)
    unsaved = "nothing was saved past the last checkpoint; run the same command again"
    with lock.training_lock(workdir, hold=jax.process_index() == 0):  # one run per workdir
        with interrupts.doing(f"before training {workdir} started: {unsaved}"):
            return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict[str, float]:
    # Here, not at the top: CLU's writers import TensorFlow, and the train step runs without it.
    from imgcls.run import writers

    run = set_up(config, workdir)
    state, learning_rate_fn, total_steps = start_state(run)
    start_step = int(state.step)
    logged = _logged_rows(workdir, start_step)
    writer = writers.create_writer(workdir, resume_step=start_step)
    try:
        loop = Loop(run, learning_rate_fn, total_steps, start_step, logged, writer)
        started = time.time()
        with preemption.Preemption() as signals:
            state, eval_metrics = loop.train(state, signals)
        eval_metrics = loop.final_metrics(state, eval_metrics)
        last_step = int(state.step)
        state = loop.best_state(state)
    finally:  # also on interruption: complete an in-flight checkpoint write, flush the logs
        _close(run.ckpt, writer)
    logging.info("Trained %d steps in %.1fs.", last_step - start_step, time.time() - started)
    return final_report(run, state, eval_metrics)


class Loop:
    """The steps of a run from `start_step` to `total_steps`, and each step's bookkeeping: the
    training metrics accumulated between log lines, validation, checkpoints, the non-finite
    guard, early stopping, reduce-on-plateau and preemption. The host reads the device only
    at log, eval and checkpoint points."""

    def __init__(self, run: Run, learning_rate_fn, total_steps, start_step, logged, writer):
        # Imported here: CLU's progress reports import TensorFlow.
        from clu import periodic_actions

        config, info, mesh = run.config, run.info, run.mesh
        self.run, self.writer, self.logged = run, writer, logged
        self.learning_rate_fn, self.total_steps = learning_rate_fn, total_steps
        self.start_step = start_step
        self.eval_every = max(1, int(config.eval_every_epochs * run.steps_per_epoch))
        self.stopper = early_stopping.replayed(config.early_stopping_patience, logged)
        # config.freeze_backbone: from this step on, the model's BatchNorm trains again.
        self.unfreeze = optim.unfreeze_step(config, run.steps_per_epoch)
        self.unfrozen_apply = models.from_config(config, info.num_classes).apply
        class_weights = data.class_weights(config, info)
        self.p_train, self.p_eval = make_steps(
            config, info.num_classes, mesh, class_weights, total_steps
        )
        self.metrics_cls = metrics_lib.metrics_collection(info.num_classes)
        self.train_iter = data.create_train_iterator(config, info, start_step=start_step, mesh=mesh)
        self.validation_batches = data.eval_batches(config, info, data.validation_split(config))
        # The console's progress and ETA lines; the logged steps_per_sec is measured in
        # `log`, so that metrics.jsonl has the same rows however often the run was interrupted.
        self.progress = periodic_actions.ReportProgress(
            num_train_steps=total_steps, every_steps=config.log_every_steps, every_secs=None
        )
        self.guard = guards.NonFiniteGuard(
            config.on_nonfinite,
            config.max_nonfinite_steps,
            functools.partial(guards.divergence_advice, config, run.ckpt),
        )
        logging.info(
            "Training %s on %s: %d steps (%d per epoch), global batch %d on %d devices; "
            "validating on '%s'.",
            config.model.name,
            info.name,
            total_steps,
            run.steps_per_epoch,
            config.batch_size,
            mesh.devices.size,
            data.validation_split(config),
        )
        self.plateau = schedules.Plateau(config, mesh) if optim.uses_plateau(config) else None
        # The metrics accumulated since the last log line when the checkpoint was saved.
        saved = workdir_files.load_accumulator(run.workdir, start_step)
        self.train_metrics = metrics_lib.collection_from_json(self.metrics_cls, saved)
        self.last_log = (start_step, time.time())

    def train(self, state, signals):
        """(state, the last validation metrics or None) after the remaining steps, or at early
        stopping; preemption.Preempted after a signal (with the checkpoint saved)."""
        self.signals = signals
        eval_metrics = None
        steps = range(self.start_step, self.total_steps) if not self.stopper.should_stop else ()
        for step in steps:
            if self.unfreeze is not None and step >= self.unfreeze:
                state = self.unfrozen(state, step)
            batch = parallel.global_batch(self.run.mesh, next(self.train_iter))
            state, step_metrics, finite = self.p_train(state, batch)
            state, eval_metrics, stop = self.after_step(state, step + 1, step_metrics, finite)
            if stop:
                break
        return state, eval_metrics

    def unfrozen(self, state, step):
        """The state whose model trains its BatchNorm again (config.freeze_backbone)."""
        if state.apply_fn == self.unfrozen_apply:
            return state
        logging.info("The backbone trains from step %d on (unfrozen).", step)
        return state.replace(apply_fn=self.unfrozen_apply)

    def after_step(self, state, done: int, step_metrics, finite):
        """One step's bookkeeping: (state, validation metrics or None, whether to stop early)."""
        config = self.run.config
        self.guard.push(done, finite)
        merged = self.train_metrics
        self.train_metrics = step_metrics if merged is None else merged.merge(step_metrics)
        self.progress(done)
        preempted = self.signals.requested(done)
        log_now = done % config.log_every_steps == 0 or done == self.total_steps
        eval_now = done % self.eval_every == 0 or done == self.total_steps
        save_now = eval_now or preempted or done % config.checkpoint_every_steps == 0
        if log_now or save_now:
            self.guard.flush()  # nothing non-finite is logged, evaluated or saved
        if log_now:
            self.log(state, done)
        eval_metrics = self.evaluate(state, done) if eval_now else None
        if eval_metrics and self.plateau:  # before the save: a resume continues from it
            state = self.plateau.observe(state, eval_metrics)
        if save_now:
            self.save(state, done, eval_metrics)
        if preempted:
            raise preemption.Preempted(self.signals.signum, done, self.run.workdir)
        return state, eval_metrics, bool(eval_metrics) and self.stops_early(done, eval_metrics)

    def log(self, state, done: int) -> None:
        """Writes the training metrics accumulated since the last log line."""
        scalars = metrics_lib.to_scalars(self.train_metrics, "train")
        scalars["learning_rate"] = float(self.learning_rate_fn(done - 1))
        if self.plateau:
            scalars["learning_rate"] *= schedules.plateau_scale(state.opt_state)
        scalars["steps_per_sec"] = (done - self.last_log[0]) / (time.time() - self.last_log[1])
        if self.guard.skip:
            scalars["skipped_steps"] = self.guard.skipped
        self.writer.write_scalars(done, scalars)
        self.train_metrics, self.last_log = None, (done, time.time())

    def evaluate(self, state, step: int) -> dict:
        """eval_* of the trained weights and, with config.ema_decay, eval_ema_* of their
        average (the checkpoint ranks by the better accuracy: the log says which)."""
        scalars = {}
        with self.progress.timed("eval"):
            for name, variables in state_lib.evaluated_variables(state).items():
                batches = self.validation_batches()
                merged = eval_step.evaluate_batches(self.p_eval, variables, batches, self.run.mesh)
                scalars.update(metrics_lib.to_scalars(merged, f"eval_{name}" if name else "eval"))
        self.writer.write_scalars(step, scalars)
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

    def save(self, state, done: int, eval_metrics) -> None:
        """A checkpoint of step `done` (ranked by `eval_metrics`), and the training metrics
        accumulated since the last log line, so that a resume logs what this run would."""
        if jax.process_index() == 0:
            accumulated = metrics_lib.collection_to_json(self.train_metrics)
            workdir_files.save_accumulator(
                self.run.workdir, done, accumulated, self.run.ckpt.all_steps()
            )
        self.run.ckpt.save(done, state, eval_metrics)

    def stops_early(self, done: int, eval_metrics) -> bool:
        if not self.stopper.update(checkpointing.best_score(eval_metrics)):
            return False
        logging.info(
            "Early stopping at step %d: no better validation accuracy than %.4f for %d "
            "evaluations.",
            done,
            self.stopper.best,
            self.stopper.patience,
        )
        return True

    def final_metrics(self, state, eval_metrics) -> dict:
        """The validation metrics of the last step: `eval_metrics`, else (the run had finished
        before this call) those metrics.jsonl holds of it, else a new evaluation."""
        if eval_metrics is not None:
            return eval_metrics
        last_row = next((r for r in reversed(self.logged) if "eval_accuracy" in r), None)
        if last_row is not None and last_row["step"] == int(state.step):
            return {k: v for k, v in last_row.items() if k.startswith("eval_")}
        return self.evaluate(state, int(state.step))

    def best_state(self, state):
        """With early stopping, the state of the best checkpoint (what the report evaluates)."""
        best = self.run.ckpt.best_step()
        if self.stopper.patience <= 0 or best in (None, int(state.step)):
            return state
        logging.info("Early stopping is on: the final report uses the best step, %d.", best)
        return self.run.ckpt.restore(state, step=best)


def _close(ckpt, writer) -> None:
    """Completes the checkpoint writes and flushes the logs; when an error is already on its
    way out (a full disk, say), an error of these (the same disk) does not replace it."""
    failing = sys.exc_info()[1] is not None
    for close in (ckpt.close, writer.flush):
        try:
            close()
        except Exception as e:  # noqa: BLE001  (whatever closing raises)
            if not failing:
                raise
            logging.debug("While stopping on an error, %s also failed: %s", close, e)


def final_report(run: Run, state, eval_metrics: dict) -> dict:
    """With config.final_report, `eval_metrics` plus the report that evaluation writes of the
    weights --mode=eval uses by default (the EMA when kept) under W/eval/<split>_<step>/."""
    config = run.config
    if not config.final_report:
        return eval_metrics
    weights = restore.default_weights(config)
    variables = state_lib.evaluated_variables(state)["ema" if weights == "ema" else ""]
    step = int(state.step)
    with interrupts.doing(
        f"while writing the final report: the run is trained and saved (step {step}), its "
        f"report was not written (python main.py --mode=eval --workdir={run.workdir} writes it)"
    ):
        results = evaluate.evaluate_variables(
            config, run.workdir, variables, step, run.info, run.mesh, "final", weights
        )
    return {
        **eval_metrics,
        "report_dir": results["report_dir"],
        "report_split": results["split"],
        "report_accuracy": results["accuracy"],
    }


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
