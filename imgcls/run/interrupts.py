"""A stop by SIGTERM or SIGINT outside the training loop: one line on what was left unwritten.

The training loop stops by itself at a checkpoint (imgcls.training.preemption). Everywhere else
(setting a run up, its final report, --mode=eval, export, predict, inspect) main.py turns the
two signals into Interrupted, a BaseException, so that the work in flight unwinds: files being
written are removed by files.atomic_open (and an export's staging folder by export), and the
console gets one line from the innermost `doing(...)`, e.g. "SIGTERM received: stopped while
writing the final report ...". Files a SIGKILL left are removed by the next writer in the same
folder (files.remove_stale_partials). Plain Python: no JAX.
"""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DOING: list[str] = []  # what the process is doing, innermost last


class Interrupted(BaseException):
    """SIGTERM or SIGINT stopped the work in flight; the message says what was not written."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_status = 128 + signum  # the shell's status of a process killed by signum
        what = _DOING[-1] if _DOING else "before it wrote anything"
        super().__init__(f"{signal.Signals(signum).name} received: stopped {what}.")


@contextlib.contextmanager
def doing(what: str):
    """Within the block, an interruption says it stopped `what` ("while exporting ...: E
    was not written; run the same command again")."""
    _DOING.append(what)
    try:
        yield
    finally:
        _DOING.pop()


def _raise(signum, frame):
    del frame
    raise Interrupted(signum)


@contextlib.contextmanager
def raising_on_signals(enabled: bool = True):
    """SIGTERM and SIGINT raise Interrupted within the block (in the main thread; elsewhere,
    or not `enabled`, nothing changes); the handlers before it are restored after it."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
