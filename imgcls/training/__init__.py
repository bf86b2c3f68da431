"""Training: `loop.train_and_evaluate(config, workdir)` and the pieces it calls.

loop.py (set-up and resume, the steps' bookkeeping, the final report), step.py (the
data-parallel train step and its StepOptions), state.py (the TrainState classes and a fresh
state), optim.py and schedules.py (optimizers, parameter groups and freezing; learning-rate
schedules and reduce-on-plateau), ema.py (a moving average of the weights), lookahead.py,
early_stopping.py, guards.py (non-finite steps), preemption.py (SIGTERM / SIGINT). May import
evaluation, transfer, run, config, data, models and the top-level leaves; never inference or
sweeps.
"""
