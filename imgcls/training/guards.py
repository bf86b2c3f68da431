"""Guards of the training loop: a step that is not finite stops the run (or is skipped).

The train step itself leaves the state unchanged at a step whose loss, gradients or BatchNorm
statistics are not finite (imgcls.training.step); NonFiniteGuard reads its `finite` flag on the
host and decides: config.on_nonfinite='stop' raises TrainingDiverged, 'skip' goes on until
config.max_nonfinite_steps such steps in a row. Early stopping is imgcls.training.early_stopping,
reduce-on-plateau imgcls.training.schedules.
"""

from absl import logging


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


def divergence_advice(config, ckpt) -> str:
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
