"""Early stopping: stop when the validation accuracy has stopped improving
(config.early_stopping_patience evaluations in a row; 0: off).

The run's best checkpoint (by the same score, imgcls.run.checkpointing.best_score) is what the
final report then evaluates; a resumed run replays the evaluations that metrics.jsonl holds,
so it stops where an uninterrupted run would.
"""

from imgcls.run import checkpointing


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


def replayed(patience: int, rows) -> EarlyStopping:
    """An EarlyStopping that has seen the validations of metrics.jsonl rows (a resume)."""
    stopper = EarlyStopping(patience)
    for row in rows:
        if checkpointing.BEST_METRIC in row:
            stopper.update(checkpointing.best_score(row))
    return stopper
