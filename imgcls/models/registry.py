"""The model registry: `config.model.name` picks a module, the other config.model keys set it.

Checking the keys against the module's fields before constructing it turns a typo in a config
into one clear message that names the bad key and the valid ones, instead of a TypeError from a
dataclass constructor. What a registered model must provide is imgcls.models.contract.
"""

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgcls.models import contract
from imgcls.models.airbench import Airbench94, Airbench96
from imgcls.models.cnn import CNN
from imgcls.models.resnet import ResNet18, ResNet34, ResNet50, ResNet101, ResNet152, ResNet200
from imgcls.models.resnet_v1 import ResNet50V1, ResNet101V1, ResNet152V1
from imgcls.models.wide_resnet import WRN16_8, WRN28_10, PreActResNet18
from imgcls.values import is_auto

MODELS = {
    "cnn": CNN,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
    "resnet200": ResNet200,
    # v1 as in Keras Applications (imgcls.transfer.keras_import loads its ImageNet weights).
    "resnet50_v1": ResNet50V1,
    "resnet101_v1": ResNet101V1,
    "resnet152_v1": ResNet152V1,
    # CIFAR research nets (pre-activation): WRN-28-10, WRN-16-8, PreAct ResNet-18.
    "wrn28_10": WRN28_10,
    "wrn16_8": WRN16_8,
    "preact_resnet18": PreActResNet18,
    # CIFAR-10 speed runs (Jordan 2024): a frozen data-dependent whitening layer first.
    "airbench94": Airbench94,
    "airbench96": Airbench96,
}

# Module fields that are not hyperparameters.
_MODULE_INTERNAL = ("parent", "name")
# Set by create_model itself (from the dataset and config.half_precision), not config.model.
_RESERVED = ("num_classes", "dtype")


def model_fields(model_name: str) -> list[str]:
    """Keyword arguments the registered model accepts (its dataclass fields), in order."""
    cls = module_class(model_name)
    return [f.name for f in dataclasses.fields(cls) if f.name not in _MODULE_INTERNAL]


def module_class(model_name: str):
    """The Flax module class behind a registered name (a functools.partial's function)."""
    ctor = MODELS[model_name]
    return ctor.func if isinstance(ctor, functools.partial) else ctor


def data_init(model_name: str):
    """The model's data-dependent initialisation, f(normalized training images [N, H, W, C])
    -> {parameter path: value}, or None for models initialised from the seed alone."""
    return contract.data_init(module_class(model_name))


def frozen_params(model_name: str) -> tuple[tuple[str, ...], ...]:
    """Parameter paths the model keeps at their initial value (the optimizer skips them)."""
    return contract.frozen_params(module_class(model_name))


def has_frozen_backbone(model_name: str) -> bool:
    """Whether the model takes contract.FROZEN_BACKBONE (BatchNorm frozen with the backbone)."""
    return contract.FROZEN_BACKBONE in model_fields(model_name)


def _as_dict(model_config) -> dict[str, Any]:
    if hasattr(model_config, "to_dict"):  # ml_collections (Frozen)ConfigDict
        return dict(model_config.to_dict())
    if isinstance(model_config, Mapping):
        return dict(model_config)
    raise TypeError(f"model_config must be a ConfigDict or a mapping, got {type(model_config)}.")


def create_model(
    model_config, num_classes: int, half_precision: bool = False, **overrides
) -> nn.Module:
    """Builds the module named by `model_config.name` with the remaining keys as its arguments.

    `half_precision` selects bfloat16 computation (parameters stay float32); `overrides` (such
    as `axis_name=None`) are passed to the constructor as well.
    """
    kwargs = _as_dict(model_config)
    name = kwargs.pop("name", None)
    if name not in MODELS:
        raise ValueError(
            f"Unknown model {name!r} (config.model.name). Valid models: {', '.join(MODELS)}."
        )
    accepted = model_fields(name)
    reserved = sorted(k for k in kwargs if k in _RESERVED)
    if reserved:
        raise ValueError(
            f"config.model sets {', '.join(reserved)} for model {name!r}, but these are set by "
            "create_model (num_classes from the dataset, dtype from config.half_precision). "
            "Remove them from config.model."
        )
    unknown = sorted(k for k in {**kwargs, **overrides} if k not in accepted)
    if unknown:
        raise ValueError(
            f"Unknown key(s) {', '.join(unknown)} in config.model for model {name!r}. "
            f"It accepts: {', '.join(k for k in accepted if k not in _RESERVED)}."
        )
    auto = sorted(k for k, v in kwargs.items() if is_auto(v))
    if auto:
        raise ValueError(
            f"config.model.{auto[0]}='auto' is resolved from the images when a run starts "
            "(imgcls.config.resolve); give a value here instead."
        )
    # ConfigDict.to_dict and JSON round trips turn tuples into lists; modules expect tuples.
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    dtype = jnp.bfloat16 if half_precision else jnp.float32
    return MODELS[name](**{"num_classes": num_classes, "dtype": dtype, **kwargs, **overrides})


def from_config(config, num_classes: int, frozen_backbone: bool = False) -> nn.Module:
    """The model of a run's `config` for a dataset of `num_classes` classes.

    frozen_backbone=True makes BatchNorm use its running averages in training too (in models
    that take contract.FROZEN_BACKBONE; the optimizer freezes the parameters of any model).
    """
    overrides = {}
    if frozen_backbone and has_frozen_backbone(config.model.name):
        overrides[contract.FROZEN_BACKBONE] = True
    return create_model(config.model, num_classes, config.half_precision, **overrides)


def count_params(params) -> int:
    """Total number of scalars in a parameter tree (arrays or `jax.ShapeDtypeStruct`s)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
