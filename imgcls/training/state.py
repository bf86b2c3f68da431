"""The TrainState of a run: the classes, a fresh state, and the model's data-dependent values.

`initial_state(config, info, mesh)` builds the model and optimizer as arrays replicated over
the mesh; it is also the template that a resume restores W/checkpoints into. A run with an EMA
of the weights (imgcls.training.ema) or lookahead (imgcls.training.lookahead) has a state class
with one more field, so that the state (and the checkpoints) of a run without them keep their
structure. Nothing here imports TensorFlow: data preparation reaches it only when a dataset is
read.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util
from flax.training import train_state
from jax.experimental import multihost_utils

from imgcls import data, models, parallel
from imgcls.models import contract
from imgcls.training import ema, optim, schedules


class TrainState(train_state.TrainState):
    batch_stats: Any


class EmaTrainState(TrainState):
    """The TrainState of a run with config.ema_decay > 0: also the moving average of the
    weights, {'params', 'batch_stats'} (imgcls.training.ema)."""

    ema: Any


class LookaheadTrainState(TrainState):
    """The TrainState of a run with config.lookahead_every > 0: also the slow weights,
    {'params', 'batch_stats'}, that the weights return to every lookahead_every steps
    (imgcls.training.lookahead)."""

    slow: Any


def evaluated_variables(state) -> dict:
    """{'': the trained variables, 'ema': their moving average (when kept)}: what training
    evaluates, keyed by the metric prefix infix ('eval_...' and 'eval_ema_...')."""
    variables = {"": contract.variables_of(state)}
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
            params=with_values(variables[contract.PARAMS], param_values or {}),
            batch_stats=variables.get(contract.BATCH_STATS, {}),
            tx=tx,
        )
        trained = {key: fields[key] for key in contract.VARIABLES}
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


def initial_state(config, info, mesh, param_values: dict | None = None):
    """The freshly initialised TrainState of `config`, its schedule and its total step count.

    Also the template that training checkpoints of `config` are restored into.
    `param_values`: a model's data-dependent initial values (data_init_values).
    """
    steps_per_epoch = data.steps_per_epoch(config, info)
    total_steps = num_train_steps(config, steps_per_epoch)
    unfreeze = optim.unfreeze_step(config, steps_per_epoch)
    frozen = optim.backbone_frozen(unfreeze, 0)
    model = models.from_config(config, info.num_classes, frozen)
    learning_rate_fn = schedules.create_learning_rate_schedule(config, steps_per_epoch, total_steps)
    tx = optim.create_optimizer(config, learning_rate_fn, unfreeze, steps_per_epoch)
    state = create_train_state(
        config.seed,
        model,
        info.image_shape,
        tx,
        mesh,
        keep_ema=ema.enabled(config),
        keep_slow=config.lookahead_every > 0,
        param_values=param_values,
    )
    return state, learning_rate_fn, total_steps
