"""Hyperparameter sweeps: `python -m imgcls.sweep experiments/<name>.py --workdir=W --parallel=N`.

A sweep file names a base config and the trials, each a dict of `--config.*` overrides:

    BASE_CONFIG = "configs/default.py"
    def get_trials():  # imgcls.hyper builds these: grid, zip_, sample, repeat_seeds
        return hyper.grid(**{"optimizer.learning_rate": [1e-3, 3e-3], "batch_size": [32, 64]})
    def search_space(trial):  # optional, for --search=optuna: sample with trial.suggest_*
        return {"optimizer.learning_rate": trial.suggest_float("lr", 1e-4, 1e-1, log=True)}

Every trial is its own `main.py` process with its own workdir `W/<trial-name>`, so a trial
resumes from its checkpoints, a failing trial cannot take the others down, and
`tensorboard --logdir W` compares them all. `W/<trial>/status.json` records each trial's state;
running the same command again skips finished trials and resumes the others.
"""

import argparse
import concurrent.futures
import importlib.util
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import optuna

from imgcls import hyper, sweep_results
from imgcls.workdir import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "main.py")
POLL_SECONDS = 0.5  # how often a running Optuna trial's metrics.jsonl is read for pruning


def load_sweep(path: str):
    """The sweep module at `path` (an experiments/*.py file)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Sweep file {path} not found.")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, ROOT)  # sweep files may import configs/ and imgcls
    spec.loader.exec_module(module)
    if not hasattr(module, "BASE_CONFIG"):
        raise ValueError(f"{path} must define BASE_CONFIG (the path of the config it sweeps).")
    return module


def base_config_path(module) -> str:
    path = module.BASE_CONFIG
    for candidate in (path, os.path.join(ROOT, path)):
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(f"BASE_CONFIG {path} not found (relative paths are from {ROOT}).")


def write_status(trial_dir: str, **status) -> None:
    path = os.path.join(trial_dir, "status.json")
    with open(path + ".tmp", "w") as f:
        json.dump(status, f, indent=2)
    os.replace(path + ".tmp", path)  # readers never see half a file


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

    def __init__(self, workdir, base_config, parallel=1, gpus=None, metric="eval_accuracy"):
        self.workdir = os.path.abspath(workdir)
        self.base_config = base_config
        self.parallel = max(1, parallel)
        self.devices = Devices(gpus or [], self.parallel)
        self.metric = metric
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

    def run_all(self, trials: list[dict]) -> None:
        """Runs every trial that has not finished; prints one line per trial."""
        todo = []
        for overrides in trials:
            name = hyper.trial_name(overrides)
            previous = sweep_results.read_status(os.path.join(self.workdir, name))
            if previous and previous.get("state") == "done":
                print(f"skip (done): {name}", flush=True)
            else:
                todo.append((name, overrides))
        print(
            f"{len(trials) - len(todo)} of {len(trials)} trials done; running {len(todo)} "
            f"with up to {self.parallel} at a time",
            flush=True,
        )
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            futures = {pool.submit(self.run_trial, n, o): n for n, o in todo}
            try:
                for future in concurrent.futures.as_completed(futures):
                    s = future.result()
                    detail = s["error"] if s["state"] == "failed" else ""
                    print(
                        f"{s['state']}: {s['name']} ({s['wall_time_s']:.0f} s) {detail}", flush=True
                    )
            except KeyboardInterrupt:
                self.interrupt()
                for future in futures:
                    future.cancel()
                raise


def run_optuna(launcher, module, args) -> None:
    """TPE (or random/grid) search over `search_space(trial)` with median pruning."""
    if not hasattr(module, "search_space"):
        raise ValueError(f"{args.sweep} defines no search_space(trial) for --search=optuna.")
    storage = args.storage or f"sqlite:///{os.path.join(launcher.workdir, 'study.db')}"
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=args.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=args.seed),
        "grid": lambda: optuna.samplers.GridSampler(module.SEARCH_GRID, seed=args.seed),
    }
    study = optuna.create_study(
        study_name=args.study_name or os.path.splitext(os.path.basename(args.sweep))[0],
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=samplers[args.sampler](),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials),
    )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if args.storage is None:  # this machine's own study: a RUNNING trial was interrupted
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    remaining = args.trials - len(study.get_trials(deepcopy=False, states=finished))

    def objective(trial):
        overrides = module.search_space(trial)
        name = f"trial{trial.number:03d}"  # sampled floats make unreadable names
        trial.set_user_attr("name", name)

        def on_eval(step, value):
            trial.report(float(value), step)
            return trial.should_prune()

        status = launcher.run_trial(name, overrides, on_eval)
        if status["state"] == "pruned":
            raise optuna.TrialPruned()
        if status["state"] != "done":
            raise RuntimeError(f"trial {name} {status['state']}: {status['error']}")
        rows = read_metrics(os.path.join(launcher.workdir, name, "metrics.jsonl"))
        return max(r[args.metric] for r in rows if args.metric in r)

    print(
        f"study {study.study_name} in {storage}: running {max(0, remaining)} more of "
        f"{args.trials} trials",
        flush=True,
    )
    if remaining > 0:
        study.optimize(
            objective, n_trials=remaining, n_jobs=launcher.parallel, catch=(RuntimeError,)
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="experiments/<name>.py")
    parser.add_argument("--workdir", required=True, help="each trial runs in WORKDIR/<name>")
    parser.add_argument("--parallel", type=int, default=1, help="trials running at once")
    parser.add_argument("--dry_run", action="store_true", help="list the trials and exit")
    parser.add_argument(
        "--gpus",
        default=None,
        help="comma-separated GPU ids to share among parallel trials "
        "(default: CUDA_VISIBLE_DEVICES or all that nvidia-smi lists)",
    )
    parser.add_argument("--metric", default="eval_accuracy", help="logged metric to maximise")
    parser.add_argument("--search", choices=["list", "optuna"], default="list")
    parser.add_argument("--trials", type=int, default=20, help="--search=optuna: trials in all")
    parser.add_argument("--sampler", choices=["tpe", "random", "grid"], default="tpe")
    parser.add_argument(
        "--startup_trials",
        type=int,
        default=3,
        help="--search=optuna: trials run to the end before pruning starts",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by several machines (default: sqlite:///WORKDIR/study.db)",
    )
    parser.add_argument("--study_name", default=None)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    args = parser.parse_args(argv)
    try:
        module = load_sweep(args.sweep)
        base = base_config_path(module)
        trials = [] if args.search == "optuna" else module.get_trials()
        hyper.validate(trials)
    except (ValueError, FileNotFoundError) as e:
        print(f"imgcls.sweep: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"{len(trials)} trials of {base}:")
        for overrides in trials:
            print(f"  {hyper.trial_name(overrides)}: {' '.join(hyper.to_flags(overrides))}")
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    gpus = args.gpus.split(",") if args.gpus else detect_gpus()
    launcher = Launcher(args.workdir, base, args.parallel, gpus, args.metric)
    with open(os.path.join(args.workdir, "sweep.json"), "w") as f:
        json.dump(
            {
                "sweep": os.path.abspath(args.sweep),
                "base_config": base,
                "search": args.search,
                "trials": trials,
            },
            f,
            indent=2,
        )
    try:
        if args.search == "optuna":
            run_optuna(launcher, module, args)
        else:
            launcher.run_all(trials)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        rows = sweep_results.collect(args.workdir)
        if rows:
            sweep_results.write_results(args.workdir, rows)
    print(f"results: {os.path.join(args.workdir, 'results.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
