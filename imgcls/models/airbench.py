"""The airbench network (Jordan 2024, arXiv 2404.00498): CIFAR-10 at speed-record pace.

A frozen 2x2 whitening convolution (its filters are the eigenvectors of the training images'
2x2 patch covariance, set from the data before training: `whitening_filters`), then three conv
groups (conv 3x3 -> 2x2 max-pool -> BatchNorm -> GELU -> conv 3x3 -> BatchNorm -> GELU; the 96%
variant adds a third conv with a residual connection over the last two), a 3x3 max-pool and a
bias-free linear head scaled by 1/9. BatchNorm has no learned scale and epsilon 1e-12, keeps
0.6 of its running averages per step in airbench94 (PyTorch's momentum 0.4) and 0.9 in
airbench96 (PyTorch's default 0.1), and computes in float32 whatever the network's dtype. The
3x3 convs start as the identity on their first input-many filters (dirac), the rest as PyTorch
initialises them.
Written from the paper and its reference description; not a port of its code.

Keeps the model contract (imgcls.models.contract): its whitening kernel is FROZEN and set by
DATA_INIT; BatchNorm statistics are averaged over `axis_name` in data-parallel steps.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from imgcls.models import contract
from imgcls.models.pooling import max_pool

WHITEN_KERNEL = 2
WHITEN_NAME = "whiten"  # the whitening conv: its kernel is set from the data and never trained


def torch_conv_init(key, shape, dtype=jnp.float32):
    """PyTorch's default conv init (kaiming-uniform, a = sqrt(5)): U(+-1 / sqrt(fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")(key, shape, dtype)


def dirac_init(key, shape, dtype=jnp.float32):
    """torch_conv_init, with the first in-channels filters set to the identity (HWIO)."""
    kernel = torch_conv_init(key, shape, dtype)
    height, width, channels_in, channels_out = shape
    identity = min(channels_in, channels_out)
    index = jnp.arange(identity)
    kernel = kernel.at[:, :, :, :identity].set(0)
    return kernel.at[height // 2, width // 2, index, index].set(1)


class ConvGroup(nn.Module):
    """conv -> pool -> norm -> GELU -> conv -> norm -> GELU (+ a residual third conv)."""

    features: int
    norm: Any
    dtype: Any
    residual_conv: bool = False

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(
            nn.Conv, kernel_size=(3, 3), padding="SAME", use_bias=False, kernel_init=dirac_init
        )
        x = conv(self.features, dtype=self.dtype)(x)
        x = max_pool(x, (2, 2), strides=(2, 2), padding="VALID")  # 31 -> 15 -> 7 -> 3
        x = nn.gelu(self.norm()(x), approximate=False).astype(self.dtype)
        block_input = x
        x = conv(self.features, dtype=self.dtype)(x)
        x = nn.gelu(self.norm()(x), approximate=False).astype(self.dtype)
        if self.residual_conv:
            x = conv(self.features, dtype=self.dtype)(x)
            x = nn.gelu(self.norm()(x) + block_input, approximate=False).astype(self.dtype)
        return x


class Airbench(nn.Module):
    """airbench94 by default; widths (128, 384, 512) with residual_conv=True is airbench96.

    bn_momentum is flax's (the share of the running averages kept per step). The whitening
    kernel is set from the data (`init_from_data`) and frozen (`FROZEN`, read by
    imgcls.training.optim).
    """

    num_classes: int
    widths: Sequence[int] = (64, 256, 256)
    residual_conv: bool = False
    bn_momentum: float = 0.6
    bn_epsilon: float = 1e-12
    scaling_factor: float = 1.0 / 9.0
    dtype: Any = jnp.float32
    axis_name: str | None = "data"

    FROZEN = ((WHITEN_NAME, "kernel"),)  # parameter paths the optimizer never changes
    WHITEN_BIAS = (WHITEN_NAME, "bias")  # trained for config.optimizer.whiten_bias_epochs only

    @staticmethod
    def init_from_data(images) -> dict:
        """{parameter path: initial value} computed from normalized training images."""
        return {(WHITEN_NAME, "kernel"): whitening_filters(images)}

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns float32 logits of shape (batch, num_classes)."""
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            use_scale=False,
            use_fast_variance=False,  # two-pass, as PyTorch: eps is only 1e-12
            dtype=jnp.float32,
            axis_name=self.axis_name,
        )
        whiten_width = 2 * x.shape[-1] * WHITEN_KERNEL**2
        x = nn.Conv(
            whiten_width,
            (WHITEN_KERNEL, WHITEN_KERNEL),
            padding="VALID",
            dtype=jnp.float32,  # it scales the smallest eigen-directions up: no rounding there
            kernel_init=torch_conv_init,
            name=WHITEN_NAME,
        )(x)
        x = nn.gelu(x, approximate=False).astype(self.dtype)
        for features in self.widths:
            x = ConvGroup(features, norm, self.dtype, self.residual_conv)(x)
        x = max_pool(x, (3, 3), strides=(3, 3), padding="VALID")
        x = contract.feature_map(self, x)  # the Grad-CAM hook
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(
            self.num_classes,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=torch_conv_init,  # PyTorch's Linear: U(+-1 / sqrt(fan_in)) too
            name=contract.HEAD,
        )(x)
        return jnp.asarray(x * self.scaling_factor, jnp.float32)


def whitening_filters(images, kernel=WHITEN_KERNEL, eps=5e-4) -> np.ndarray:
    """The whitening conv's HWIO kernel from normalized images [N, H, W, C] (float64 on host).

    The eigenvectors of the covariance of every kernel x kernel patch, scaled by 1 / sqrt(their
    eigenvalue + eps), largest first; the kernel holds them and their negatives (so that the
    GELU after it keeps both signs): 2 * C * kernel^2 filters. Applied to the training patches,
    the first half of the filters gives outputs of unit covariance (identity whitening).
    """
    images = np.asarray(images, np.float64)
    n, h, w, c = images.shape
    rows, cols = h - kernel + 1, w - kernel + 1
    offsets = [(dy, dx) for dy in range(kernel) for dx in range(kernel)]  # row-major
    patches = np.stack(
        [images[:, dy : dy + rows, dx : dx + cols] for dy, dx in offsets], axis=3
    )  # [N, H', W', kernel^2, C]
    flat = patches.reshape(-1, kernel * kernel * c)
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues)[::-1]
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)  # [k*k*C, k*k*C]
    filters = scaled.reshape(kernel, kernel, c, -1)  # (dy, dx, channel) rows, as flattened
    return np.concatenate([filters, -filters], axis=-1).astype(np.float32)


Airbench94 = functools.partial(Airbench, widths=(64, 256, 256), bn_momentum=0.6)
Airbench96 = functools.partial(
    Airbench, widths=(128, 384, 512), residual_conv=True, bn_momentum=0.9
)
