"""Orbax checkpoints under `W/checkpoints`: the latest N plus the best by eval accuracy.

Orbax writes each step into a temporary folder and renames it when complete, so an
interrupted save never leaves a half-written checkpoint behind to resume from.
"""

import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "eval_accuracy"


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
            preservation_policy=preserve, create=not read_only, read_only=read_only
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

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
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"Checkpoint step {step} in {self.directory} does not match the model of this "
                f"config (different model, width or class count?). Use a fresh --workdir or "
                f"the config the checkpoint was trained with. Orbax said: {e}"
            ) from e

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for an in-flight asynchronous save, then releases the manager."""
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
