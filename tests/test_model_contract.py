"""Every registered model keeps the model contract (imgcls.models.contract), as timm's
test_models.py checks every model of list_models().

For every name of the registry, at its registered size: it initialises and applies (abstractly,
with jax.eval_shape: tracing only) to float32 logits with the contract's variable collections
alone, its classifier is the `head` (and only the head is), its last feature map goes through
the Grad-CAM hook, and its parameter count is the one recorded here (counted before the package
re-layout). Then, for each architecture, on its shallow narrow twin (one block per stage, a few
filters: the names of one architecture differ only in depth, and compiling ResNet-200 on a CPU
takes minutes), it runs: Grad-CAM yields a map; one real data-parallel train step with the
backbone frozen leaves the backbone unchanged and trains the head (a model with FROZEN
parameters keeps those instead); a data-dependent initialisation fits the parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from imgcls import models, parallel
from imgcls.config import schema
from imgcls.data.info import DatasetInfo
from imgcls.evaluation.grad_cam import grad_cam
from imgcls.models import contract
from imgcls.training import state as state_lib
from imgcls.training import step as train_step

IMAGE_SHAPE, CLASSES, BATCH = (32, 32, 3), 3, 2
# (parameters, BatchNorm statistics) at the registered size, 32x32x3 images, 10 classes.
PARAMETER_COUNTS = {
    "cnn": (545_098, 0),
    "resnet18": (11_181_642, 9_600),
    "resnet34": (21_289_802, 17_024),
    "resnet50": (23_528_522, 53_120),
    "resnet101": (42_520_650, 105_344),
    "resnet152": (58_164_298, 151_424),
    "resnet200": (62_645_322, 176_000),
    "resnet50_v1": (23_555_082, 53_120),
    "resnet101_v1": (42_573_322, 105_344),
    "resnet152_v1": (58_240_010, 151_424),
    "wrn28_10": (36_479_194, 17_952),
    "wrn16_8": (10_961_370, 7_200),
    "preact_resnet18": (11_179_978, 7_936),
    "airbench94": (1_971_640, 2_304),
    "airbench96": (9_915_704, 6_144),
}


def twin(name: str) -> dict:
    """config.model of the name's shallow narrow twin: its architecture (module class, blocks,
    stem), one block per stage and a few filters."""
    fields = models.model_fields(name)
    small = {"name": name}
    if "stage_sizes" in fields:  # the ResNets
        small.update(stage_sizes=(1, 1, 1, 1), num_filters=2)
    elif "depth" in fields:  # WRN-d-k: d = 6n + 4
        small.update(depth=10, widen_factor=1)
    elif "widths" in fields:  # airbench
        small.update(widths=(4, 8, 8))
    else:  # the cnn
        small.update(features=(4, 8), dense_features=8)
    return small


def architectures() -> list[str]:
    """One registered name per distinct twin (resnet50 ... resnet200 share one)."""
    seen = {}
    for name in sorted(models.MODELS):
        model = models.create_model({k: v for k, v in twin(name).items()}, CLASSES)
        seen.setdefault(repr(model), name)
    return sorted(seen.values())


def test_every_registered_model_is_covered():
    assert set(PARAMETER_COUNTS) == set(models.MODELS)
    # the twins of one architecture are one model: resnet18/34, the bottleneck ResNets, ...
    assert architectures() == [
        "airbench94",
        "airbench96",
        "cnn",
        "preact_resnet18",
        "resnet101",
        "resnet101_v1",
        "resnet18",
        "wrn16_8",
    ]


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_registered_model_keeps_the_contract_at_its_size(name):
    model = models.create_model({"name": name}, 10)
    images = jnp.zeros((BATCH, *IMAGE_SHAPE))
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    assert set(variables) <= set(contract.VARIABLES)
    counts = tuple(models.count_params(variables.get(c, {})) for c in contract.VARIABLES)
    assert counts == PARAMETER_COUNTS[name]
    mutable = [contract.INTERMEDIATES, contract.PERTURBATIONS]
    logits, hooked = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, mutable=mutable), variables, images
    )
    assert logits.shape == (BATCH, 10) and logits.dtype == jnp.float32
    feature_map = hooked[contract.INTERMEDIATES][contract.FEATURES][0]
    assert feature_map.ndim == 4 and feature_map.shape[0] == BATCH
    assert hooked[contract.PERTURBATIONS][contract.FEATURES].shape == feature_map.shape
    head = [p for p in flat(variables[contract.PARAMS]) if contract.is_head(p)]
    assert head and {p[0] for p in head} == {contract.HEAD}
    kernel = variables[contract.PARAMS][contract.HEAD]["kernel"]
    assert kernel.shape[-1] == 10
    for path in models.frozen_params(name):  # FROZEN paths are parameters of the model
        assert path in flat(variables[contract.PARAMS])


def small_config(name, freeze: bool):
    config = schema.defaults()
    config.model = twin(name)
    config.dataset.mean, config.dataset.std = (0.5,), (0.25,)
    config.batch_size = BATCH
    config.num_train_steps = 4
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.0
    config.optimizer.learning_rate = 0.1
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_epochs = 0.0
    config.freeze_backbone = freeze
    return config


def flat(tree) -> dict:
    return traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(tree)))


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (BATCH, *IMAGE_SHAPE), minval=-1, maxval=1)


@pytest.mark.parametrize("name", architectures())
def test_grad_cam_and_a_frozen_train_step_on_each_architecture(name, images):
    """The architecture's twin: Grad-CAM maps every image into [0, 1]; one step of the real
    data-parallel train step leaves a frozen backbone unchanged (models with FROZEN parameters,
    airbench's whitening, have their own parameter groups: those stay, the rest trains)."""
    frozen = models.frozen_params(name)
    config = small_config(name, freeze=not frozen)
    names = tuple(map(str, range(CLASSES)))
    info = DatasetInfo("synthetic", CLASSES, names, IMAGE_SHAPE, {"train": 4 * BATCH})
    mesh = parallel.create_mesh(jax.devices()[:1])
    values = None
    if models.data_init(name):  # a data-dependent initialisation that fits the parameters
        values = models.data_init(name)(np.asarray(images))
    state, _, _ = state_lib.initial_state(config, info, mesh, values)

    model = models.from_config(config, CLASSES)
    cams = grad_cam(model, contract.variables_of(state), images, np.arange(BATCH) % CLASSES)
    assert cams.shape == (BATCH, *IMAGE_SHAPE[:2])
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1

    before = {c: flat(getattr(state, c)) for c in contract.VARIABLES}
    step = train_step.make_train_step(config, CLASSES, mesh)
    pixels = np.asarray(jnp.round((images + 1) * 127.5), np.uint8)
    batch = {"image": pixels, "label": np.arange(BATCH, dtype=np.int32) % CLASSES}
    state, _, finite = step(state, parallel.global_batch(mesh, batch))
    assert bool(finite)
    after = {c: flat(getattr(state, c)) for c in contract.VARIABLES}
    params_before, params_after = before[contract.PARAMS], after[contract.PARAMS]
    kept = set(frozen) if frozen else {p for p in params_before if not contract.is_head(p)}
    changed = {p for p in params_before if not np.array_equal(params_before[p], params_after[p])}
    assert kept and not kept & changed, sorted(kept & changed)[:3]
    assert changed, "the step trained nothing"
    if not frozen:
        assert all(contract.is_head(p) for p in changed)
    if not frozen and models.has_frozen_backbone(name):  # its BatchNorm statistics stay too
        stats_before, stats_after = before[contract.BATCH_STATS], after[contract.BATCH_STATS]
        assert all(np.array_equal(stats_before[k], stats_after[k]) for k in stats_before)
