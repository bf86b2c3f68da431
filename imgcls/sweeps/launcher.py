"""Runs sweep trials, each its own `main.py` process in its own workdir `W/<trial-name>`.

A trial resumes from its checkpoints, a failing trial cannot take the others down, and
`tensorboard --logdir W` compares them all. `W/<trial>/status.json` records each trial's state
and the launcher that ran it; imgcls.sweeps.sweep decides which trials to run (a list, or Optuna).
On a multi-GPU host each running trial gets its own GPUs (Devices).
"""

import concurrent.futures
import functools
import json
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

from imgcls.config import files as config_files
from imgcls.run.workdir import read_metrics
from imgcls.sweeps import hyper
from imgcls.sweeps import results as sweep_results

ROOT = config_files.ROOT
MAIN = os.path.join(ROOT, "main.py")
POLL_SECONDS = 0.5  # how often a running Optuna trial's metrics.jsonl is read for pruning


WORKER = f"{socket.gethostname()}:{os.getpid()}"  # this launcher, in every status.json it writes


def write_json(path: str, value) -> None:
    """Writes `value` as JSON so that readers (on any machine sharing the folder, while other
    launchers write too) never see half a file."""
    tmp = f"{path}.{WORKER.replace(':', '.')}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def write_status(trial_dir: str, **status) -> None:
    write_json(os.path.join(trial_dir, "status.json"), status)


def _error_from_log(log_path: str) -> str:
    """The `imgcls: error:` line of a failed trial, else the last lines of its log."""
    with open(log_path, errors="replace") as f:
        lines = [line.rstrip() for line in f if line.strip()]
    for line in reversed(lines):
        if line.startswith("imgcls: error:") or line.startswith("FATAL"):
            return line
    return " | ".join(lines[-3:]) if lines else "no output"


class Devices:
    """Hands each running trial its own accelerators through CUDA_VISIBLE_DEVICES.

    With more parallel trials than GPUs, trials share GPUs and each gets an equal part of the
    GPU memory (JAX would otherwise preallocate 75% of it in every process).
    """

    GPU_MEMORY_TO_SHARE = 0.9

    def __init__(self, gpus: list[str], parallel: int):
        self.slots: queue.Queue = queue.Queue()
        self.memory_fraction = None
        if not gpus:
            for _ in range(parallel):
                self.slots.put(None)
            return
        per_trial = max(1, len(gpus) // parallel)
        sharing = math.ceil(parallel / len(gpus))
        if sharing > 1:
            self.memory_fraction = f"{self.GPU_MEMORY_TO_SHARE / sharing:.2f}"
        for i in range(parallel):
            start = (i * per_trial) % len(gpus)
            self.slots.put(",".join(gpus[start : start + per_trial]))

    def env(self, slot):
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
            if self.memory_fraction:
                env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = self.memory_fraction
        return env


def detect_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


class Launcher:
    """Runs trials as `main.py` processes, at most `parallel` at a time."""

    def __init__(
        self, workdir, base_config, parallel=1, gpus=None, metric="eval_accuracy", log=None
    ):
        self.workdir = os.path.abspath(workdir)
        self.base_config = base_config
        self.parallel = max(1, parallel)
        self.devices = Devices(gpus or [], self.parallel)
        self.metric = metric
        self.log = log or functools.partial(print, flush=True)  # one line per trial
        self.stopping = threading.Event()
        self.processes: set[subprocess.Popen] = set()

    def run_trial(self, name, overrides, on_eval=None) -> dict:
        """Runs (or resumes) one trial; `on_eval(step, value)` returning True prunes it."""
        trial_dir = os.path.join(self.workdir, name)
        os.makedirs(trial_dir, exist_ok=True)
        command = [
            sys.executable,
            MAIN,
            f"--config={self.base_config}",
            f"--workdir={trial_dir}",
            *hyper.to_flags(overrides),
        ]
        status = dict(name=name, overrides=overrides, command=command, returncode=None, error=None)
        status["worker"] = WORKER
        slot = self.devices.slots.get()
        start = time.time()
        try:
            write_status(trial_dir, **status, state="running", wall_time_s=0.0)
            log_path = os.path.join(trial_dir, "log.txt")
            with open(log_path, "a") as log:
                proc = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=self.devices.env(slot),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                self.processes.add(proc)
                state = self._wait(proc, trial_dir, on_eval)
                self.processes.discard(proc)
            status["returncode"] = proc.returncode
            if state == "failed":
                status["error"] = _error_from_log(log_path)
        finally:
            self.devices.slots.put(slot)
        status.update(state=state, wall_time_s=round(time.time() - start, 2))
        write_status(trial_dir, **status)
        return status

    def _wait(self, proc, trial_dir, on_eval) -> str:
        seen = 0
        while proc.poll() is None:
            time.sleep(POLL_SECONDS)
            if self.stopping.is_set():
                proc.send_signal(signal.SIGINT)  # lets the trial finish its checkpoint write
                proc.wait()
                return "interrupted"
            if on_eval is None:
                continue
            rows = read_metrics(os.path.join(trial_dir, "metrics.jsonl"))
            evals = [r for r in rows if self.metric in r]
            for row in evals[seen:]:
                if on_eval(row["step"], row[self.metric]):
                    proc.terminate()
                    proc.wait()
                    return "pruned"
            seen = len(evals)
        if proc.returncode in (-signal.SIGINT, 130):  # Ctrl-C reached the trial too
            return "interrupted"
        return "done" if proc.returncode == 0 else "failed"

    def interrupt(self) -> None:
        self.stopping.set()

    def report(self, status: dict) -> None:
        """Logs one line for a trial that ended."""
        detail = status["error"] if status["state"] == "failed" else ""
        self.log(f"{status['state']}: {status['name']} ({status['wall_time_s']:.0f} s) {detail}")

    def run_all(self, trials: list[dict]) -> None:
        """Runs every trial that has not finished; logs one line per trial."""
        todo = []
        for overrides in trials:
            name = hyper.trial_name(overrides)
            previous = sweep_results.read_status(os.path.join(self.workdir, name))
            if previous and previous.get("state") == "done":
                self.log(f"skip (done): {name}")
            else:
                todo.append((name, overrides))
        self.log(
            f"{len(trials) - len(todo)} of {len(trials)} trials done; running {len(todo)} "
            f"with up to {self.parallel} at a time"
        )
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            futures = {pool.submit(self.run_trial, n, o): n for n, o in todo}
            try:
                for future in concurrent.futures.as_completed(futures):
                    self.report(future.result())
            except KeyboardInterrupt:
                self.interrupt()
                for future in futures:
                    future.cancel()
                raise
