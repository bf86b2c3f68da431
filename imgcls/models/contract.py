"""The model contract: what every registered model provides and the rest of imgcls relies on.

A model that keeps it trains, freezes, warm-starts, explains (Grad-CAM), evaluates, exports
and serves with no other change; tests/test_model_contract.py checks it for every model of the
registry (imgcls.models.registry). A model is a Flax Linen module built with `num_classes` and
`dtype` (the computation's dtype; parameters stay float32), applied as
`model.apply(variables, images, train=...)` to normalized float images [N, H, W, C], and
returning float32 logits [N, num_classes].

- Variables: the collections PARAMS and BATCH_STATS (VARIABLES; no BatchNorm, no statistics).
  Checkpoints, the EMA and lookahead averages, warm starts and exports hold exactly these.
- The classifier: its last Dense is a module named HEAD. Freezing the backbone trains only the
  parameters under it (is_head); a warm start re-initialises it when the class count differs.
- The Grad-CAM hook: the last spatial feature map goes through `feature_map(self, x)`, which
  perturbs it (a zero variable of PERTURBATIONS whose gradient is the map's) and sows it as
  INTERMEDIATES/FEATURES (imgcls.evaluation.grad_cam reads both).
- Optional, on the module class:
  - a field FROZEN_BACKBONE (`frozen_backbone: bool = False`): True makes its BatchNorm layers
    use their running averages in training too (config.freeze_backbone; a model without it
    has its backbone's parameters frozen, its statistics still updating);
  - FROZEN: parameter paths (tuples of module and parameter names) the optimizer never changes;
  - DATA_INIT (`init_from_data(images) -> {parameter path: value}`, a staticmethod): initial
    values computed from normalized training images when a run starts fresh (airbench's
    whitening filters).
"""

PARAMS, BATCH_STATS = "params", "batch_stats"
VARIABLES = (PARAMS, BATCH_STATS)
HEAD = "head"
FEATURES = "features"
INTERMEDIATES, PERTURBATIONS = "intermediates", "perturbations"
FROZEN_BACKBONE = "frozen_backbone"
FROZEN = "FROZEN"
DATA_INIT = "init_from_data"


def feature_map(module, x):
    """The Grad-CAM hook on `module`'s last spatial feature map x [N, H, W, K]; returns x.

    The perturbation is zero, so the output is unchanged, and is skipped while the module
    initialises, so the variables hold no batch-shaped array (only PARAMS and BATCH_STATS).
    """
    if not module.is_initializing():
        x = module.perturb(FEATURES, x)
    module.sow(INTERMEDIATES, FEATURES, x)
    return x


def key_name(key) -> str:
    """The name in one entry of a jax.tree_util key path (or a plain name)."""
    return str(getattr(key, "key", key))


def is_head(path) -> bool:
    """Whether a variable lies under the classifier: `path` is a jax.tree_util key path or a
    tuple of names (as flax.traverse_util flattens), with or without the collection first."""
    return any(key_name(key) == HEAD for key in path)


def variables_of(tree) -> dict:
    """{PARAMS, BATCH_STATS} of a variables dict or of an object with those attributes (a
    TrainState): what the model needs to run."""
    if isinstance(tree, dict):
        return {key: tree.get(key) or {} for key in VARIABLES}
    return {key: getattr(tree, key) for key in VARIABLES}


def frozen_params(module_class) -> tuple[tuple[str, ...], ...]:
    """The FROZEN parameter paths of a module class (none unless it declares them)."""
    return tuple(getattr(module_class, FROZEN, ()))


def data_init(module_class):
    """The module class's DATA_INIT function, or None (initialised from the seed alone)."""
    return getattr(module_class, DATA_INIT, None)
