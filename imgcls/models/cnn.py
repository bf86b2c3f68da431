"""A small convolutional classifier for tiny images (the default digits experiment).

It exists so that the whole pipeline (data, training, checkpoints, reports) can be exercised in
seconds on a CPU. It follows the same conventions as the ResNets so the rest of the code treats
every model alike: `__call__(x, train)`, computation in `dtype` with float32 parameters, float32
logits, the last feature map sown as `intermediates/features` (for Grad-CAM), and the classifier
named `head` (for transfer learning).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

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
        # Grad-CAM hook (imgcls.evaluation.grad_cam): adds a zero "perturbations" variable,
        # whose gradient is the feature map's; a no-op unless that collection is passed. Skipped under init so the
        # variables hold no batch-shaped array (only params and batch_stats).
        if not self.is_initializing():
            x = self.perturb("features", x)
        self.sow("intermediates", "features", x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.dense_features, dtype=self.dtype)(x)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return jnp.asarray(x, jnp.float32)
