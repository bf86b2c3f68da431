"""The Optuna study that sweep launchers share: `python -m imgcls.sweeps ... --search=optuna`.

Any number of launchers, on any number of machines, work on one study held in a database
(`--storage=postgresql://...`; by default `sqlite:///W/study.db`, for one machine):

- The study ends with exactly `budget` finished (complete or pruned) trials. A launcher takes a
  trial only while fewer than `budget` are finished or running, and then runs it only if fewer
  than `budget` trials numbered below it are finished, running or queued. Optuna numbers trials
  one at a time under a lock on the study's row, so of two launchers that take the last place at
  once, the later-numbered one sees the other and puts its trial back in the queue (WAITING)
  unrun. Each trial is run by one launcher, once.
- While a trial runs, its launcher records a heartbeat every `heartbeat_s` seconds. A trial
  whose launcher fell silent for twice that (killed, or its machine went down) is marked failed
  by the next launcher that looks, which then runs another trial in its place: a killed worker's
  trial is failed, not re-run.
- The search space (the distributions that `search_space(trial)` suggests, and the base config)
  is written into the study when it is created; a launcher with another space is refused.

Database errors a user can cause (no driver, server unreachable, wrong credentials, a missing
database) raise StudyError, one line that names the database and the fix.
"""

import contextlib
import json
import threading
import warnings

import sqlalchemy

with warnings.catch_warnings():
    # Optuna imports tqdm.auto, which warns in a Jupyter kernel without ipywidgets (a notebook
    # that runs a sweep); sweeps use no Optuna progress bar.
    warnings.filterwarnings("ignore", message="IProgress not found")
    import optuna
    from optuna.trial import TrialState

SPACE_ATTR = "imgcls_search_space"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A trial numbered below another that will (or may yet) finish: it holds a place in the budget.
HOLDS_A_PLACE = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
CONNECT_TIMEOUT_S = 10
DatabaseError = sqlalchemy.exc.SQLAlchemyError  # what a database that goes away mid-sweep raises
_STATES = {
    TrialState.COMPLETE: "done",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
}

# Heartbeats and fail_stale_trials are marked experimental by Optuna, and meant for
# Study.optimize; with ask and tell (Claims, heartbeat) they make a killed launcher's trial
# visible to the others all the same.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")


class StudyError(ValueError):
    """A study database or study that cannot be used as given, in one line."""


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def _reason(error: Exception) -> str:
    """The driver's own words, e.g. 'Connection refused', without the wrapping around them."""
    text = str(getattr(error, "orig", None) or error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return first.rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()


def describe_error(url: str, error: Exception) -> str:
    """What went wrong opening the database at `url`, and what to do about it."""
    shown = redact(url)
    try:
        parts = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return f"--storage={url} is not a database URL (postgresql://USER:PASSWORD@HOST:PORT/DB)."
    if isinstance(error, sqlalchemy.exc.NoSuchModuleError):
        return (
            f"--storage={shown}: unknown database kind {parts.drivername!r} "
            "(postgresql://USER:PASSWORD@HOST:PORT/DB, or sqlite:///PATH)."
        )
    if isinstance(error, ImportError):
        return (
            f"--storage={shown} needs the {parts.get_backend_name()} driver: "
            "pip install 'imgcls[sweep-db]' (psycopg)."
        )
    reason = _reason(error)
    lowered = reason.lower()
    where = f"{parts.host or 'localhost'}:{parts.port or 5432}"
    if "authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"the database server at {where} refused user {parts.username!r} ({reason}): "
            "check the user and password in --storage."
        )
    if "does not exist" in lowered and "database" in lowered:
        return (
            f"database {parts.database!r} does not exist on {where}: create it "
            f"(createdb {parts.database}) or name another in --storage."
        )
    if any(s in lowered for s in ("refused", "timeout", "resolve", "translate", "no route")):
        return (
            f"cannot reach the database server at {where} ({reason}): is PostgreSQL running "
            "there and reachable from this machine?"
        )
    return f"cannot open the study database {shown}: {reason}"


def open_storage(url: str, heartbeat_s: int | None = None, on_stale=None):
    """An Optuna RDBStorage of `url`, connected (errors are StudyError).

    With heartbeat_s, a running trial whose heartbeat is older than 2 * heartbeat_s is stale;
    `on_stale(study, frozen_trial)` is called for each one a launcher marks failed.
    """
    engine_kwargs = {"pool_pre_ping": True}  # a worker's connection outlives hour-long trials
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_s,
            heartbeat_stale_trial_callback=on_stale if heartbeat_s else None,
        )
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise StudyError(describe_error(url, e)) from None


def search_space(space_fn) -> dict:
    """{parameter: Optuna distribution as JSON} that `space_fn(trial)` suggests on one draw.

    Drawn by a seeded random sampler, so the same sweep file gives the same space (a space
    whose parameters depend on earlier choices is recorded along one branch)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    try:
        probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    trial = probe.ask()
    space_fn(trial)
    return {
        name: optuna.distributions.distribution_to_json(d)
        for name, d in sorted(trial.distributions.items())
    }


def _space_difference(ours: dict, theirs: dict) -> str:
    keys = sorted(set(ours) | set(theirs))
    diffs = [k for k in keys if ours.get(k) != theirs.get(k)]
    if diffs == ["base_config"]:
        return f"base config {theirs.get('base_config')!r}, not {ours.get('base_config')!r}"
    ours_p, theirs_p = ours.get("params", {}), theirs.get("params", {})
    names = sorted(n for n in set(ours_p) | set(theirs_p) if ours_p.get(n) != theirs_p.get(n))
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return f"parameters that differ: {shown}" if names else "another space"


class _GridSampler(optuna.samplers.GridSampler):
    """A GridSampler that leaves ending the study to the budget: its own after_trial calls
    Study.stop(), which works only inside Study.optimize, not with ask and tell."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(kind: str, seed: int, grid: dict | None = None):
    """'tpe', 'random', or 'grid' over `grid` ({parameter: [values]})."""
    if kind == "grid":
        return _GridSampler(grid, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(storage, name: str, space: dict, sampler, startup_trials: int) -> optuna.Study:
    """Creates the study `name` (maximising, median pruning after `startup_trials` complete
    trials) or joins it; refuses one that holds another search space."""
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            load_if_exists=True,
            direction="maximize",
            sampler=sampler,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials),
        )
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise StudyError(f"study {name!r} minimises; sweeps maximise --metric.")
        recorded = study.user_attrs.get(SPACE_ATTR)
        if recorded is None:
            study.set_user_attr(SPACE_ATTR, space)
        elif json.loads(json.dumps(space)) != recorded:
            raise StudyError(
                f"study {name!r} in {redact(storage.url)} holds a different search space "
                f"({_space_difference(space, recorded)}): use another --study_name, or delete "
                "that study (optuna delete-study) to start it afresh."
            )
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StudyError(describe_error(storage.url, e)) from None
    return study


def load(url: str, name: str | None = None) -> optuna.Study:
    """The study `name` of the database at `url` (without a name: its only study)."""
    storage = open_storage(url)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StudyError(describe_error(url, e)) from None
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        known = ", ".join(names) or "none"
        what = "name the study with --study_name" if name is None else f"no study {name!r}"
        raise StudyError(f"{what} in {redact(url)} (its studies: {known}).")
    return optuna.load_study(study_name=name, storage=storage)


def fail_running(study: optuna.Study) -> None:
    """Marks the study's running trials failed: for a study only this launcher uses, whose
    running trials were interrupted."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)


def report(trial, step: int, value: float) -> bool:
    """Reports an intermediate value; whether the trial should stop (pruned, or taken for
    dead and failed by another launcher)."""
    try:
        trial.report(float(value), step)
        return trial.should_prune()
    except optuna.exceptions.UpdateFinishedTrialError:
        return True


_TOLD = {"done": TrialState.COMPLETE, "pruned": TrialState.PRUNED}


def finish(study: optuna.Study, trial, state: str, value: float | None = None) -> bool:
    """Tells the study how a trial ended ('done' with its value, 'pruned', anything else is a
    failure); False when another launcher already marked it failed (no heartbeat)."""
    try:
        if state == "done":
            study.tell(trial, value)
        else:
            study.tell(trial, state=_TOLD.get(state, TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


class Claims:
    """Hands out the trials of a study so that it ends with exactly `budget` finished ones."""

    def __init__(self, study: optuna.Study, storage, budget: int, poll_s: float = 5.0):
        self.study = study
        self.storage = storage
        self.budget = budget
        self.poll_s = poll_s
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self._lock = threading.Lock()  # this launcher's threads claim one at a time

    def counts(self) -> dict[str, int]:
        trials = self.study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        return {
            "finished": sum(s in FINISHED for s in states),
            "running": states.count(TrialState.RUNNING),
        }

    def trial_id(self, trial) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    def _places_below(self, number: int) -> int:
        trials = self.study.get_trials(deepcopy=False, states=HOLDS_A_PLACE)
        return sum(t.number < number for t in trials)

    def claim(self, stopping: threading.Event):
        """The next trial to run (RUNNING, heartbeat recorded), or None when the study has its
        budget of finished trials or `stopping` is set. While the last places are taken by
        running trials it waits: one of them may fail, or be found stale."""
        while not stopping.is_set():
            optuna.storages.fail_stale_trials(self.study)
            with self._lock:
                counts = self.counts()
                if counts["finished"] >= self.budget:
                    return None
                if counts["finished"] + counts["running"] < self.budget:
                    trial = self.study.ask()
                    trial_id = self.trial_id(trial)
                    if self.storage.get_heartbeat_interval():
                        self.storage.record_heartbeat(trial_id)
                    if self._places_below(trial.number) < self.budget:
                        return trial
                    # Another launcher took the last place first: back to the queue, unrun.
                    self.storage.set_trial_state_values(trial_id, TrialState.WAITING)
            stopping.wait(self.poll_s)
        return None


@contextlib.contextmanager
def heartbeat(storage, trial_id: int):
    """Records the trial's heartbeat every heartbeat interval while the block runs."""
    interval = storage.get_heartbeat_interval()
    if not interval:
        yield
        return
    done = threading.Event()

    def beat():
        while not done.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except sqlalchemy.exc.SQLAlchemyError:
                pass  # the database is away for a moment; the next beat tries again

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _tuples(value):
    """JSON has no tuples: sequence values of the search space were tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def result_rows(study: optuna.Study) -> list[dict]:
    """The results table's rows (see imgcls.sweeps.results) from the study alone: for when the
    trial folders are spread over machines that do not share the sweep's workdir."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue  # queued, never run
        row = {
            "name": t.user_attrs.get("name", f"trial{t.number:03d}"),
            "state": _STATES[t.state],
            "overrides": {k: _tuples(v) for k, v in t.user_attrs.get("overrides", {}).items()},
        }
        result = t.user_attrs.get("result")
        if result is None:  # its launcher never finished it: what it reported on the way
            evals = sorted(t.intermediate_values.items())
            best = max(evals, key=lambda e: e[1]) if evals else (None, None)
            result = {
                "best_eval_accuracy": best[1],
                "final_eval_accuracy": evals[-1][1] if evals else None,
                "best_step": best[0],
                "steps": evals[-1][0] if evals else None,
                "error": None,
            }
            if t.state == TrialState.FAIL:
                worker = t.user_attrs.get("worker", "its launcher")
                result["error"] = f"{worker} stopped sending heartbeats"
        row.update(result)
        if t.datetime_complete and t.datetime_start:
            row["wall_time_s"] = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append(row)
    return rows
