"""Pre-activation residual networks: WideResNet (Zagoruyko & Komodakis 2016) and PreAct ResNet
(He et al. 2016, "Identity Mappings in Deep Residual Networks").

The standard CIFAR research nets, here because published CIFAR recipes are stated for them.
Both use the pre-activation block (BN -> ReLU -> conv, twice; the shortcut is the identity, or
a 1x1 conv of the pre-activated input when the shape changes) and end in BN -> ReLU before
the pool, as the papers do. WRN-d-k has (d - 4) / 6 blocks in each of three stages of widths
16k, 32k, 64k after a 3x3 conv of 16 channels: WRN-28-10 has 36,479,194 parameters at 10
classes (the paper's 36.5M), WRN-16-8 10,961,370 (11.0M). PreAct ResNet-18 with the small stem
has 11,172,170 (the widely used CIFAR PreActResNet18 without the final BN: 11,171,146). They
follow the conventions of every model here (BatchNorm over `axis_name`, float32 logits,
Grad-CAM features and a `head` classifier, via resnet.pooled_logits) and take stochastic
depth (`drop_path_rate`) like the ResNets; WRN also takes the paper's dropout between the
convolutions (`dropout_rate`; 0.3 in its best CIFAR results).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imgcls.models.drop_path import block_rates, drop_path
from imgcls.models.pooling import max_pool
from imgcls.models.resnet import batch_norm, check_stem, conv_kernel_init, pooled_logits

ModuleDef = Any
WRN_STEM_FILTERS = 16  # the 3x3 conv before the first stage (Zagoruyko & Komodakis, table 1)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 (strided) -> BN-ReLU-(dropout)-conv3x3, plus the shortcut."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        activated = self.act(self.norm()(x))
        shortcut = x
        if x.shape[-1] != self.filters or self.strides != (1, 1):
            shortcut = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(activated)
        y = self.conv(self.filters, (3, 3), self.strides)(activated)
        y = self.act(self.norm()(y))
        if self.dropout_rate > 0:
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = self.conv(self.filters, (3, 3))(y)
        return shortcut + drop_path(y, self.drop_path_rate, train)


def _stages(module, x, widths, blocks_per_stage, train, dropout_rate=0.0):
    """The pre-activation stages (the first block of each stage after the first strides 2),
    then the final BN -> ReLU and the shared top."""
    conv = _conv(module)
    norm = batch_norm(module, train)
    rates = iter(block_rates(module.drop_path_rate, sum(blocks_per_stage)))
    for i, (width, count) in enumerate(zip(widths, blocks_per_stage, strict=True)):
        for j in range(count):
            x = PreActBlock(
                width,
                conv=conv,
                norm=norm,
                act=nn.relu,
                strides=(2, 2) if i > 0 and j == 0 else (1, 1),
                dropout_rate=dropout_rate,
                drop_path_rate=next(rates),
            )(x, train)
    x = nn.relu(norm(name="bn_final")(x))
    return pooled_logits(module, x)


def _conv(module):
    return functools.partial(
        nn.Conv, use_bias=False, dtype=module.dtype, kernel_init=conv_kernel_init
    )


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for small (CIFAR-sized) images; depth = 6n + 4."""

    depth: int
    widen_factor: int
    num_classes: int
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    axis_name: str | None = "data"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    frozen_backbone: bool = False  # as in imgcls.models.resnet.ResNet

    def __post_init__(self):
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(
                f"WideResNet depth {self.depth} (config.model.depth) must be 6n + 4 with n >= 1 "
                "(10, 16, 22, 28, 40, ...)."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns float32 logits of shape (batch, num_classes)."""
        x = _conv(self)(WRN_STEM_FILTERS, (3, 3), padding="SAME", name="conv_init")(x)
        per_stage = (self.depth - 4) // 6
        widths = [w * self.widen_factor for w in (16, 32, 64)]
        return _stages(self, x, widths, [per_stage] * 3, train, self.dropout_rate)


class PreActResNet(nn.Module):
    """Pre-activation ResNet; `stem` as in ResNet ('imagenet': 7x7/2 conv, BN, ReLU and 3x3/2
    max-pool; 'small': one 3x3 conv, which the first block's BN-ReLU follows)."""

    stage_sizes: Sequence[int]
    num_classes: int
    num_filters: int = 64
    stem: str = "imagenet"
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    axis_name: str | None = "data"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    frozen_backbone: bool = False

    def __post_init__(self):
        check_stem(self.stem)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns float32 logits of shape (batch, num_classes)."""
        conv = _conv(self)
        if self.stem == "imagenet":
            x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(
                x
            )
            x = nn.relu(batch_norm(self, train)(name="bn_init")(x))
            x = max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        else:
            x = conv(self.num_filters, (3, 3), padding="SAME", name="conv_init")(x)
        widths = [self.num_filters * 2**i for i in range(len(self.stage_sizes))]
        return _stages(self, x, widths, list(self.stage_sizes), train)


WRN28_10 = functools.partial(WideResNet, depth=28, widen_factor=10)
WRN16_8 = functools.partial(WideResNet, depth=16, widen_factor=8)
PreActResNet18 = functools.partial(PreActResNet, stage_sizes=[2, 2, 2, 2])
