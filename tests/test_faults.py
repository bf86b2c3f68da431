"""Fault injection: kills, preemption, divergence, damaged checkpoints, a full disk, big uploads.

Each test does to a run what the real world does (SIGKILL at random points, SIGTERM from a
scheduler, a learning rate that explodes, a checkpoint file cut short or overwritten, a disk
that fills up, uploads built to blow up memory) and checks that no work is lost, nothing wrong
is saved, resuming is exact, and the user gets one clear line.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, load_config, run_python

import imgcls
from imgcls import data, parallel
from imgcls.evaluation import evaluate
from imgcls.inference import predict
from imgcls.run import checkpointing, files, lock
from imgcls.training import state as state_lib
from imgcls.training import step as train_step
from imgcls.training.preemption import Preempted

STEPS = 60
TIMING_KEYS = ("steps_per_sec",)


def small_config(data_dir, **overrides):
    """The default cnn on digits, checkpointing every 3 steps: kills often land in a save."""
    config = load_config()
    config.dataset.data_dir = data_dir
    config.num_train_steps = STEPS
    config.checkpoint_every_steps = 3
    config.log_every_steps = 5
    config.eval_every_epochs = 1.0  # 22 steps
    config.final_report = False
    for key, value in overrides.items():
        config[key] = value
    return config


def flags(config, workdir):
    keys = ("num_train_steps", "checkpoint_every_steps", "log_every_steps", "eval_every_epochs")
    return [
        "main.py",
        "--config=configs/default.py",
        f"--config.dataset.data_dir={config.dataset.data_dir}",
        *(f"--config.{k}={config[k]}" for k in keys),
        "--config.final_report=False",
        f"--workdir={workdir}",
    ]


def metric_rows(workdir):
    """metrics.jsonl without the timing values (they differ from run to run)."""
    rows = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)  # every line is whole, valid JSON
            rows.append({k: v for k, v in row.items() if k not in TIMING_KEYS})
    return rows


def final_state(config, workdir, step=None):
    template, _, _ = state_lib.initial_state(
        config, data.get_dataset_info(config), parallel.create_mesh()
    )
    with checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as c:
        return c.restore(template, step)


def assert_same_state(a, b):
    assert int(a.step) == int(b.step)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run: (config, workdir)."""
    config = small_config(data_dir)
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    imgcls.train_and_evaluate(config, workdir)
    return config, workdir


def start(config, workdir):
    """main.py training `config` in a child process whose console goes to a file: a pipe that
    nobody reads while the child runs fills up and blocks it."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, *flags(config, workdir)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    proc.console = log
    return proc


def console(proc) -> str:
    """What the child of start() has written to its stderr so far."""
    proc.console.seek(0)
    return proc.console.read()


def wait_for_logged_step(proc, workdir, step, timeout=300):
    """Waits until metrics.jsonl has a row at or after `step` (the process is training)."""
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, console(proc)[-3000:]
        if os.path.exists(path):
            with open(path) as f:
                steps = [json.loads(line)["step"] for line in f if line.endswith("\n")]
            if steps and max(steps) >= step:
                return
        time.sleep(0.01)
    raise TimeoutError(f"no step {step} in {path}")


def test_sigkill_and_sigterm_at_random_points_resume_exactly(reference, tmp_path):
    """Two SIGKILLs and a SIGTERM at random steps (checkpoints every 3 steps, so some land in a
    save), each followed by a rerun: the final state and metrics.jsonl are bitwise the
    uninterrupted run's."""
    config, ref_dir = reference
    workdir = str(tmp_path / "interrupted")
    rng = random.Random(0)
    points = sorted(rng.sample(range(5, STEPS - 10, 5), 3))
    for i, step in enumerate(points):
        proc = start(config, workdir)
        wait_for_logged_step(proc, workdir, step)
        time.sleep(rng.uniform(0.0, 0.3))
        if i < 2:
            proc.kill()
            proc.wait()
            continue
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        err = console(proc)
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert "Traceback" not in err
        message = [line for line in err.splitlines() if line.startswith("imgcls: SIGTERM")]
        assert len(message) == 1, err[-3000:]
        stopped = int(message[0].split("stopped after step ")[1].split()[0])
        with checkpointing.Checkpointer.of_workdir(workdir) as ckpt:
            assert ckpt.latest_step() == stopped >= step  # the step it stopped at is saved
    proc = run_python(flags(config, workdir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = [line for line in proc.stderr.splitlines() if re.match(r"I\d{4} ", line)]
    sources = {line.split("]")[0].split()[-1].split(":")[0] for line in info}
    # Ours (resolve.py: the splits line) and CLU's progress lines (and TensorFlow's C++ start-up
    # line); no Orbax INFO.
    ours = {"cli.py", "resolve.py", "loop.py", "logging_writer.py", "local.py", "port.cc"}
    assert sources <= ours, sources
    assert_same_state(final_state(config, workdir), final_state(config, ref_dir))
    assert metric_rows(workdir) == metric_rows(ref_dir)


def test_a_second_trainer_on_a_workdir_stops_at_once(reference, tmp_path):
    """The first trainer paused mid-run (SIGSTOP), holding W/train.lock: a second one on the
    same workdir exits with one line naming it; the first then finishes as if alone."""
    config, ref_dir = reference
    workdir = str(tmp_path / "shared")
    first = start(config, workdir)
    wait_for_logged_step(first, workdir, 5)
    first.send_signal(signal.SIGSTOP)
    try:
        second = run_python(flags(config, workdir), timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("imgcls: error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"is in use: pid {first.pid} on host " in errors[0]
    first.wait(timeout=300)
    assert first.returncode == 0, console(first)[-3000:]
    assert_same_state(final_state(config, workdir), final_state(config, ref_dir))
    assert metric_rows(workdir) == metric_rows(ref_dir)


def test_the_training_lock_is_released_when_its_holder_ends(tmp_path):
    with lock.training_lock(str(tmp_path)):
        with pytest.raises(lock.WorkdirInUse, match=rf"pid {os.getpid()} on host"):
            with lock.training_lock(str(tmp_path)):
                pass
    with lock.training_lock(str(tmp_path)):  # free again (and after a SIGKILL: the kernel's)
        pass


def test_resuming_with_another_config_is_refused_unless_allowed(reference, tmp_path):
    config, ref_dir = reference
    workdir = str(tmp_path / "copy")
    shutil.copytree(ref_dir, workdir)
    saved = open(os.path.join(workdir, "config.json")).read()
    other = config.copy_and_resolve_references()
    other.seed, other.optimizer.learning_rate = 1, 0.01
    with pytest.raises(ValueError) as refused:
        imgcls.train_and_evaluate(other, workdir)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "at step 60" in message
    assert "optimizer.learning_rate: 0.003 -> 0.01; seed: 0 -> 1." in message
    assert "--config.allow_config_change=True" in message
    assert open(os.path.join(workdir, "config.json")).read() == saved  # nothing rewritten

    longer = config.copy_and_resolve_references()
    longer.num_train_steps = STEPS + 5  # how long it trains may change
    imgcls.train_and_evaluate(longer, workdir)
    other.allow_config_change = True
    other.num_train_steps = STEPS + 10
    imgcls.train_and_evaluate(other, workdir)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "config_changes.jsonl"))]
    assert rows[0] == {"step": 60, "changes": {"num_train_steps": [60, 65]}}
    assert rows[1]["step"] == 65 and rows[1]["changes"]["seed"] == [0, 1]
    assert json.load(open(os.path.join(workdir, "config.json")))["seed"] == 1


def wait_for_path(proc, path, timeout=300):
    """Waits until `path` exists while the process runs."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, console(proc)[-3000:]
        assert time.time() < deadline, f"no {path}"
        time.sleep(0.005)


def partial_files(directory) -> list[str]:
    return [n for _, _, names in os.walk(directory) for n in names if ".partial-" in n]


def test_sigterm_during_the_final_report_or_eval_is_one_line_and_leaves_no_partial_file(
    reference, tmp_path
):
    """SIGTERM once the report's folder exists (its figures being written): exit 143, one line
    saying what was not written, no `.partial-` file; the rerun writes the report, and removes
    what a SIGKILL left of one."""
    config, _ = reference
    workdir = str(tmp_path / "report")
    command = [a for a in flags(config, workdir) if a != "--config.final_report=False"]
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, stderr=log, text=True)
    proc.console = log
    report = os.path.join(workdir, "eval", f"test_{STEPS}")
    wait_for_path(proc, report)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = console(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("imgcls:")]
    assert lines == [
        "imgcls: SIGTERM received: stopped while writing the final report: the run is trained "
        f"and saved (step {STEPS}), its report was not written (python main.py --mode=eval "
        f"--workdir={workdir} writes it)."
    ]
    assert partial_files(workdir) == []
    assert not os.path.exists(os.path.join(report, "report.md"))

    left = os.path.join(report, "confusion_matrix.png.partial-999999999")  # a SIGKILL's
    open(left, "w").close()
    proc = run_python(["main.py", "--mode=eval", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.exists(os.path.join(report, "report.md")) and partial_files(workdir) == []

    log = tempfile.TemporaryFile(mode="w+")
    evaluating = subprocess.Popen(
        [sys.executable, "main.py", "--mode=eval", f"--workdir={workdir}", "--split=train"],
        cwd=ROOT,
        stderr=log,
        text=True,
    )
    evaluating.console = log
    wait_for_path(evaluating, os.path.join(workdir, "eval", f"train_{STEPS}"))
    evaluating.send_signal(signal.SIGINT)
    evaluating.wait(timeout=120)
    err = console(evaluating)
    assert evaluating.returncode == 128 + signal.SIGINT, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("imgcls:")] == [
        f"imgcls: SIGINT received: stopped while evaluating {workdir}: its report was not "
        "written; run the same command again."
    ]
    assert "Traceback" not in err and partial_files(workdir) == []


def test_stale_partial_files_of_dead_processes_are_removed(tmp_path):
    for name in ("a.png.partial-999999999", f"b.json.partial-{os.getpid()}", "c.png"):
        (tmp_path / name).write_text("x")
    assert files.remove_stale_partials(tmp_path) == ["a.png.partial-999999999"]
    assert sorted(os.listdir(tmp_path)) == [f"b.json.partial-{os.getpid()}", "c.png"]


def test_rerunning_a_finished_run_changes_nothing(reference, tmp_path):
    config, ref_dir = reference
    workdir = str(tmp_path / "copy")
    shutil.copytree(ref_dir, workdir)
    before = open(os.path.join(workdir, "metrics.jsonl")).read()
    again = imgcls.train_and_evaluate(config, workdir)
    assert open(os.path.join(workdir, "metrics.jsonl")).read() == before  # no duplicate row
    assert again["eval_accuracy"] == metric_rows(ref_dir)[-1]["eval_accuracy"]


def test_sigint_in_process_saves_and_resumes(data_dir, tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) while training: the step finishes, is saved, Preempted says how to go
    on; the rerun continues from that step."""
    config = small_config(data_dir, num_train_steps=20, checkpoint_every_steps=100)
    real = parallel.global_batch
    calls = {"n": 0}

    def interrupt_at_step_7(mesh, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            signal.raise_signal(signal.SIGINT)
        return real(mesh, batch)

    monkeypatch.setattr(parallel, "global_batch", interrupt_at_step_7)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(Preempted, match="SIGINT received: stopped after step 7") as stopped:
        imgcls.train_and_evaluate(config, str(tmp_path))
    assert stopped.value.exit_status == 130
    with checkpointing.Checkpointer.of_workdir(str(tmp_path)) as ckpt:
        assert ckpt.all_steps() == [7]
    monkeypatch.setattr(parallel, "global_batch", real)
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is restored
    imgcls.train_and_evaluate(config, str(tmp_path))
    assert [r["step"] for r in metric_rows(str(tmp_path))] == [5, 10, 15, 20, 20]


def poison(monkeypatch, bad_steps):
    """Makes the train step report steps `bad_steps` (0-based) as non-finite, and do what it
    does with a NaN loss: leave all but the step count unchanged, and the metrics empty."""
    real = train_step.train_step

    def poisoned(state, batch, options):
        new, metrics, finite = real(state, batch, options)
        bad = jnp.isin(state.step, jnp.asarray(bad_steps))
        old = state.replace(step=new.step)
        new = jax.tree.map(lambda n, o: jnp.where(bad, o, n), new, old)
        metrics = jax.tree.map(lambda m: jnp.where(bad, jnp.zeros_like(m), m), metrics)
        return new, metrics, finite & ~bad

    monkeypatch.setattr(train_step, "train_step", poisoned)


def test_divergence_stops_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    config = small_config(data_dir, num_train_steps=30, checkpoint_every_steps=5)
    poison(monkeypatch, [12])  # the 13th step
    with pytest.raises(imgcls.TrainingDiverged, match=r"diverged at step 13.*step 10, stays"):
        imgcls.train_and_evaluate(config, str(tmp_path))
    with checkpointing.Checkpointer.of_workdir(str(tmp_path)) as ckpt:
        assert ckpt.latest_step() == 10
    assert max(r["step"] for r in metric_rows(str(tmp_path))) == 10


def test_skip_mode_skips_and_counts_non_finite_steps(data_dir, tmp_path, monkeypatch):
    config = small_config(data_dir, num_train_steps=20, on_nonfinite="skip", max_nonfinite_steps=3)
    poison(monkeypatch, [6, 7, 13])
    imgcls.train_and_evaluate(config, str(tmp_path / "skip"))
    rows = [r for r in metric_rows(str(tmp_path / "skip")) if "train_loss" in r]
    assert [r["skipped_steps"] for r in rows] == [0, 2, 3, 3]
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    poison(monkeypatch, [6, 7, 8])  # 3 in a row: too many
    with pytest.raises(imgcls.TrainingDiverged, match=r"step 9 \(3 steps in a row\)"):
        imgcls.train_and_evaluate(config, str(tmp_path / "stop"))


def test_a_real_divergence_is_caught_and_no_nan_is_written(data_dir, tmp_path):
    config = small_config(data_dir, num_train_steps=40, checkpoint_every_steps=2)
    config.optimizer.learning_rate = 1e6
    with pytest.raises(imgcls.TrainingDiverged, match="learning_rate"):
        imgcls.train_and_evaluate(config, str(tmp_path))
    for row in metric_rows(str(tmp_path)):  # json.loads accepted every line; no NaN in it
        assert all(v is None or np.isfinite(v) for v in row.values())
    with checkpointing.Checkpointer.of_workdir(str(tmp_path)) as ckpt:
        for step in ckpt.all_steps():
            variables = ckpt.restore_variables(step)
            assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


def test_the_step_leaves_the_state_alone_when_the_loss_is_not_finite(data_dir):
    config = small_config(data_dir)
    info = data.get_dataset_info(config)
    mesh = parallel.create_mesh()
    state, _, _ = state_lib.initial_state(config, info, mesh)
    batch = parallel.global_batch(mesh, next(data.create_train_iterator(config, info)))
    config.dataset.std = (0.0,)  # x / 0: every input is infinite or NaN
    p_bad = train_step.make_train_step(config, info.num_classes, mesh)
    before = jax.tree.map(np.asarray, state)
    after, metrics, finite = p_bad(state, batch)
    assert not bool(finite)
    assert int(after.step) == int(before.step) + 1
    assert_same_state(after.replace(step=before.step), before)
    assert float(metrics.loss.count) == 0  # nothing to average


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, data_dir):
    """A 30-step run with checkpoints at 10, 20 and 30 (evaluated at 30 only), and a 40-step one
    to compare with (a constant learning rate after warm-up: their first 30 steps agree)."""
    config = small_config(data_dir, num_train_steps=30, checkpoint_every_steps=10)
    config.eval_every_epochs = 100.0
    config.optimizer.schedule = "constant"
    config.keep_checkpoints = 3
    workdir = str(tmp_path_factory.mktemp("checkpointed"))
    imgcls.train_and_evaluate(config, workdir)
    longer = config.copy_and_resolve_references()
    longer.num_train_steps = 40
    reference = str(tmp_path_factory.mktemp("forty"))
    imgcls.train_and_evaluate(longer, reference)
    return config, workdir, longer, reference


def damaged_copy(workdir, tmp_path, how):
    copy = str(tmp_path / how)
    shutil.copytree(workdir, copy)
    step_dir = os.path.join(copy, "checkpoints", "30", "default")
    chunks = os.path.join(step_dir, "ocdbt.process_0", "d")
    paths = [os.path.join(chunks, name) for name in os.listdir(chunks)]
    if how == "truncated":
        largest = max(paths, key=os.path.getsize)
        with open(largest, "r+b") as f:
            f.truncate(os.path.getsize(largest) // 2)
    elif how == "swapped":  # step 20's valid files under step 30: Orbax restores them happily
        shutil.rmtree(step_dir)
        shutil.copytree(os.path.join(copy, "checkpoints", "20", "default"), step_dir)
    elif how == "empty_metadata":
        open(os.path.join(step_dir, "_METADATA"), "w").close()
    return copy


@pytest.mark.parametrize("how", ["truncated", "empty_metadata"])
def test_a_damaged_newest_checkpoint_falls_back_to_an_intact_one(
    checkpointed, tmp_path, how, caplog
):
    _, workdir, _, _ = checkpointed
    copy = damaged_copy(workdir, tmp_path, how)
    result = evaluate.evaluate_checkpoint(copy, "latest")
    if how == "truncated":  # it names the array, not TensorStore's repr of a C++ binding
        assert re.search(r"step 30 .*: array \S+ cannot be read \(\w+: ", caplog.text)
        assert "pybind11" not in caplog.text
    assert result["step"] == 20  # the newest intact step, said in the log
    with pytest.raises(checkpointing.CorruptCheckpoint, match="step 30 .*corrupt") as error:
        evaluate.evaluate_checkpoint(copy, "30")
    assert len(str(error.value).splitlines()) == 1 and "another --checkpoint" in str(error.value)
    assert predict.Predictor(copy).step == 20


def test_resume_past_a_damaged_checkpoint_is_exact(checkpointed, tmp_path):
    """Step 30's files replaced by another step's valid ones (as random bytes that land in
    uncompressed data do): Orbax restores them without an error; the checksums catch it and
    training resumes from 20."""
    config, workdir, longer, reference = checkpointed
    copy = damaged_copy(workdir, tmp_path, "swapped")
    with pytest.raises(checkpointing.CorruptCheckpoint, match=r"step 30 .*array \['.*crc32"):
        final_state(longer, copy, step=30)
    imgcls.train_and_evaluate(longer, copy)  # resumes from 20, not from the damaged 30
    assert os.path.isdir(os.path.join(copy, "corrupt_checkpoints", "30"))  # kept, set aside
    assert_same_state(final_state(longer, copy), final_state(longer, reference))
    assert metric_rows(copy) == metric_rows(reference)


def test_a_checkpoint_without_its_checksums_is_not_trusted(checkpointed, tmp_path, caplog):
    """Step 30's checksums file removed and its optimizer state damaged (issue 24: it was
    restored without a word): a resume falls back to step 20, the newest verified step, naming
    the missing file, and ends as the uninterrupted run; eval and predict use step 30 saying it
    is unverified; trust_unverified_checkpoints resumes from it."""
    config, workdir, longer, reference = checkpointed
    copy = str(tmp_path / "unverified")
    shutil.copytree(workdir, copy)
    missing = os.path.join(copy, "checkpoints", "checksums", "30.json")
    os.remove(missing)
    template, _, _ = state_lib.initial_state(
        longer, data.get_dataset_info(longer), parallel.create_mesh()
    )
    with checkpointing.Checkpointer(os.path.join(copy, "checkpoints")) as ckpt:
        unverified = r"step 30 .*checksums/30\.json is missing"
        with pytest.raises(checkpointing.UnverifiedCheckpoint, match=unverified):
            ckpt.restore(template, step=30)
    result = evaluate.evaluate_checkpoint(copy, "latest")
    assert result["step"] == 30 and "using it unverified" in caplog.text
    assert missing in caplog.text

    trusting = str(tmp_path / "trusting")
    shutil.copytree(copy, trusting)
    caplog.clear()
    imgcls.train_and_evaluate(longer, copy)  # resumes from 20
    assert f"{missing} is missing. Trying the previous step" in caplog.text
    assert os.path.isdir(os.path.join(copy, "unverified_checkpoints", "30"))
    assert_same_state(final_state(longer, copy), final_state(longer, reference))
    assert metric_rows(copy) == metric_rows(reference)

    trusted = longer.copy_and_resolve_references()
    trusted.trust_unverified_checkpoints = True
    caplog.clear()
    imgcls.train_and_evaluate(trusted, trusting)  # resumes from 30, unverified
    assert "30.json): using it unverified" in caplog.text
    assert not os.path.exists(os.path.join(trusting, "unverified_checkpoints"))
    assert_same_state(final_state(longer, trusting), final_state(longer, reference))


def test_no_verified_checkpoint_is_one_clear_error(checkpointed, tmp_path):
    _, workdir, longer, _ = checkpointed
    copy = str(tmp_path / "none")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "checkpoints", "checksums"))
    with pytest.raises(checkpointing.UnverifiedCheckpoint) as error:
        imgcls.train_and_evaluate(longer, copy)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "no saved step of [10, 20, 30] is both intact and verified" in message
    assert "--config.trust_unverified_checkpoints=True" in message


def test_checksums_of_deleted_steps_go_with_them(checkpointed):
    _, workdir, _, _ = checkpointed
    sums = sorted(os.listdir(os.path.join(workdir, "checkpoints", "checksums")))
    with checkpointing.Checkpointer.of_workdir(workdir) as ckpt:
        assert sums == [f"{step}.json" for step in sorted(ckpt.all_steps(), key=str)]


def test_non_finite_weights_are_refused_by_eval_and_predict(checkpointed, tmp_path):
    config, workdir, _, _ = checkpointed
    copy = str(tmp_path / "nan")
    shutil.copytree(workdir, copy)
    state = final_state(config, copy)
    state = state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
    with checkpointing.Checkpointer(os.path.join(copy, "checkpoints"), keep=5) as ckpt:
        ckpt.save(99, state)
    with pytest.raises(ValueError, match="step 99 .* non-finite weights"):
        evaluate.evaluate_checkpoint(copy, "latest")
    with pytest.raises(ValueError, match="non-finite weights"):
        predict.Predictor(copy, "latest")


def can_mount_tmpfs():
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(checkpointed, tmp_path):
    """--mode=eval writing its report onto a disk with room for little more than the run."""
    _, workdir, _, _ = checkpointed
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(workdir) for f in fs)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f"mount -t tmpfs -o size={size // 1024 + 400}k tmpfs {disk} && "
        f"cp -r {workdir} {disk}/w && "
        f"{sys.executable} main.py --mode=eval --workdir={disk}/w; "
        f'echo "exit=$?"; ls -la {disk}/w/eval/*'
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("imgcls: error")]
    assert "exit=1" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert len(errors) == 1 and "No space left on device" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert ".partial-" not in proc.stdout  # no temporary file left behind
    assert not [line for line in proc.stdout.splitlines() if line.split()[4:5] == ["0"]]


def on_a_small_disk(tmp_path, kilobytes, command):
    """Runs `command` (a shell line; $DISK is a tmpfs of `kilobytes`) in a user namespace."""
    disk = tmp_path / "small_disk"
    disk.mkdir(parents=True)
    script = f"mount -t tmpfs -o size={kilobytes}k tmpfs {disk} && DISK={disk}; {command}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_training_and_export_on_a_full_disk_are_one_line_each(checkpointed, tmp_path):
    """Issue 24: training printed 4-13 Orbax tracebacks (up to 476 lines) before its line,
    export an 86-line TensorFlow traceback."""
    config, workdir, _, _ = checkpointed
    train = " ".join(flags(config, "$DISK/w")).replace("main.py", f"{sys.executable} main.py")
    proc = on_a_small_disk(tmp_path, 700, f"{train}; echo exit=$?")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("imgcls: error:")]
    assert "exit=1" in proc.stdout, proc.stderr[-3000:]
    assert len(errors) == 1 and "No space left on device" in errors[0], proc.stderr[-3000:]
    assert "could not write " in errors[0] and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) < 40, proc.stderr[-3000:]

    export = f"{sys.executable} main.py --mode=export --workdir={workdir} --export_dir=$DISK/e"
    proc = on_a_small_disk(tmp_path / "b", 300, f"{export}; echo exit=$?; ls $DISK")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("imgcls: error:")]
    assert "exit=1" in proc.stdout, proc.stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "/e/saved_model/30: No space left on device" in errors[0]
    assert proc.stdout.split("exit=1")[1].split() == []  # nothing of the export left


def test_a_damaged_config_json_is_one_line_naming_the_file_and_key(checkpointed, tmp_path):
    _, workdir, _, _ = checkpointed
    copy = str(tmp_path / "config")
    shutil.copytree(workdir, copy)
    path = os.path.join(copy, "config.json")
    saved = json.load(open(path))
    with open(path, "w") as f:
        f.write('{"seed": 0,\n')  # cut short
    with pytest.raises(ValueError) as error:
        evaluate.evaluate_checkpoint(copy)
    assert str(error.value).startswith(f"{path} is not valid JSON (Expecting property name")
    saved["dataset"]["image_size"] = "big"
    with open(path, "w") as f:
        json.dump(saved, f)
    with pytest.raises(ValueError) as error:
        predict.Predictor(copy)
    assert str(error.value).startswith(
        f"{path}: config.dataset.image_size='big' must be an integer >= 0"
    )


SERVE_MEMORY = """
import io, json, resource, sys, threading
import numpy as np
from PIL import Image
from fastapi.testclient import TestClient
from imgcls.inference import predict, serve

def encoded(side, fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (0, 0, 0)).save(buffer, format=fmt)
    return buffer.getvalue()

uploads = [("png16mp.png", encoded(4000, "PNG"))] * 6
uploads += [("jpeg49mp.jpg", encoded(7000, "JPEG"))] * 2 + [("png49mp.png", encoded(7000, "PNG"))]
app = serve.create_app(predict.Predictor(sys.argv[1], batch_size=8))
with TestClient(app) as client:
    client.post("/predict", files={"file": ("warm.png", encoded(64, "PNG"), "image/png")})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    statuses = {}
    def send(name, body):
        response = client.post("/predict", files={"file": (name, body, "image/png")})
        statuses.setdefault(name, []).append(response.status_code)
    threads = [threading.Thread(target=send, args=upload) for upload in uploads]
    [t.start() for t in threads]
    [t.join() for t in threads]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "statuses": statuses}))
"""


def test_worst_case_uploads_cannot_make_the_server_pin_gigabytes(checkpointed):
    """9 uploads at once, each the largest of its kind that passes the upload limit: 16 MP PNGs
    (the decode limit), 49 MP JPEGs (decoded at 1/8) and a 49 MP PNG (refused before
    decoding). The server's peak memory grows by less than MAX_DECODING x 80 MB."""
    _, workdir, _, _ = checkpointed
    proc = run_python(["-c", SERVE_MEMORY, workdir])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    from imgcls.inference import serve

    assert result["statuses"] == {
        "png16mp.png": [200] * 6,
        "jpeg49mp.jpg": [200] * 2,
        "png49mp.png": [413],
    }
    assert result["growth_mb"] < serve.MAX_DECODING * 80, result
