"""Sweeps: trials with their own overrides, ranked results, resume, failures, Optuna pruning."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_python

TINY = {"num_train_steps": 12, "final_report": False, "log_every_steps": 4}


def write_sweep(tmp_path, data_dir, trials_code, extra=""):
    """A sweep file over configs/default.py whose trials train for a few steps only."""
    fixed = {**TINY, "dataset.data_dir": data_dir}
    path = tmp_path / "sweep_def.py"
    path.write_text(
        "from imgcls import hyper\n"
        "BASE_CONFIG = 'configs/default.py'\n"
        f"FIXED = {fixed!r}\n"
        "def get_trials():\n"
        f"    return [{{**t, **FIXED}} for t in {trials_code}]\n" + extra
    )
    return str(path)


def sweep(*args, timeout=600):
    return run_python(["-m", "imgcls.sweeps", *map(str, args)], timeout=timeout)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def trial_dirs(workdir):
    return sorted(d for d in os.listdir(workdir) if os.path.isdir(os.path.join(workdir, d)))


def test_grid_sweep_runs_every_trial_with_its_overrides(tmp_path, data_dir):
    spec = write_sweep(
        tmp_path,
        data_dir,
        "hyper.grid(**{'optimizer.learning_rate': [1e-3, 1e-2], 'batch_size': [32, 64]})",
    )
    workdir = tmp_path / "sweep"
    dry = sweep(spec, "--workdir", workdir, "--dry_run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "4 trials" in dry.stdout and "--config.optimizer.learning_rate=0.01" in dry.stdout
    assert not workdir.exists()

    proc = sweep(spec, "--workdir", workdir, "--parallel", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = trial_dirs(workdir)
    assert len(names) == 4
    seen = set()
    for name in names:
        with open(workdir / name / "config.json") as f:
            config = json.load(f)
        with open(workdir / name / "status.json") as f:
            status = json.load(f)
        assert status["state"] == "done"
        assert (
            config["optimizer"]["learning_rate"] == status["overrides"]["optimizer.learning_rate"]
        )
        assert config["batch_size"] == status["overrides"]["batch_size"]
        assert config["num_train_steps"] == 12
        seen.add((config["optimizer"]["learning_rate"], config["batch_size"]))
    assert seen == {(1e-3, 32), (1e-3, 64), (1e-2, 32), (1e-2, 64)}

    rows = read_csv(workdir / "results.csv")
    assert len(rows) == 4 and {r["name"] for r in rows} == set(names)
    accuracies = [float(r["best_eval_accuracy"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert (workdir / "results.md").exists() and (workdir / "results.png").exists()

    logs = {n: (workdir / n / "metrics.jsonl").read_text() for n in names}
    again = sweep(spec, "--workdir", workdir, "--parallel", 2)
    assert again.returncode == 0 and again.stdout.count("skip (done)") == 4
    assert {n: (workdir / n / "metrics.jsonl").read_text() for n in names} == logs


def test_failing_trial_is_recorded_and_others_finish(tmp_path, data_dir):
    spec = write_sweep(tmp_path, data_dir, "[{'model.name': 'cnn'}, {'model.name': 'vgg'}]")
    workdir = tmp_path / "sweep"
    proc = sweep(spec, "--workdir", workdir, "--parallel", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(workdir / "results.csv")
    assert [r["state"] for r in rows] == ["done", "failed"]  # failed ranks last
    assert "Unknown model 'vgg'" in rows[1]["error"]
    with open(workdir / rows[1]["name"] / "status.json") as f:
        assert "Unknown model 'vgg'" in json.load(f)["error"]
    assert os.path.exists(workdir / rows[1]["name"] / "log.txt")


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, data_dir):
    spec = write_sweep(tmp_path, data_dir, "[{'seed': 0}, {'seed': 1, 'num_train_steps': 400}]")
    workdir = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "imgcls.sweeps", spec, "--workdir", str(workdir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = workdir / _wait_for_done(workdir, launcher)[0]
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, err[-2000:]
    statuses = {
        n: json.loads((workdir / n / "status.json").read_text()) for n in trial_dirs(workdir)
    }
    assert sorted(s["state"] for s in statuses.values()) == ["done", "interrupted"]
    done_before = (first / "status.json").read_text(), (first / "log.txt").read_text()

    proc = sweep(spec, "--workdir", workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("skip (done)") == 1 and "running 1 " in proc.stdout
    assert ((first / "status.json").read_text(), (first / "log.txt").read_text()) == done_before
    rows = read_csv(workdir / "results.csv")
    assert [r["state"] for r in rows] == ["done", "done"]


def _wait_for_done(workdir, launcher, timeout=300):
    """Names of trials that finished, once the first one has."""
    deadline = time.time() + timeout
    while time.time() < deadline and launcher.poll() is None:
        if workdir.exists():
            done = []
            for name in trial_dirs(workdir):
                try:
                    status = json.loads((workdir / name / "status.json").read_text())
                except (FileNotFoundError, json.JSONDecodeError):
                    continue
                if status["state"] == "done":
                    done.append(name)
            if done:
                return done
        time.sleep(0.2)
    pytest.fail("no trial finished")


OPTUNA_SPACE = """
SEARCH_GRID = {'learning_rate': [3e-3, 300.0], 'dropout_rate': [0.0, 0.1]}

def search_space(trial):
    lr = trial.suggest_categorical('learning_rate', SEARCH_GRID['learning_rate'])
    dropout = trial.suggest_categorical('dropout_rate', SEARCH_GRID['dropout_rate'])
    return {'optimizer.learning_rate': lr, 'optimizer.name': 'sgd', 'model.dropout_rate': dropout,
            'num_train_steps': 66, 'eval_every_epochs': 1.0, **FIXED_SEARCH}
FIXED_SEARCH = {'final_report': False, 'log_every_steps': 22}
"""


def test_optuna_search_prunes_or_ranks_diverging_trials_last(tmp_path, data_dir):
    import optuna

    spec = write_sweep(tmp_path, data_dir, "[{}]", OPTUNA_SPACE)
    with open(spec, "a") as f:
        f.write(f"FIXED_SEARCH['dataset.data_dir'] = {data_dir!r}\n")
    workdir = tmp_path / "optuna"
    args = (
        "--workdir",
        workdir,
        "--search",
        "optuna",
        "--trials",
        4,
        "--startup_trials",
        1,
        "--sampler",
        "grid",
        "--seed",
        0,
    )
    proc = sweep(spec, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    storage = f"sqlite:///{workdir}/study.db"
    study = optuna.load_study(study_name="sweep_def", storage=storage)  # reopens from the file
    trials = study.get_trials()
    assert sorted((t.params["learning_rate"], t.params["dropout_rate"]) for t in trials) == [
        (3e-3, 0.0),
        (3e-3, 0.1),
        (300.0, 0.0),
        (300.0, 0.1),
    ]
    complete = optuna.trial.TrialState.COMPLETE
    good = [t.value for t in trials if t.params["learning_rate"] == 3e-3 and t.state == complete]
    assert good and min(good) > 0.5
    for t in trials:
        if t.params["learning_rate"] == 300.0:  # diverges: pruned, or below every good trial
            assert t.state == optuna.trial.TrialState.PRUNED or t.value < min(good)
    assert study.best_trial.params["learning_rate"] == 3e-3
    rows = read_csv(workdir / "results.csv")
    assert len(rows) == 4 and rows[0]["optimizer.learning_rate"] == "0.003"
    assert sorted(r["name"] for r in rows) == ["trial000", "trial001", "trial002", "trial003"]

    again = sweep(spec, *args)  # the study is complete: nothing more runs
    assert again.returncode == 0 and "running 0 more" in again.stdout
    assert len(optuna.load_study(study_name="sweep_def", storage=storage).trials) == 4


def test_parallel_trials_get_their_own_gpus():
    from imgcls.sweeps.launcher import Devices

    def slots(devices, n):
        return [devices.slots.get() for _ in range(n)]

    four = Devices(["0", "1", "2", "3"], parallel=2)
    assert slots(four, 2) == ["0,1", "2,3"] and four.memory_fraction is None
    assert four.env("2,3")["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in four.env("2,3")
    shared = Devices(["0", "1"], parallel=4)  # two trials per GPU share its memory
    assert slots(shared, 4) == ["0", "1", "0", "1"]
    assert shared.env("1")["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45"
    cpu = Devices([], parallel=3)
    assert slots(cpu, 3) == [None, None, None]
    assert cpu.env(None).get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
