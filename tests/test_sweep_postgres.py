"""Several sweep launchers on one Optuna study in a real PostgreSQL (a throw-away cluster).

Skipped, saying why, only where PostgreSQL or its driver is not installed
(`bash .ci/install_postgres`; `pip install -e '.[sweep-db]'`).
"""

import csv
import functools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from postgres_cluster import Cluster, find_binaries

from imgcls.sweeps import results as sweep_results
from imgcls.sweeps import study as study_lib
from imgcls.sweeps import sweep

GOOD, BAD = 3e-3, 300.0  # adamw learning rates: learns / diverges at once
SPACE = """
BASE_CONFIG = 'configs/default.py'
FIXED = {fixed!r}

def search_space(trial):
    lr = trial.suggest_categorical('learning_rate', {choices!r})
    return {{'optimizer.learning_rate': lr, **FIXED}}
"""
# 22 steps per epoch of digits at batch 64: evaluations at steps 22 and 44.
TINY = {"num_train_steps": 44, "eval_every_epochs": 1.0, "log_every_steps": 22}


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster on 127.0.0.1 for this test session, stopped and removed after."""
    pytest.importorskip("psycopg", reason="the [sweep-db] extra: pip install -e '.[sweep-db]'")
    bindir, why = find_binaries()
    if bindir is None:
        pytest.skip(why)
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except RuntimeError as e:
        cluster.stop()
        pytest.fail(f"PostgreSQL is installed but did not start: {e}")
    yield cluster
    cluster.stop()


def write_space(tmp_path, data_dir, choices, name="space.py", **fixed):
    path = tmp_path / name
    fixed = {**TINY, "final_report": False, "dataset.data_dir": data_dir, **fixed}
    path.write_text(SPACE.format(fixed=fixed, choices=list(choices)))
    return str(path)


@pytest.fixture
def launch():
    """Starts launcher processes, each in its own process group (killed whole, as when a
    machine goes down); any still running at the end of the test are killed."""
    started = []

    def start(spec, workdir, url, study, *args):
        command = [sys.executable, "-m", "imgcls.sweeps", spec, "--workdir", str(workdir)]
        command += ["--search=optuna", f"--storage={url}", f"--study_name={study}"]
        proc = subprocess.Popen(
            command + ["--heartbeat=1", *map(str, args)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def worker_of(proc) -> str:
    return f"{os.uname().nodename}:{proc.pid}"


def wait_for(condition, procs, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        for p in procs:
            assert p.poll() is None, p.communicate()[0][-3000:]
        time.sleep(0.3)
    pytest.fail("timed out")


def finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


@functools.cache
def storage_of(url):
    """One storage per database for the test process: polling must not open an engine (and
    its pooled connections) per call, or the server runs out of connection slots."""
    return study_lib.open_storage(url)


def trials_of(url, name):
    """The study's trials; none while no launcher has created it yet."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage_of(url)).get_trials()
    except KeyError:
        return []


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_two_launchers_share_a_study_and_prune_across_machines(
    tmp_path, data_dir, postgres, launch
):
    import optuna

    url, name = postgres.url(), "side_by_side"
    spec = write_space(tmp_path, data_dir, [GOOD, BAD])
    seed = optuna.create_study(study_name=name, storage=storage_of(url), direction="maximize")
    for lr in (GOOD, BAD, BAD, BAD):  # the queue fixes which trial is good, not who runs it
        seed.enqueue_trial({"learning_rate": lr})
    workdir = tmp_path / "shared"  # one workdir that both "machines" see
    args = ("--trials=4", "--startup_trials=1", "--sampler=random")
    a = launch(spec, workdir, url, name, *args)
    # A runs the good trial alone; B starts once A has taken the next one.
    first_two = [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    wait_for(lambda: [t.state for t in trials_of(url, name)][:2] == first_two, [a])
    b = launch(spec, workdir, url, name, *args)
    out_a, out_b = finish(a), finish(b)

    # When both launchers take the last place at once, the later-numbered trial goes back to
    # the queue unrun (WAITING; imgcls/sweeps/study.py): it is no trial of the sweep.
    waiting = optuna.trial.TrialState.WAITING
    trials = [t for t in trials_of(url, name) if t.state != waiting]
    put_back = [t for t in trials_of(url, name) if t.state == waiting]
    assert all(t.number > 3 and "worker" not in t.user_attrs for t in put_back)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert [t.number for t in trials] == [0, 1, 2, 3], out_a + out_b
    assert all(t.state in finished for t in trials), [t.state for t in trials]
    workers = {t.number: t.user_attrs["worker"] for t in trials}
    assert set(workers.values()) == {worker_of(a), worker_of(b)}, workers
    assert workers[0] == worker_of(a)
    for t in trials:
        folder = workdir / t.user_attrs["name"]
        assert json.loads((folder / "status.json").read_text())["worker"] == workers[t.number]
        assert (folder / "log.txt").read_text().count("Training cnn on digits") == 1  # once
        if t.params["learning_rate"] == BAD:  # diverged: pruned at its first evaluation
            assert t.state == optuna.trial.TrialState.PRUNED
            assert list(t.intermediate_values) == [22]
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value > 0.5
    # B's trials were pruned against the trial A ran: the pruner reads every launcher's reports.
    assert any(workers[t.number] == worker_of(b) for t in trials if t.number > 0)
    assert "running 4 more of 4 trials (0 finished, 0 running elsewhere)" in out_a

    # Both launchers wrote the table of all four trials; any machine sharing W rebuilds it.
    table = read_csv(workdir / "results.csv")
    assert sorted(r["name"] for r in table) == ["trial000", "trial001", "trial002", "trial003"]
    assert table[0]["name"] == "trial000" and table[0]["state"] == "done"
    for suffix in ("csv", "md", "png"):
        os.remove(workdir / f"results.{suffix}")
    assert sweep_results.main([str(workdir)]) == 0
    assert read_csv(workdir / "results.csv") == table

    # Workdirs on different machines: the same table from the study alone.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert sweep_results.main([str(elsewhere), f"--storage={url}", f"--study_name={name}"]) == 0
    from_study = read_csv(elsewhere / "results.csv")
    keep = ("rank", "name", "state", "learning_rate", "best_eval_accuracy", "steps")
    assert [{k: r.get(k) for k in keep} for r in from_study] == [
        {k: r.get(k) for k in keep} for r in table
    ]


def test_a_killed_launchers_trial_is_failed_and_another_runs_in_its_place(
    tmp_path, data_dir, postgres, launch
):
    import optuna

    url, name = postgres.url(), "killed"
    spec = write_space(tmp_path, data_dir, [GOOD, 1e-3], num_train_steps=22)
    workdir = tmp_path / "shared"
    a = launch(spec, workdir, url, name, "--trials=2")
    b = launch(spec, workdir, url, name, "--trials=2")

    def running_on_b():
        mine = [t for t in trials_of(url, name) if t.user_attrs.get("worker") == worker_of(b)]
        return mine and (workdir / mine[0].user_attrs["name"] / "log.txt").exists() and mine[0]

    victim = wait_for(running_on_b, [a, b])
    os.killpg(b.pid, signal.SIGKILL)  # the launcher and its trial, as when a machine goes down
    b.communicate()
    out = finish(a)

    trials = {t.number: t for t in trials_of(url, name)}
    failed = [n for n, t in trials.items() if t.state == optuna.trial.TrialState.FAIL]
    done = [n for n, t in trials.items() if t.state == optuna.trial.TrialState.COMPLETE]
    assert failed == [victim.number] and len(done) == 2, out
    assert all(trials[n].user_attrs["worker"] == worker_of(a) for n in done)
    assert victim.number not in done  # failed, not re-run: the replacement is a new trial
    status = json.loads((workdir / victim.user_attrs["name"] / "status.json").read_text())
    assert status["state"] == "failed" and "stopped sending heartbeats" in status["error"]
    assert f"failed: {victim.user_attrs['name']} ({worker_of(b)} stopped" in out
    rows = {r["name"]: r for r in read_csv(workdir / "results.csv")}
    assert rows[victim.user_attrs["name"]]["state"] == "failed"
    assert sorted(r["state"] for r in rows.values()) == ["done", "done", "failed"]


def test_database_errors_are_one_clear_line(tmp_path, data_dir, postgres, capsys, monkeypatch):
    """Unreachable server, wrong password, missing database, wrong URL, no driver, and a study
    that holds another search space: exit status 2 and one line, no password shown."""
    spec = write_space(tmp_path, data_dir, [GOOD, BAD])

    def error(url, path=spec, study="errors"):
        code = sweep.main(
            [path, f"--workdir={tmp_path / 'w'}", "--search=optuna", f"--storage={url}"]
            + [f"--study_name={study}", "--trials=0"]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert postgres.password not in err
        return err

    with socket_on_free_port() as port:
        err = error(f"postgresql://imgcls:x@127.0.0.1:{port}/sweeps")
    assert f"cannot reach the database server at 127.0.0.1:{port}" in err
    assert "is PostgreSQL running there" in err
    err = error(postgres.url(password="not-the-password"))
    assert "refused user 'imgcls'" in err and "password authentication failed" in err
    assert "not-the-password" not in err
    err = error(postgres.url(database="nodb"))
    assert "database 'nodb' does not exist" in err and "createdb nodb" in err
    err = error(postgres.url().replace("postgresql://", "postgres://"))
    assert "unknown database kind 'postgres'" in err
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "psycopg", None)  # as without the [sweep-db] extra
        assert "pip install 'imgcls[sweep-db]'" in error(postgres.url())

    # --trials=0 records the space and runs nothing; another space on that study is refused.
    args = ["--search=optuna", f"--storage={postgres.url()}", "--study_name=errors", "--trials=0"]
    assert sweep.main([spec, f"--workdir={tmp_path / 'w'}", *args]) == 0
    assert "running 0 more of 0 trials" in capsys.readouterr().out
    other = write_space(tmp_path, data_dir, [GOOD, 0.1], name="other.py")
    err = error(postgres.url(), other)
    assert "study 'errors'" in err and "holds a different search space" in err
    assert "learning_rate" in err and "--study_name" in err
    assert study_lib.search_space(sweep.load_sweep(spec).search_space) != study_lib.search_space(
        sweep.load_sweep(other).search_space
    )


class socket_on_free_port:
    """A port on 127.0.0.1 that nothing listens on (bound but not listening, so not reused)."""

    def __enter__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


def test_claims_keep_the_budget_when_two_launchers_take_the_last_place_at_once(postgres):
    """B read the counts before A's claim landed: B's trial is numbered after A's, so B sees A's
    below it and puts its own back in the queue unrun; it runs once A's trial has failed."""
    import threading

    import optuna

    url, name = postgres.url(), "race"
    stores = [study_lib.open_storage(url, heartbeat_s=1) for _ in range(2)]  # two connections
    space = {"base_config": "configs/default.py", "params": {}}
    sampler = study_lib.make_sampler("random", 0)
    a, b = (
        study_lib.Claims(study_lib.open_study(s, name, space, sampler, 1), s, 1, 0.01)
        for s in stores
    )
    never = threading.Event()
    first = a.claim(never)
    assert first.number == 0

    stop, calls = threading.Event(), []

    def stale_counts():  # what B read before A's claim; the second look ends the test's wait
        calls.append(1)
        if len(calls) > 1:
            stop.set()
        return {"finished": 0, "running": 0}

    b.counts = stale_counts
    assert b.claim(stop) is None
    states = [t.state for t in trials_of(url, name)]
    assert states == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING]

    assert study_lib.finish(a.study, first, "failed")
    del b.counts
    second = b.claim(never)
    assert second.number == 1  # the queued trial, not a new one
    assert study_lib.finish(b.study, second, "done", 0.9)
    assert a.claim(never) is None and b.claim(never) is None  # the budget is full
    assert [t.state for t in trials_of(url, name)] == [
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.COMPLETE,
    ]
