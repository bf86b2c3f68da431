"""One training run per workdir: an OS advisory lock on W/train.lock while a run trains in W.

The kernel releases the lock when the process ends, however it ends (also on SIGKILL), so no
stale lock is ever left behind. The file names the holder (pid, host, since when) for the error
that a second trainer gets. With several processes (hosts) process 0 holds it for the run.
Plain files (fcntl): no JAX.
"""

import contextlib
import fcntl
import os
import socket
import time

LOCK_FILE = "train.lock"


class WorkdirInUse(ValueError):
    """Another process is training in the workdir."""


@contextlib.contextmanager
def training_lock(workdir: str, hold: bool = True):
    """Holds W/train.lock for the `with` block (when `hold`); WorkdirInUse at once, naming the
    holder, when another process holds it."""
    if not hold:
        yield
        return
    path = os.path.join(workdir, LOCK_FILE)
    f = open(path, "a+", encoding="utf-8")  # held open, and locked, for the whole run
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise WorkdirInUse(
                f"{workdir} is in use: {holder} is training there (W/{LOCK_FILE}). Wait for it "
                "to finish or stop it, or train in another --workdir."
            ) from None
        f.seek(0)
        f.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"pid {os.getpid()} on host {socket.gethostname()}, since {since}\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock
