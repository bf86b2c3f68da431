"""Orbax checkpoints under `W/checkpoints`: the latest N plus the best by eval accuracy.

Orbax writes each step into a temporary folder and renames it when complete, so an
interrupted save never leaves a half-written checkpoint behind to resume from. Every mode finds
its checkpoint here: `Checkpointer.of_workdir(W).resolve('best' | 'latest' | N)`.
"""

import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "eval_accuracy"
DIRECTORY = "checkpoints"  # W/checkpoints
CHOICES = "'latest', 'best' or a step number"


class _NoReadOnlyNotice(logging.Filter):
    """Drops Orbax's 'Given directory is read only' warning: eval, predict, export and serve
    open the checkpoints read-only on purpose (it showed in every notebook cell that did)."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_NoReadOnlyNotice())  # Orbax logs through absl


def _sentence(context: str, text: str) -> str:
    """`text` as a message of its own, or after "context: " (e.g. "config.init_from='W'")."""
    return f"{context}: {text[0].lower()}{text[1:]}" if context else text


class Checkpointer:
    """Saves and restores a `TrainState`; resume picks the latest complete step."""

    def __init__(self, directory: str, keep: int = 2, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        preserve = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=max(1, keep)),
                policies.BestN(
                    get_metric_fn=lambda m: m[BEST_METRIC],
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
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

    def restore(self, state, step: int | None = None):
        """Restores into the structure and shardings of `state` (latest step by default)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {self.directory}; "
                f"saved steps: {self.all_steps()}."
            )
        self.check_model(step, {"params": state.params, "batch_stats": state.batch_stats})
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"Checkpoint step {step} in {self.directory} does not match the model of this "
                f"config (different model, width or class count?). Use a fresh --workdir or "
                f"the config the checkpoint was trained with. Orbax said: {e}"
            ) from e

    def restore_variables(self, step: int) -> dict:
        """{'params', 'batch_stats'} of checkpoint `step` as numpy arrays, read without a template.

        The tree comes from the checkpoint's own metadata, so this reads a checkpoint of any
        model, class count or optimizer (imgcls.warm_start starts other runs from it).
        """
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        tree = self.manager.item_metadata(step)
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            dict(getattr(tree, "tree", tree)),
        )
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return {
            key: jax.tree.map(np.asarray, restored.get(key) or {})
            for key in ("params", "batch_stats")
        }

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
                if jax.tree_util.keystr(path).startswith(("['params']", "['batch_stats']"))
            }

        saved = shapes(self.manager.item_metadata(step))
        wanted = shapes({k: variables[k] for k in ("params", "batch_stats")})
        problems = [f"{k} missing from the checkpoint" for k in wanted if k not in saved]
        problems += [f"{k} not in this model" for k in saved if k not in wanted]
        problems += [
            f"{k} is {saved[k]} in the checkpoint but {shape} here"
            for k, shape in wanted.items()
            if k in saved and saved[k] != shape
        ]
        return problems

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for an in-flight asynchronous save, then releases the manager."""
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
