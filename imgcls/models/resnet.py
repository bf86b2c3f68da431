"""ResNet v1.5 (He et al. 2016, with the stride in the 3x3 conv of the bottleneck).

Follows flax/examples/imagenet/models.py so its checkpoints' layout and training recipe carry
over, with three changes this codebase needs: BatchNorm statistics are averaged over the
`axis_name` mesh axis (the data-parallel step runs inside `jax.shard_map`), a 'small' stem for
32x32 inputs (CIFAR-style: no 7x7 stride-2 conv, no max-pool), and the model contract
(imgcls.models.contract: the `head` classifier, the Grad-CAM feature map, frozen_backbone).
Parameter counts equal torchvision's (resnet18 11,689,512;
resnet50 25,557,032 at 1000 classes). `drop_path_rate` > 0 adds stochastic depth
(imgcls.models.drop_path) to the residual branches.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imgcls.models import contract
from imgcls.models.drop_path import block_rates, drop_path
from imgcls.models.pooling import max_pool

ModuleDef = Any

STEMS = ("imagenet", "small")

# Kaiming-normal with fan_out, as torchvision initializes ResNet convolutions.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(module, train: bool):
    """The BatchNorm of a ResNet `module` (its bn_momentum, bn_epsilon, dtype, axis_name).

    Running averages are used at eval and, with module.frozen_backbone, in training too.
    With use_running_average=True the axis is not used, so init/eval run outside shard_map.
    """
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train or module.frozen_backbone,
        momentum=module.bn_momentum,
        epsilon=module.bn_epsilon,
        dtype=module.dtype,
        axis_name=module.axis_name,
    )


def check_stem(stem: str) -> None:
    """ValueError naming config.model.stem unless it is one of STEMS."""
    if stem not in STEMS:
        raise ValueError(
            f"Unknown ResNet stem {stem!r} (config.model.stem). Valid stems: {', '.join(STEMS)}."
        )


def pooled_logits(module, x):
    """The shared ResNet top: the Grad-CAM hook, global average pool, the classifier (as the
    model contract has them). Returns float32 logits."""
    x = contract.feature_map(module, x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(module.num_classes, dtype=module.dtype, name=contract.HEAD)(x)
    return jnp.asarray(x, jnp.float32)


def residual_stages(module, x, block_cls, conv, norm, train: bool):
    """The stages of a ResNet `module` (its stage_sizes, num_filters, drop_path_rate): stage i
    has num_filters * 2^i filters and strides 2 in its first block (after the first stage)."""
    rates = iter(block_rates(module.drop_path_rate, sum(module.stage_sizes)))
    for i, block_size in enumerate(module.stage_sizes):
        for j in range(block_size):
            x = block_cls(
                module.num_filters * 2**i,
                strides=(2, 2) if i > 0 and j == 0 else (1, 1),
                conv=conv,
                norm=norm,
                act=nn.relu,
                drop_path_rate=next(rates),
            )(x, train)
    return x


class ResNetBlock(nn.Module):
    """Basic block: two 3x3 convs; the last BatchNorm starts at zero scale (identity residual)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.zeros)(y)
        y = drop_path(y, self.drop_path_rate, train)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
    """Bottleneck block 1x1 -> 3x3 (strided, v1.5) -> 1x1 (4x width); last BN scale starts at 0."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        residual = x
        y = self.conv(self.filters, (1, 1))(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3), self.strides)(y)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters * 4, (1, 1))(y)
        y = self.norm(scale_init=nn.initializers.zeros)(y)
        y = drop_path(y, self.drop_path_rate, train)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class ResNet(nn.Module):
    """ResNet v1.5; `stem` is 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'small' (3x3/1 conv)."""

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    num_filters: int = 64
    stem: str = "imagenet"
    dtype: Any = jnp.float32
    axis_name: str | None = "data"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    # True: every BatchNorm normalizes with its running averages even when train=True, so the
    # backbone's statistics never update (fine-tuning a pretrained backbone); `head` unaffected.
    frozen_backbone: bool = False
    # Stochastic depth: the last block's residual branch is dropped with this probability (in
    # training), earlier blocks' linearly less; 0: off.
    drop_path_rate: float = 0.0

    def __post_init__(self):
        check_stem(self.stem)  # when the model is built from the config, not in the first init
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns float32 logits of shape (batch, num_classes)."""
        conv = functools.partial(
            nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_kernel_init
        )
        norm = batch_norm(self, train)
        if self.stem == "imagenet":
            x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(
                x
            )
            x = norm(name="bn_init")(x)
            x = nn.relu(x)
            x = max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        else:
            x = conv(self.num_filters, (3, 3), padding="SAME", name="conv_init")(x)
            x = norm(name="bn_init")(x)
            x = nn.relu(x)
        x = residual_stages(self, x, self.block_cls, conv, norm, train)
        return pooled_logits(self, x)


ResNet18 = functools.partial(ResNet, stage_sizes=[2, 2, 2, 2], block_cls=ResNetBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=[3, 4, 6, 3], block_cls=ResNetBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=[3, 4, 6, 3], block_cls=BottleneckResNetBlock)
ResNet101 = functools.partial(ResNet, stage_sizes=[3, 4, 23, 3], block_cls=BottleneckResNetBlock)
ResNet152 = functools.partial(ResNet, stage_sizes=[3, 8, 36, 3], block_cls=BottleneckResNetBlock)
ResNet200 = functools.partial(ResNet, stage_sizes=[3, 24, 36, 3], block_cls=BottleneckResNetBlock)
