"""Stochastic depth (Huang et al. 2016), as timm calls it: drop-path of residual branches.

In training each example's residual branch is dropped with probability `rate` and scaled by
1 / (1 - rate) otherwise, so the block's expected output is unchanged and evaluation (the
identity here) needs no rescaling. Rates grow linearly with depth, from 0 at the first block
to `drop_path_rate` at the last (timm's ResNet rule), because early blocks compute features
that every later block needs. A rate of 0 returns the branch untouched and draws no random
numbers, so a model built with drop_path_rate=0 computes exactly what it did before the option
existed.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

RNG_STREAM = "dropout"  # the key the train step already passes to nn.Dropout


def block_rates(drop_path_rate: float, num_blocks: int) -> list[float]:
    """The drop rate of each of `num_blocks` residual blocks: 0 at the first, rate at the last."""
    if num_blocks <= 1:
        return [float(drop_path_rate)] * num_blocks
    return [float(drop_path_rate) * i / (num_blocks - 1) for i in range(num_blocks)]


class DropPath(nn.Module):
    """Zeroes whole examples of a residual branch [B, ...] with probability `rate` (train only)."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, branch, deterministic: bool = True):
        if deterministic or self.rate <= 0.0:
            return branch
        keep = 1.0 - self.rate
        shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)
        kept = jax.random.bernoulli(self.make_rng(RNG_STREAM), keep, shape)
        return jnp.where(kept, branch / jnp.asarray(keep, branch.dtype), jnp.zeros_like(branch))


def drop_path(branch, rate: float, train: bool):
    """`branch` after stochastic depth at `rate`, inside a module's compact __call__.

    At rate 0 no submodule is created, so such models keep their exact computation.
    """
    if rate <= 0.0:
        return branch
    return DropPath(rate)(branch, deterministic=not train)
