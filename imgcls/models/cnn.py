"""A small convolutional classifier for tiny images (the default digits experiment).

It exists so that the whole pipeline (data, training, checkpoints, reports) can be exercised in
seconds on a CPU. It keeps the model contract (imgcls.models.contract) as every model does.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imgcls.models import contract
from imgcls.models.pooling import max_pool


class CNN(nn.Module):
    """[Conv 3x3 -> ReLU -> 2x2 max-pool] per entry of `features`, then a two-layer MLP head."""

    num_classes: int
    features: Sequence[int] = (32, 64)
    dense_features: int = 128
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns float32 logits of shape (batch, num_classes)."""
        for width in self.features:
            x = nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype)(x)
            x = nn.relu(x)
            # SAME padding keeps odd sizes valid: 8x8 -> 4x4 -> 2x2 -> 1x1.
            x = max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = contract.feature_map(self, x)  # the Grad-CAM hook
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.dense_features, dtype=self.dtype)(x)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name=contract.HEAD)(x)
        return jnp.asarray(x, jnp.float32)
