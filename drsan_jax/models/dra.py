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


DRA_IMPLS = ("auto", "einsum", "unrolled")


def default_dra_impl(backend: str | None = None) -> str:
    """What `dynamic_residual(..., impl="auto")` stands for on a backend.

    Args:
      backend: "cpu", "gpu", "tpu", ...; default: `jax.default_backend()`.

    Returns:
      "unrolled" on CPU, where it was measured faster (benchmarks/README.md: the DRSAN-32s x2
      train step 1.00 -> 0.77 s on 2 cores), and "einsum" elsewhere.
    """
    backend = jax.default_backend() if backend is None else backend
    return "unrolled" if backend == "cpu" else "einsum"


def dynamic_residual(r_n: jax.Array, features: Sequence[jax.Array],
                     impl: str = "auto") -> jax.Array:
    """Dynamic residual attention of block n: d = sum_{k<n} r(n,k) f_k (paper Eq. 6).

    The definition is one einsum over the stacked features, `"bk,bkhwc->bhwc"` ("einsum"). On
    XLA:CPU that einsum stacks a copy of every preceding feature and runs a batched matrix
    product whose contracted dimension is only n long, forward and backward; "unrolled" computes
    the same sum as n per-image multiply-adds, which XLA fuses into one pass over the features.
    Both give the same values up to float32 rounding (tests/models/test_drsan.py).

    Args:
      r_n: (B, n) weights r(n, 0..n-1) of one block, per image.
      features: the n preceding features f_0..f_{n-1} of the DRAG, each (B, H, W, C).
      impl: "einsum", "unrolled" or "auto" (`default_dra_impl` of the default backend).

    Returns:
      (B, H, W, C) weighted sum.
    """
    if impl not in DRA_IMPLS:
        raise ValueError(f"dynamic_residual impl must be one of {list(DRA_IMPLS)}, got {impl!r}")
    if impl == "auto":
        impl = default_dra_impl()
    dtype = features[0].dtype
    r_n = r_n.astype(dtype)
    if impl == "einsum":
        stacked = jnp.stack(features, axis=1)  # (B, n, H, W, C)
        return jnp.einsum("bk,bkhwc->bhwc", r_n, stacked)
    out = None
    for k, f in enumerate(features):
        # Slices, not NumPy indexing: under a symbolic batch size (jax.export, jax2tf) an
        # integer index becomes a gather, which TFLite's converter cannot take.
        term = jnp.expand_dims(jax.lax.slice_in_dim(r_n, k, k + 1, axis=1), (2, 3)) * f
        out = term if out is None else out + term
    return out


__all__ = [
    "DRA_IMPLS",
    "ResidualBlock",
    "default_dra_impl",
    "dynamic_residual",
    "num_paths",
    "path_index",
]
