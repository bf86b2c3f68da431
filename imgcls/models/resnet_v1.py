"""ResNet v1 (He et al. 2016) exactly as Keras Applications builds it (keras.applications.ResNet50).

It differs from the v1.5 ResNet in resnet.py where Keras' pretrained weights need it to:
the stride of a downsampling bottleneck block is in its FIRST 1x1 conv (and the 1x1 shortcut),
not in the 3x3; every conv has a bias; BatchNorm has epsilon 1.001e-5 and momentum 0.99 (the
same running-average update as Keras'); the stem max-pool pads by exactly one pixel on each side
(Keras' ZeroPadding2D(1) + 3x3/2 VALID pool, which 'SAME' would pad only on the bottom/right);
and no BatchNorm scale starts at zero. `imgcls.transfer.keras_import.load_keras_resnet50` maps a
Keras ResNet50 weights file onto `resnet50_v1`. Otherwise as every model here: BatchNorm
statistics averaged over `axis_name`, and the model contract (imgcls.models.contract).
Parameter + batch-stat count of resnet50_v1 at 1000 classes: 25,636,712, Keras ResNet50's
`count_params()`.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imgcls.models.drop_path import drop_path
from imgcls.models.pooling import max_pool
from imgcls.models.resnet import batch_norm, conv_kernel_init, pooled_logits, residual_stages

ModuleDef = Any


class BottleneckResNetV1Block(nn.Module):
    """Bottleneck 1x1 (strided, v1) -> 3x3 -> 1x1 (4x width), with a 1x1 conv shortcut."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        residual = x
        y = self.conv(self.filters, (1, 1), self.strides, padding="VALID")(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3), padding="SAME")(y)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters * 4, (1, 1), padding="VALID")(y)
        y = self.norm()(y)
        y = drop_path(y, self.drop_path_rate, train)
        if residual.shape != y.shape:
            residual = self.conv(
                self.filters * 4, (1, 1), self.strides, padding="VALID", name="conv_proj"
            )(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class ResNetV1(nn.Module):
    """ResNet v1 with Keras Applications' layout: 7x7/2 conv + 3x3/2 max-pool stem, biased convs."""

    stage_sizes: Sequence[int]
    num_classes: int
    num_filters: int = 64
    dtype: Any = jnp.float32
    axis_name: str | None = "data"
    bn_momentum: float = 0.99
    bn_epsilon: float = 1.001e-5
    # True: every BatchNorm normalizes with its running averages even when train=True, so the
    # backbone's statistics never update (fine-tuning a pretrained backbone); `head` unaffected.
    frozen_backbone: bool = False
    # Stochastic depth (imgcls.models.drop_path): the last block's rate; 0: off.
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns float32 logits of shape (batch, num_classes)."""
        conv = functools.partial(
            nn.Conv, use_bias=True, dtype=self.dtype, kernel_init=conv_kernel_init
        )
        norm = batch_norm(self, train)
        # Keras: ZeroPadding2D(3) + 7x7/2 VALID conv.
        x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
        x = norm(name="bn_init")(x)
        x = nn.relu(x)
        # Keras: ZeroPadding2D(1) + 3x3/2 VALID max-pool. Padding with -inf (as here) or with 0
        # gives the same maximum: the input is >= 0 after the relu and every window holds a pixel.
        x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        x = residual_stages(self, x, BottleneckResNetV1Block, conv, norm, train)
        return pooled_logits(self, x)


ResNet50V1 = functools.partial(ResNetV1, stage_sizes=[3, 4, 6, 3])
ResNet101V1 = functools.partial(ResNetV1, stage_sizes=[3, 4, 23, 3])
ResNet152V1 = functools.partial(ResNetV1, stage_sizes=[3, 8, 36, 3])
