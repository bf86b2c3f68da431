"""Preemption: SIGTERM (a cluster scheduler, a spot-instance notice) or SIGINT (Ctrl-C) asks a
run to stop; the loop finishes the step in flight, saves a checkpoint and exits with
Preempted.exit_status, and running the same command again resumes exactly from there.

One process: a signal handler sets a flag that the loop reads after every step. Several
processes must stop at the same step (saving is collective), so they agree through JAX's
preemption sync point: jax.distributed's coordination service listens for SIGTERM and picks the
step; SIGINT keeps its default there (KeyboardInterrupt: nothing saved past the last checkpoint).
"""

import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; rerun to resume."""

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step = signum, step
        self.exit_status = 128 + signum  # the shell's status of a process killed by signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: stopped after step {step} and saved a checkpoint there. Run the "
            f"same command again to resume from it (workdir {workdir})."
        )


class Preemption:
    """Within `with Preemption() as p:`, SIGTERM and SIGINT set a flag instead of killing the
    process; p.requested(step) says whether to stop after `step`. Handlers are restored on exit
    (and only the main thread can install them: elsewhere signals keep their defaults)."""

    def __init__(self):
        self.signum = None
        self._previous = {}
        self._sync_point = jax.process_count() > 1

    def _handle(self, signum, frame):
        del frame
        if self.signum is None:
            logging.warning(
                "%s received: finishing this step, saving a checkpoint, then stopping.",
                signal.Signals(signum).name,
            )
        self.signum = self.signum or signum

    def __enter__(self):
        if not self._sync_point and threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def requested(self, step: int) -> bool:
        """Whether to stop after `step` (the same answer in every process)."""
        if self._sync_point:
            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    self.signum = signal.SIGTERM
            except RuntimeError as e:  # jax_enable_preemption_service is off
                logging.warning("No preemption handling across processes: %s", e)
                self._sync_point = False
        return self.signum is not None
