"""Dynamic residual attention (DRA), shared by DRSAN and its predecessor DRAN.

A group of N residual blocks in which block n adds to its residual branch t_n a weighted sum of
every preceding feature, d_n = sum_{k<n} r(n, k) f_k (DRSAN's Eq. 6), with the
M = N(N+1)/2 weights r predicted per image by a dynamic residual module (DRM). DRSAN predicts
one r per DRAG from the group's input; DRAN one for the whole network from the LR image.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.models import layers
from drsan_jax.models.layers import PReLU, masked

Dtype = Any


def num_paths(num_blocks: int) -> int:
    """Number of DRA coefficients M = N(N+1)/2 for a DRAG of `num_blocks` residual blocks."""
    return num_blocks * (num_blocks + 1) // 2


def path_index(n: int, k: int) -> int:
    """Index of r(n, k), the weight of feature f_k in block n (1 <= n, 0 <= k < n), in r."""
    return n * (n - 1) // 2 + k


class ResidualBlock(nn.Module):
    """Pre-activation residual branch t = conv3x3(PReLU(conv3x3(PReLU(f))))."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, f: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        t = PReLU(self.param_dtype, name="prelu1")(f)
        t = masked(layers.conv(self, self.features, 3, "conv1", init="glorot")(t), mask)
        t = PReLU(self.param_dtype, name="prelu2")(t)
        return masked(layers.conv(self, self.features, 3, "conv2", init="glorot")(t), mask)


def dynamic_residual(r_n: jax.Array, features: Sequence[jax.Array]) -> jax.Array:
    """Dynamic residual attention of block n: d = sum_{k<n} r(n,k) f_k (paper Eq. 6).

    Args:
      r_n: (B, n) weights r(n, 0..n-1) of one block, per image.
      features: the n preceding features f_0..f_{n-1} of the DRAG, each (B, H, W, C).

    Returns:
      (B, H, W, C) weighted sum, one einsum over the stacked features.
    """
    stacked = jnp.stack(features, axis=1)  # (B, n, H, W, C)
    return jnp.einsum("bk,bkhwc->bhwc", r_n.astype(stacked.dtype), stacked)


__all__ = ["ResidualBlock", "dynamic_residual", "num_paths", "path_index"]
