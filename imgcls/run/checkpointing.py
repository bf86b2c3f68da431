"""Orbax checkpoints under `W/checkpoints`: the latest N plus the best by eval accuracy.

Orbax writes each step into a temporary folder and renames it when complete, so an
interrupted save never leaves a half-written checkpoint behind to resume from. Every mode finds
its checkpoint here: `Checkpointer.of_workdir(W).resolve('best' | 'latest' | N)`.

Files can still rot or be cut short afterwards (a full disk, a copy that stopped, bad storage),
and Orbax restores some damage without a word. So every save first writes the CRC-32 of each
array (W/checkpoints/checksums/<step>.json), and every restore checks them: a damaged step
raises CorruptCheckpoint naming the step and the array or file, and a resume, or a mode asking
for 'latest' or 'best', falls back to the newest intact step, saying so. A step without its
checksums file (removed, or saved by an imgcls before checksums existed) cannot be verified:
a resume falls back to the newest verified step, saying which file is missing, unless
config.trust_unverified_checkpoints; eval, predict, export and serve use it with a warning.
"""

import contextlib
import errno
import json
import logging as pylogging
import os
import re
import shutil
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization
from orbax.checkpoint import checkpoint_managers as policies

from imgcls.models import contract
from imgcls.run import files

BEST_METRIC = "eval_accuracy"
EMA_METRIC = "eval_ema_accuracy"  # runs with config.ema_decay > 0 rank by the better of the two
DIRECTORY = "checkpoints"  # W/checkpoints
CHECKSUMS = "checksums"  # W/checkpoints/checksums/<step>.json
CORRUPT = "corrupt_checkpoints"  # W/corrupt_checkpoints/<step>: set aside by a resume
UNVERIFIED = "unverified_checkpoints"  # W/unverified_checkpoints/<step>: likewise, no checksums
CHOICES = "'latest', 'best' or a step number"
VARIABLES = contract.VARIABLES
EMA = "ema"  # the TrainState's moving average of VARIABLES (imgcls.training.ema), when kept


class CorruptCheckpoint(ValueError):
    """A checkpoint step whose files are damaged or incomplete."""

    def __init__(self, directory: str, step: int, detail: str):
        self.step = step
        super().__init__(
            f"Checkpoint step {step} in {directory} is corrupt or incomplete: {detail}"
        )


class UnverifiedCheckpoint(ValueError):
    """A checkpoint step without its checksums file: its arrays cannot be verified."""

    def __init__(self, directory: str, step: int, path: str, detail: str = ""):
        self.step = step
        super().__init__(
            f"Checkpoint step {step} in {directory} cannot be verified: its checksums file "
            f"{path} is missing{detail}"
        )


TRUST_HINT = "--config.trust_unverified_checkpoints=True"


def _host(leaf) -> np.ndarray:
    """A leaf's value on this host (a replicated array's local copy in multi-process runs)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)
    return np.ascontiguousarray(np.asarray(leaf))


def checksums(tree) -> dict[str, str]:
    """{'['params']['Conv_0']['kernel']': crc32 of dtype, shape and bytes, ...} of a TrainState
    or a {'params', 'batch_stats'} dict: the same paths for both."""
    flat = jax.tree_util.tree_flatten_with_path(serialization.to_state_dict(tree))[0]
    sums = {}
    for path, leaf in flat:
        value = _host(leaf)
        header = f"{value.dtype.str}{value.shape}".encode()
        sums[jax.tree_util.keystr(path)] = f"{zlib.crc32(value.tobytes(), zlib.crc32(header)):08x}"
    return sums


def best_score(metrics: dict) -> float:
    """What ranks a checkpoint for 'best': its validation accuracy, or that of its moving
    average of the weights (EMA) when that is higher."""
    return max(metrics[BEST_METRIC], metrics.get(EMA_METRIC, -float("inf")))


def best_weights(metrics: dict) -> str:
    """Which weights gave best_score: 'ema' or 'raw'."""
    return "ema" if metrics.get(EMA_METRIC, -float("inf")) > metrics[BEST_METRIC] else "raw"


def _layout(tree) -> dict[str, dict]:
    """{top-level key: {path below it: shape}} of a saved (metadata) or live state dict, with
    the model's own variables left out (check_model compares those)."""
    layout = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        if names[0] not in VARIABLES:
            layout.setdefault(names[0], {})["/".join(names[1:])] = tuple(np.shape(leaf))
    return layout


def _first_line(error: Exception) -> str:
    """What went wrong, in one line: the unreadable array and TensorStore's reason when the
    error (or its cause) says so, else the error's first line (TensorStore's own first line
    ends in a fragment of a C++ binding's repr, cut off here)."""
    chain, cause = [], error
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in chain:
        found = re.search(r'^(\w+): Error reading "([^"/]+)', str(cause))
        if found:
            reason = str(cause).strip().splitlines()[0].rsplit(": ", 1)[-1]
            return f"array {found.group(2)} cannot be read ({found.group(1)}: {reason})"[:300]
    text = str(error).strip().splitlines()
    first = (text[0] if text else "").split(" See full TensorStore details")[0]
    return f"{type(error).__name__}: {first}"[:300]


class _NoReadOnlyNotice(pylogging.Filter):
    """Drops Orbax's 'Given directory is read only' warning: eval, predict, export and serve
    open the checkpoints read-only on purpose (it showed in every notebook cell that did)."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


pylogging.getLogger("absl").addFilter(_NoReadOnlyNotice())  # Orbax logs through absl


def _sentence(context: str, text: str) -> str:
    """`text` as a message of its own, or after "context: " (e.g. "config.init_from='W'")."""
    return f"{context}: {text[0].lower()}{text[1:]}" if context else text


class Checkpointer:
    """Saves and restores a `TrainState`; resume picks the latest complete step."""

    def __init__(
        self, directory: str, keep: int = 2, read_only: bool = False, trust_unverified=False
    ):
        """`trust_unverified`: restore steps without checksums (with a warning) instead of
        falling back to a verified step; read-only checkpointers (eval, predict, ...) do."""
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        self.trust_unverified = trust_unverified or read_only
        preserve = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=max(1, keep)),
                policies.BestN(
                    get_metric_fn=best_score,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve,
            create=not read_only,
            read_only=read_only,
            save_interval_steps=0 if read_only else 1,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    @classmethod
    def of_workdir(cls, workdir: str, context: str = "", advice: str = "") -> "Checkpointer":
        """A read-only Checkpointer of W/checkpoints; FileNotFoundError when W has none.

        `context` starts the error message, `advice` replaces its closing advice.
        """
        directory = os.path.join(workdir, DIRECTORY)
        if not os.path.isdir(directory):
            advice = advice or (
                "Train first (python main.py --config=... --workdir=W), or give the workdir of "
                "a trained run."
            )
            raise FileNotFoundError(
                _sentence(context, f"No checkpoints in {workdir}: {directory} does not exist. ")
                + advice
            )
        return cls(directory, read_only=True)

    def resolve(self, checkpoint: str | int | None = None, context: str = "") -> tuple[int, str]:
        """(step, name) of `checkpoint`: 'latest', 'best' or a step number; None (or '') means
        'best' when a checkpoint was evaluated, else 'latest'. `context` starts error messages.
        """
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(
                _sentence(
                    context,
                    f"No checkpoints in {self.directory}: train first (python main.py "
                    "--config=... --workdir=W), or give the workdir of a trained run.",
                )
            )
        checkpoint = "" if checkpoint is None else str(checkpoint)
        if not checkpoint:
            checkpoint = "latest" if self.best_step() is None else "best"
        if checkpoint == "latest":
            return self.latest_step(), checkpoint
        if checkpoint == "best":
            if self.best_step() is None:
                raise ValueError(
                    _sentence(
                        context,
                        f"No checkpoint in {self.directory} has eval metrics yet, so none is "
                        "'best'; use 'latest' or a step number.",
                    )
                )
            return self.best_step(), checkpoint
        try:
            step = int(checkpoint)
        except ValueError:
            raise ValueError(
                _sentence(context, f"Checkpoint {checkpoint!r}: use {CHOICES}.")
            ) from None
        if step not in steps:
            raise FileNotFoundError(
                _sentence(
                    context,
                    f"No checkpoint for step {step} in {self.directory}; saved steps: {steps}.",
                )
            )
        return step, checkpoint

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, metrics: dict | None = None) -> None:
        """Saves `state` at `step` (asynchronously); `metrics` rank it for 'best'."""
        if step in self.manager.all_steps():
            return
        if metrics is not None:
            metrics = {k: float(v) for k, v in metrics.items()}
        sums = checksums(state)  # before Orbax starts: the arrays are the ones it saves
        if jax.process_index() == 0:
            os.makedirs(self._checksum_dir, exist_ok=True)
            files.write_json(os.path.join(self._checksum_dir, f"{step}.json"), sums)
            self._prune_checksums(keep=step)
        with self._writing(step):  # also reports a failure of the previous (async) save
            self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

    @contextlib.contextmanager
    def _writing(self, step: int | None = None):
        """Orbax's and TensorStore's errors of a write that failed (a full disk, no permission:
        tracebacks and a `RESOURCE_EXHAUSTED: Error writing ...` text from its threads) as one
        WriteError naming the checkpoint folder and the cause."""
        try:
            yield
        except Exception as e:  # noqa: BLE001  (their error types vary: ValueError, OSError...)
            text = str(e)
            causes = {"No space left on device": errno.ENOSPC, "Permission denied": errno.EACCES}
            found = [(cause, code) for cause, code in causes.items() if cause in text]
            if isinstance(e, files.WriteError) or not found:
                raise
            cause, code = found[0]
            where = self.directory if step is None else os.path.join(self.directory, str(step))
            raise files.WriteError.of(OSError(code, cause), where) from e

    @property
    def _checksum_dir(self) -> str:
        return os.path.join(self.directory, CHECKSUMS)

    def checksum_path(self, step: int) -> str:
        return os.path.join(self._checksum_dir, f"{step}.json")

    def _prune_checksums(self, keep: int | None = None) -> None:
        """Drops the checksum files of steps that are gone (but `keep`'s, being saved)."""
        if self.read_only or jax.process_index() > 0 or not os.path.isdir(self._checksum_dir):
            return
        wanted = {*self.all_steps(), keep}
        for name in os.listdir(self._checksum_dir):
            step = name.removesuffix(".json")
            if step.isdigit() and int(step) not in wanted:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self._checksum_dir, name))

    def verify(self, step: int, tree, only=None) -> None:
        """CorruptCheckpoint unless `tree`, as restored from `step`, has the arrays saved there
        (the paths under `only`, e.g. ('params', 'batch_stats'), when given). A step without
        its checksums file is UnverifiedCheckpoint, or with trust_unverified a warning."""
        path = self.checksum_path(step)
        try:
            with open(path, encoding="utf-8") as f:
                expected = json.load(f)
        except FileNotFoundError:
            if not self.trust_unverified:
                raise UnverifiedCheckpoint(self.directory, step, path) from None
            logging.warning(
                "Checkpoint step %d in %s has no checksums file (%s): using it unverified.",
                step,
                self.directory,
                path,
            )
            return
        except (OSError, ValueError) as e:
            raise CorruptCheckpoint(self.directory, step, f"its checksums: {_first_line(e)}") from e
        actual = checksums(tree)
        prefixes = tuple(f"['{key}']" for key in only) if only else ("",)
        for path, crc in expected.items():
            if path.startswith(prefixes) and actual.get(path) != crc:
                found = "missing" if path not in actual else f"crc32 {actual[path]}, saved {crc}"
                raise CorruptCheckpoint(self.directory, step, f"array {path} ({found})")

    def restore(self, state, step: int | None = None):
        """Restores into the structure and shardings of `state`: checkpoint `step`, or by default
        the newest intact one (damaged newer steps are logged and, unless read-only, set aside
        in W/corrupt_checkpoints so that training can save those steps again)."""
        if step is not None:
            return self._restore(state, step)
        corrupt, unverified = [], []
        for candidate in sorted(self.all_steps(), reverse=True):
            try:
                restored = self._restore(state, candidate)
            except CorruptCheckpoint as e:
                logging.warning("%s. Trying the previous step.", e)
                corrupt.append(candidate)
                continue
            except UnverifiedCheckpoint as e:
                logging.warning("%s. Trying the previous step (%s uses it).", e, TRUST_HINT)
                unverified.append(candidate)
                continue
            if corrupt or unverified:
                logging.warning("Restored step %d, the newest intact checkpoint.", candidate)
                self._set_aside(corrupt)
                self._set_aside(unverified, UNVERIFIED)
            return restored
        if unverified:
            detail = (
                f", and no saved step of {sorted(corrupt + unverified)} is both intact and "
                f"verified. {TRUST_HINT} resumes from the newest unverified one."
            )
            step = unverified[0]
            raise UnverifiedCheckpoint(self.directory, step, self.checksum_path(step), detail)
        if corrupt:
            raise CorruptCheckpoint(
                self.directory,
                corrupt[0],
                f"and so are all {len(corrupt)} saved steps "
                f"{sorted(corrupt)}; train in a fresh --workdir",
            )
        raise FileNotFoundError(f"No checkpoint in {self.directory}.")

    def _restore(self, state, step: int):
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {self.directory}; "
                f"saved steps: {self.all_steps()}."
            )
        self.check_model(step, contract.variables_of(state))
        self.check_training_state(step, state)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001  (TensorStore, JSON, OS errors: damaged files)
            raise CorruptCheckpoint(self.directory, step, _first_line(e)) from e
        self.verify(step, restored)
        return restored

    def _set_aside(self, steps, folder: str = CORRUPT) -> None:
        """Moves damaged (or unverified) step folders to W/corrupt_checkpoints (or
        W/unverified_checkpoints), kept for inspection: training can save those steps again."""
        if not steps or self.read_only or jax.process_index() > 0:
            return
        target = os.path.join(os.path.dirname(self.directory), folder)
        os.makedirs(target, exist_ok=True)
        what = "unverified" if folder == UNVERIFIED else "damaged"
        for step in steps:
            shutil.move(os.path.join(self.directory, str(step)), os.path.join(target, str(step)))
            logging.warning("Moved the %s checkpoint step %d to %s.", what, step, target)
        self.manager.reload()

    def restore_variables(self, step: int, weights: str = "raw") -> dict:
        """{'params', 'batch_stats'} of checkpoint `step` as numpy arrays, read without a template.

        The tree comes from the checkpoint's own metadata, so this reads a checkpoint of any
        model, class count or optimizer (imgcls.transfer.warm_start starts other runs from it).
        weights='ema' reads the moving average of the weights instead (config.ema_decay runs).
        """
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            self._metadata(step),
        )
        try:
            restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001  (TensorStore, JSON, OS errors: damaged files)
            raise CorruptCheckpoint(self.directory, step, _first_line(e)) from e
        source = restored.get(EMA) if weights == EMA else restored
        if not source:
            raise ValueError(
                f"Checkpoint step {step} in {self.directory} holds no moving average of the "
                "weights (the run had config.ema_decay=0): use --weights=raw."
            )
        variables = {key: jax.tree.map(np.asarray, source.get(key) or {}) for key in VARIABLES}
        if weights == EMA:
            self.verify(step, {EMA: variables}, only=(EMA,))
        else:
            self.verify(step, variables, only=VARIABLES)
        return variables

    def restore_checked_variables(
        self, checkpoint, template, weights: str = "raw"
    ) -> tuple[dict, int, str]:
        """(variables, step, name) of `checkpoint` (as resolve() takes it), checked against the
        model's `template` ({'params', 'batch_stats'} shapes); `weights` as restore_variables
        takes it. A damaged 'latest' or 'best' falls back to the newest intact step, saying so;
        a damaged step number is an error."""
        step, name = self.resolve(checkpoint)
        candidates = [step]
        if name in ("latest", "best"):
            candidates += [s for s in sorted(self.all_steps(), reverse=True) if s != step]
        for candidate in candidates:
            try:
                self.check_model(candidate, template)
                variables = self.restore_variables(candidate, weights)
            except CorruptCheckpoint as e:
                if len(candidates) == 1:
                    raise CorruptCheckpoint(
                        self.directory,
                        candidate,
                        f"{str(e).split(': ', 1)[1]}. Saved steps: {self.all_steps()}; give "
                        "another --checkpoint.",
                    ) from e
                logging.warning("%s. Trying an older step.", e)
                continue
            if candidate != step:
                logging.warning(
                    "Using step %d, the newest intact checkpoint (the %s step, %d, is damaged).",
                    candidate,
                    name,
                    step,
                )
            return variables, candidate, name
        raise CorruptCheckpoint(
            self.directory, step, f"and so is every saved step {self.all_steps()}"
        )

    def _metadata(self, step: int) -> dict:
        """The saved tree's structure (shapes and dtypes), or CorruptCheckpoint."""
        try:
            tree = self.manager.item_metadata(step)
            return dict(getattr(tree, "tree", tree))
        except Exception as e:  # noqa: BLE001  (an emptied or cut _METADATA: JSON, OS errors)
            raise CorruptCheckpoint(self.directory, step, _first_line(e)) from e

    def check_model(self, step: int, variables: dict) -> None:
        """ValueError naming the differences when checkpoint `step` holds another model than
        `variables` ({'params', 'batch_stats'} of arrays or shape structs)."""
        mismatches = self.model_mismatches(step, variables)
        if mismatches:
            raise ValueError(
                f"Checkpoint step {step} in {self.directory} does not match the model of this "
                f"config ({'; '.join(mismatches[:5])}). Use the config the checkpoint was "
                "trained with (W/config.json), or a fresh --workdir."
            )

    def model_mismatches(self, step: int, variables: dict) -> list[str]:
        """Parameters and BatchNorm statistics missing, unexpected or of another shape."""

        def shapes(tree):
            flat = jax.tree_util.tree_flatten_with_path(tree)[0]
            return {
                jax.tree_util.keystr(path): tuple(leaf.shape)
                for path, leaf in flat
                if jax.tree_util.keystr(path).startswith(tuple(f"['{k}']" for k in VARIABLES))
            }

        saved = shapes(self._metadata(step))
        wanted = shapes({k: variables[k] for k in VARIABLES})
        problems = [f"{k} missing from the checkpoint" for k in wanted if k not in saved]
        problems += [f"{k} not in this model" for k in saved if k not in wanted]
        problems += [
            f"{k} is {saved[k]} in the checkpoint but {shape} here"
            for k, shape in wanted.items()
            if k in saved and saved[k] != shape
        ]
        return problems

    def check_training_state(self, step: int, state) -> None:
        """ValueError when checkpoint `step` holds another training state than `state` beyond
        the model: a moving average of the weights (config.ema_decay) saved or not, or another
        optimizer state (optimizer, clip_norm, schedule='plateau', freeze_backbone). Orbax would
        fail on such a restore too, but as if the files were damaged."""
        saved, wanted = _layout(self._metadata(step)), _layout(serialization.to_state_dict(state))
        if saved == wanted:
            return
        if (EMA in saved) != (EMA in wanted):
            detail = (
                "it keeps a moving average of the weights, this config does not (ema_decay=0)"
                if EMA in saved
                else "it keeps no moving average of the weights, this config does (ema_decay > 0)"
            )
        else:
            detail = "its optimizer state has another layout than this config's optimizer"
        raise ValueError(
            f"Checkpoint step {step} in {self.directory} was saved with other training options "
            f"than this config: {detail}. Resume with the run's own config (W/config.json: "
            "config.ema_decay, config.optimizer's name, clip_norm and schedule, "
            "freeze_backbone), or train in a fresh --workdir."
        )

    def wait(self) -> None:
        with self._writing():
            self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for an in-flight asynchronous save, then releases the manager; the checksums
        of the steps it deleted go with them."""
        try:
            with self._writing():
                self.manager.wait_until_finished()
            self._prune_checksums()
        finally:
            self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
