"""Hyperparameter sweeps: `python -m imgcls.sweeps experiments/<name>.py --workdir=W`.

A sweep file names a base config and the trials, each a dict of `--config.*` overrides:

    BASE_CONFIG = "configs/default.py"
    def get_trials():  # imgcls.sweeps.hyper builds these: grid, zip_, sample, repeat_seeds
        return hyper.grid(**{"optimizer.learning_rate": [1e-3, 3e-3], "batch_size": [32, 64]})
    def search_space(trial):  # optional, for --search=optuna: sample with trial.suggest_*
        return {"optimizer.learning_rate": trial.suggest_float("lr", 1e-4, 1e-1, log=True)}

Every trial is its own `main.py` process with its own workdir `W/<trial-name>`
(imgcls.sweeps.launcher); `--parallel=N` runs N at once. Running the same command again skips
finished trials and resumes the others. With `--search=optuna` the trials come from an Optuna
study (imgcls.sweeps.study) that launchers on several machines can share through
`--storage=postgresql://...`. From Python (a notebook): `run_sweep(config, trials, workdir)`
takes a ConfigDict and returns the ranked results.
"""

import argparse
import ast
import concurrent.futures
import functools
import importlib.util
import math
import os
import pprint
import random
import sys

import ml_collections

from imgcls.config import files as config_files
from imgcls.run.workdir import read_metrics
from imgcls.sweeps import hyper
from imgcls.sweeps import launcher as launcher_lib
from imgcls.sweeps import results as sweep_results
from imgcls.sweeps import study as study_lib

ROOT = launcher_lib.ROOT
DEFAULT_HEARTBEAT_S = 60


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
    return config_files.path(module.BASE_CONFIG)


def write_config_file(config: ml_collections.ConfigDict, path: str) -> str:
    """Writes `config` as a config file that main.py's --config loads back equal; returns path."""
    values = config.to_dict()
    text = pprint.pformat(values, sort_dicts=False, width=100)
    try:
        same = ast.literal_eval(text) == values
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise ValueError("The base config must hold plain Python values (numbers, strings, ...).")
    with open(path, "w") as f:
        f.write(
            '"""The base config of this sweep, written by imgcls.sweeps.sweep.run_sweep."""\n\n'
            f"import ml_collections\n\nVALUES = {text}\n\n\n"
            "def get_config():\n    return ml_collections.ConfigDict(VALUES)\n"
        )
    return path


def write_results(workdir: str) -> list[dict]:
    """results.csv/md/png of the trial folders under `workdir`; the ranked rows."""
    rows = sweep_results.collect(workdir)
    return sweep_results.write_results(workdir, rows) if rows else []


def run_sweep(base_config, trials, workdir, parallel=1, gpus=None, log=None) -> list[dict]:
    """Runs (or resumes) `trials`, dicts of config overrides, of `base_config` (a ConfigDict or
    a config file path) in `workdir`; returns results.csv's rows, best first.

    The Python form of `python -m imgcls.sweeps` for notebooks and scripts; `log` (default
    print) gets one line per trial.
    """
    hyper.validate(trials)
    os.makedirs(workdir, exist_ok=True)
    if isinstance(base_config, ml_collections.ConfigDict):
        base_config = write_config_file(base_config, os.path.join(workdir, "base_config.py"))
    base = config_files.path(base_config)
    gpus = launcher_lib.detect_gpus() if gpus is None else gpus
    launcher = launcher_lib.Launcher(workdir, base, parallel, gpus, log=log)
    try:
        launcher.run_all(trials)
    finally:
        ranked = write_results(workdir)
    return ranked


def _mark_stale(launcher, study, trial) -> None:
    """A trial whose launcher stopped sending heartbeats was marked failed in the study; its
    status.json says so too where this machine shares the trial's folder."""
    worker = trial.user_attrs.get("worker", "its launcher")
    error = f"{worker} stopped sending heartbeats (killed, or its machine went down)"
    name = trial.user_attrs.get("name", f"trial{trial.number:03d}")
    launcher.log(f"failed: {name} ({error})")
    folder = os.path.join(launcher.workdir, name)
    status = sweep_results.read_status(folder)
    if status and status.get("state") == "running":
        launcher_lib.write_status(folder, **{**status, "state": "failed", "error": error})


def _run_optuna_trial(launcher, claims, module, trial, metric) -> str:
    """Runs one claimed trial and tells the study how it ended; returns that state."""
    study = claims.study
    name = f"trial{trial.number:03d}"  # sampled floats make unreadable names
    try:
        overrides = module.search_space(trial)
        trial.set_user_attr("name", name)
        trial.set_user_attr("worker", launcher_lib.WORKER)
        trial.set_user_attr("overrides", overrides)
    except Exception:
        study_lib.finish(study, trial, "failed")
        raise
    with study_lib.heartbeat(claims.storage, claims.trial_id(trial)):
        status = launcher.run_trial(
            name, overrides, lambda step, value: study_lib.report(trial, step, value)
        )
    rows = read_metrics(os.path.join(launcher.workdir, name))
    values = [float(r[metric]) for r in rows if metric in r]
    state, error = status["state"], status["error"]
    if state == "done" and not values:
        state, error = "failed", f"the trial logged no {metric}"
    result = sweep_results.summarize_metrics(rows)
    result.update(wall_time_s=status["wall_time_s"], error=error)
    launcher.report({**status, "state": state, "error": error})
    trial.set_user_attr("result", result)
    if not study_lib.finish(study, trial, state, max(values) if values else None):
        launcher.log(f"{name} was marked failed by another launcher (no heartbeat from this one)")
        return "failed"
    return state


def storage_url(args) -> str:
    """--storage, else this launcher's own SQLite file W/study.db."""
    return args.storage or f"sqlite:///{os.path.join(os.path.abspath(args.workdir), 'study.db')}"


def run_optuna(launcher, module, args) -> None:
    """Runs trials of the study until it holds --trials finished ones (see imgcls.sweeps.study):
    TPE (or random/grid) over `search_space(trial)`, median pruning across all launchers."""
    shared = args.storage is not None
    url = storage_url(args)
    name = args.study_name or os.path.splitext(os.path.basename(args.sweep))[0]
    storage = study_lib.open_storage(url, args.heartbeat, functools.partial(_mark_stale, launcher))
    params = study_lib.search_space(module.search_space)
    space = {"base_config": module.BASE_CONFIG, "params": params}
    seed = args.seed
    if shared:  # launchers sharing a study draw different points: each mixes itself in
        seed = random.Random(f"{args.seed}:{launcher_lib.WORKER}").randrange(2**31)
    sampler = study_lib.make_sampler(args.sampler, seed, getattr(module, "SEARCH_GRID", None))
    study = study_lib.open_study(storage, name, space, sampler, args.startup_trials)
    if not shared:  # W/study.db is this launcher's own: a running trial was interrupted
        study_lib.fail_running(study)
    budget = args.trials
    if args.sampler == "grid":  # each point once
        budget = min(budget, math.prod(len(v) for v in module.SEARCH_GRID.values()))
    claims = study_lib.Claims(study, storage, budget, poll_s=min(5.0, args.heartbeat))
    counts = claims.counts()
    more = max(0, budget - counts["finished"] - counts["running"])
    launcher.log(
        f"study {name} in {study_lib.redact(url)}: running {more} more of {budget} trials "
        f"({counts['finished']} finished, {counts['running']} running elsewhere); "
        f"launcher {launcher_lib.WORKER}, sampler seed {seed}"
    )

    def work():
        failures = 0
        try:
            while (trial := claims.claim(launcher.stopping)) is not None:
                state = _run_optuna_trial(launcher, claims, module, trial, args.metric)
                failures += state not in ("done", "pruned")
                if failures >= budget:
                    launcher.log(f"stopping: {failures} trials of this launcher failed")
                    return
        except BaseException:
            launcher.interrupt()  # the other threads stop too
            raise

    with concurrent.futures.ThreadPoolExecutor(launcher.parallel) as pool:
        futures = [pool.submit(work) for _ in range(launcher.parallel)]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:
            launcher.interrupt()
            raise


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--trials",
        type=int,
        default=20,
        help="--search=optuna: finished (complete or pruned) trials the study ends with; every "
        "launcher on the study runs trials until it holds this many",
    )
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
        help="Optuna storage URL shared by launchers on several machines, e.g. "
        "postgresql://USER:PASSWORD@HOST:5432/DB (needs imgcls[sweep-db]); "
        "default: sqlite:///WORKDIR/study.db, for one launcher",
    )
    parser.add_argument("--study_name", default=None, help="default: the sweep file's name")
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=DEFAULT_HEARTBEAT_S,
        help="--search=optuna: seconds between a running trial's heartbeats; a trial silent for "
        "twice that (its launcher was killed) is marked failed and another runs in its place",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    return parser


def _checked_sweep(args):
    """(the sweep module, its base config path, its trials) of the command line; ValueError
    or FileNotFoundError for what cannot run."""
    module = load_sweep(args.sweep)
    base = base_config_path(module)
    trials = [] if args.search == "optuna" else module.get_trials()
    hyper.validate(trials)
    if args.search == "optuna" and not hasattr(module, "search_space"):
        raise ValueError(f"{args.sweep} defines no search_space(trial) for --search=optuna.")
    if args.search == "optuna" and args.sampler == "grid" and not hasattr(module, "SEARCH_GRID"):
        raise ValueError(f"{args.sweep} defines no SEARCH_GRID for --sampler=grid.")
    if args.heartbeat < 1:
        raise ValueError(f"--heartbeat must be at least 1 second, got {args.heartbeat}.")
    return module, base, trials


def _run(launcher, module, args, trials) -> int:
    """Runs the sweep's trials (a list or an Optuna study); the exit status."""
    try:
        if args.search == "optuna":
            run_optuna(launcher, module, args)
        else:
            launcher.run_all(trials)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except study_lib.StudyError as e:
        print(f"imgcls.sweeps: error: {e}", file=sys.stderr)
        return 2
    except study_lib.DatabaseError as e:
        error = study_lib.describe_error(storage_url(args), e)
        print(f"imgcls.sweeps: error: {error}", file=sys.stderr)
        return 1
    finally:
        write_results(args.workdir)
    print(f"results: {os.path.join(args.workdir, 'results.md')}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        module, base, trials = _checked_sweep(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"imgcls.sweeps: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"{len(trials)} trials of {base}:")
        for overrides in trials:
            print(f"  {hyper.trial_name(overrides)}: {' '.join(hyper.to_flags(overrides))}")
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    gpus = args.gpus.split(",") if args.gpus else launcher_lib.detect_gpus()
    launcher = launcher_lib.Launcher(args.workdir, base, args.parallel, gpus, args.metric)
    sweep_file = {
        "sweep": os.path.abspath(args.sweep),
        "base_config": base,
        "search": args.search,
        "trials": trials,
    }
    launcher_lib.write_json(os.path.join(args.workdir, "sweep.json"), sweep_file)
    return _run(launcher, module, args, trials)


if __name__ == "__main__":
    sys.exit(main())
