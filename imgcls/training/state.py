"""The run library: the dataset, model and TrainState that every mode builds a run from.

Training creates the replicated TrainState (or restores it from W/checkpoints); eval, predict,
export and serve rebuild the model from W/config.json and restore its variables alone
(`restore_variables`), never an optimizer. Nothing here imports TensorFlow: data preparation
reaches it only when a dataset is read.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util
from flax.training import train_state
from jax.experimental import multihost_utils

from imgcls import data, models, parallel
from imgcls.models import sizing
from imgcls.run import checkpointing
from imgcls.run import workdir as workdir_files
from imgcls.training import ema, optim


class TrainState(train_state.TrainState):
    batch_stats: Any


class EmaTrainState(TrainState):
    """The TrainState of a run with config.ema_decay > 0: also the moving average of the
    weights, {'params', 'batch_stats'} (imgcls.training.ema). A separate class, so that the state (and
    the checkpoints) of a run without it keep exactly their old structure."""

    ema: Any


class LookaheadTrainState(TrainState):
    """The TrainState of a run with config.lookahead_every > 0: also the slow weights,
    {'params', 'batch_stats'}, that the weights return to every lookahead_every steps
    (imgcls.training.step.lookahead)."""

    slow: Any


def model_variables(state) -> dict:
    """{'params', 'batch_stats'} of a TrainState: what the model needs to run."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def evaluated_variables(state) -> dict:
    """{'': the trained variables, 'ema': their moving average (when kept)}: what training
    evaluates, keyed by the metric prefix infix ('eval_...' and 'eval_ema_...')."""
    variables = {"": model_variables(state)}
    if isinstance(state, EmaTrainState):
        variables["ema"] = state.ema
    return variables


def init_rng(seed: int):
    return jax.random.fold_in(jax.random.key(seed), 0)


def create_train_state(
    seed: int,
    model,
    image_shape,
    tx,
    mesh,
    keep_ema: bool = False,
    keep_slow: bool = False,
    param_values: dict | None = None,
) -> TrainState:
    """Initialises the model and optimizer directly as arrays replicated over the mesh; with
    keep_ema, an EmaTrainState whose average starts at the initial variables (keep_slow: a
    LookaheadTrainState, likewise). `param_values` ({parameter path: array}, a model's
    data-dependent initialisation) replace those parameters' initial values."""

    def init():
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        variables = model.init(init_rng(seed), dummy, train=False)
        fields = dict(
            apply_fn=model.apply,
            params=with_values(variables["params"], param_values or {}),
            batch_stats=variables.get("batch_stats", {}),
            tx=tx,
        )
        trained = {key: fields[key] for key in ("params", "batch_stats")}
        if keep_ema:
            return EmaTrainState.create(**fields, ema=ema.initial(trained))
        if keep_slow:
            return LookaheadTrainState.create(**fields, slow=ema.initial(trained))
        return TrainState.create(**fields)

    return jax.jit(init, out_shardings=parallel.replicated(mesh))()


def with_values(params, values: dict):
    """`params` with the leaves at the given paths (tuples of names) replaced."""
    if not values:
        return params
    flat = traverse_util.flatten_dict(params)
    for path, value in values.items():
        if path not in flat or flat[path].shape != np.shape(value):
            raise ValueError(
                f"The model has no parameter {'/'.join(path)} of shape {np.shape(value)}."
            )
        flat[path] = jnp.asarray(value, flat[path].dtype)
    return traverse_util.unflatten_dict(flat)


def data_init_values(config, info) -> dict:
    """The model's data-dependent initial values ({} for most models): computed from the
    first config.data_init_images training images, preprocessed as for evaluation and
    normalized (airbench's whitening filters: imgcls.models.airbench)."""
    init_fn = models.data_init(config.model.name)
    if init_fn is None:
        return {}
    wanted, images = int(config.data_init_images), []
    for batch in data.create_eval_iterator(config, info, config.dataset.train_split):
        images.append(batch["image"][batch["mask"]])
        if sum(len(i) for i in images) >= wanted:
            break
    images = np.concatenate(images)[:wanted]
    normalized = np.asarray(data.normalize(images, config.dataset.mean, config.dataset.std))
    logging.info(
        "%s: initialised from %d training images (data-dependent initialisation).",
        config.model.name,
        len(images),
    )
    values = init_fn(normalized)
    if jax.process_count() > 1:  # each process reads its own slice: use process 0's values
        values = multihost_utils.broadcast_one_to_all(values)
    return values


def num_train_steps(config, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return max(1, int(config.num_epochs * steps_per_epoch))


def prepare_dataset(config):
    """Dataset info; with several processes, process 0 prepares the data while others wait."""
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            data.get_dataset_info(config)
        multihost_utils.sync_global_devices("imgcls: dataset prepared")
    return data.get_dataset_info(config)


def resolve_run(config):
    """(a copy of config with every 'auto' value resolved, its DatasetInfo, notes).

    The dataset's split keys and image settings (data.resolve_dataset), then the cnn's
    features for the resolved image shape (models.sizing); each choice is logged, and the
    resolved config is what a run saves as W/config.json. With several processes, process 0
    prepares the data while the others wait.
    """
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            data.resolve_dataset(config)
        multihost_utils.sync_global_devices("imgcls: dataset prepared")
    config, info, notes = data.resolve_dataset(config)
    config, model_notes = sizing.resolve_model(config, info.image_shape)
    notes = notes + model_notes
    for note in notes:
        logging.info("%s", note)
    return config, info, notes


def create_model(config, num_classes: int, frozen_backbone: bool = False):
    """The model of `config` for a dataset of `num_classes` classes.

    frozen_backbone=True makes BatchNorm use its running averages in training too (in models
    that have the option; the optimizer freezes the parameters of any model).
    """
    overrides = {}
    if frozen_backbone and "frozen_backbone" in models.model_fields(config.model.name):
        overrides["frozen_backbone"] = True
    return models.create_model(config.model, num_classes, config.half_precision, **overrides)


def initial_state(config, info, mesh, param_values: dict | None = None):
    """The freshly initialised TrainState of `config`, its schedule and its total step count.

    Also the template that training checkpoints of `config` are restored into.
    `param_values`: a model's data-dependent initial values (data_init_values).
    """
    steps_per_epoch = data.steps_per_epoch(config, info)
    total_steps = num_train_steps(config, steps_per_epoch)
    unfreeze = optim.unfreeze_step(config, steps_per_epoch)
    model = create_model(config, info.num_classes, optim.backbone_frozen(unfreeze, 0))
    learning_rate_fn = optim.create_learning_rate_schedule(config, steps_per_epoch, total_steps)
    tx = optim.create_optimizer(config, learning_rate_fn, unfreeze, steps_per_epoch)
    state = create_train_state(
        config.seed,
        model,
        info.image_shape,
        tx,
        mesh,
        keep_ema=ema.enabled(config),
        keep_slow=int(config.get("lookahead_every", 0)) > 0,
        param_values=param_values,
    )
    return state, learning_rate_fn, total_steps


def check_config(config, info, mesh) -> None:
    """Errors a config can only show against its dataset and devices, before any work."""
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    accum = int(config.get("grad_accum_steps", 1))
    if accum > 1 and config.batch_size % (accum * mesh.devices.size):
        raise ValueError(
            f"config.batch_size={config.batch_size} cannot be cut into config.grad_accum_steps="
            f"{accum} equal micro-batches on each of the {mesh.devices.size} devices; use a "
            f"multiple of {accum * mesh.devices.size}."
        )
    channels = info.image_shape[-1]
    for key in ("mean", "std"):
        if len(config.dataset[key]) not in (1, channels):
            raise ValueError(
                f"config.dataset.{key} has {len(config.dataset[key])} values but the images "
                f"have {channels} channels; give 1 or {channels} values, e.g. "
                f"--config.dataset.{key}='({', '.join(['0.5'] * channels)},)'."
            )
    if config.unfreeze_after_epochs >= 0 and not config.freeze_backbone:
        logging.warning("config.unfreeze_after_epochs has no effect without freeze_backbone.")


def saved_dataset_info(workdir: str, config) -> dict:
    """{'class_names', 'image_shape', ...} of the run in `workdir`.

    From W/dataset_info.json; workdirs trained before it existed read the dataset instead.
    """
    info = workdir_files.load_dataset_info(workdir)
    if info is None:
        logging.info("%s has no dataset_info.json (older run): reading the dataset.", workdir)
        info = workdir_files.dataset_info_dict(prepare_dataset(config))
    return info


def variable_shapes(model, image_shape) -> dict:
    """{'params', 'batch_stats'} of `model` as shape structs, computed without initialising."""
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False),
        jax.random.key(0),
        jnp.zeros((1, *image_shape), jnp.float32),
    )
    return {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}


def restore_variables(workdir: str, model, image_shape, checkpoint=None, weights="raw"):
    """(variables as numpy arrays, step, checkpoint name) of a checkpoint of `workdir`.

    `checkpoint` is 'latest', 'best', a step, or None ('best' when one was evaluated, else
    'latest'); a damaged 'latest' or 'best' falls back to the newest intact step. `weights` is
    'raw' (the trained weights) or 'ema' (their moving average; imgcls.training.ema.check_weights picks
    the run's default). A checkpoint of another model than `model`, or one whose weights are
    not finite, is a ValueError.
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
