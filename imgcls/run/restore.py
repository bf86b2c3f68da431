"""A trained model back from its workdir: the variables of a checkpoint, for eval, predict,
export and serve (and the dataset facts they need), never an optimizer or the training loop.

`weights` picks what a checkpoint offers: 'raw' (the trained weights) or 'ema' (their moving
average, in runs with config.ema_decay > 0; imgcls.training.ema keeps it); the default is the
average when the run kept one.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from imgcls import data
from imgcls.models import contract
from imgcls.run import checkpointing
from imgcls.run import workdir as workdir_files

WEIGHTS = ("ema", "raw")  # --weights: the moving average, or the trained weights themselves


def default_weights(config) -> str:
    """--weights when not given: 'ema' for a run that kept an EMA, else 'raw'."""
    return "ema" if config.ema_decay > 0 else "raw"


def check_weights(weights: str | None, config) -> str:
    """The weights to use (`weights`, or the run's default); ValueError for a bad choice."""
    if weights in (None, ""):
        return default_weights(config)
    if weights not in WEIGHTS:
        raise ValueError(f"--weights={weights!r}: use one of {', '.join(WEIGHTS)}.")
    if weights == "ema" and default_weights(config) != "ema":
        raise ValueError(
            "--weights=ema: this run kept no moving average of its weights (config.ema_decay "
            "was 0); use --weights=raw, or train with --config.ema_decay=0.999 (for example)."
        )
    return weights


def saved_dataset_info(workdir: str, config) -> dict:
    """{'class_names', 'image_shape', ...} of the run in `workdir`.

    From W/dataset_info.json; workdirs trained before it existed read the dataset instead.
    """
    info = workdir_files.load_dataset_info(workdir)
    if info is None:
        logging.info("%s has no dataset_info.json (older run): reading the dataset.", workdir)
        info = workdir_files.dataset_info_dict(data.prepare_dataset(config))
    return info


def variable_shapes(model, image_shape) -> dict:
    """{'params', 'batch_stats'} of `model` as shape structs, computed without initialising."""
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False),
        jax.random.key(0),
        jnp.zeros((1, *image_shape), jnp.float32),
    )
    return contract.variables_of(shapes)


def restore_variables(workdir: str, model, image_shape, checkpoint=None, weights="raw"):
    """(variables as numpy arrays, step, checkpoint name) of a checkpoint of `workdir`.

    `checkpoint` is 'latest', 'best', a step, or None ('best' when one was evaluated, else
    'latest'); a damaged 'latest' or 'best' falls back to the newest intact step. `weights` is
    'raw' or 'ema' (check_weights picks the run's default). A checkpoint of another model than
    `model`, or one whose weights are not finite, is a ValueError.
    """
    template = variable_shapes(model, image_shape)
    with checkpointing.Checkpointer.of_workdir(workdir) as ckpt:
        variables, step, name = ckpt.restore_checked_variables(checkpoint, template, weights)
    bad = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]
        if not np.isfinite(leaf).all()
    ]
    if bad:
        raise ValueError(
            f"Checkpoint step {step} of {workdir} holds non-finite weights (NaN or infinity) in "
            f"{len(bad)} array(s), e.g. {bad[0]}: the run diverged before it was saved. Use an "
            "earlier step (--checkpoint=N), or train again with a lower learning rate."
        )
    return variables, step, name
