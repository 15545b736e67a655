"""PyTorch's adaptive max pooling and its nearest and bilinear interpolation, exactly.

SAFMN and SMFANet pool their features to a fraction of the image size, work there and bring
the result back with nearest-neighbour interpolation; SAFMN's NTIRE 2023 variant adds a
bilinear upscaling of the input. Their released weights were trained with PyTorch's rules for
sizes that are not multiples of the factor, so these follow them to the index
(`docs/networks/safmn.md`, "Pooling and interpolation"):

- `adaptive_max_pool`: output row i of `out` rows over `n` input rows takes the maximum of rows
  floor(i n / out) ... ceil((i + 1) n / out) - 1; bins may differ in size and overlap.
- `nearest_resize`: output row r of `n` rows reads input row floor(r m / n) of `m`.
- `bilinear_upscale`: `align_corners=False`, source coordinate (d + 0.5) / s - 0.5 clamped at
  0, the right neighbour clamped to the last pixel.

The sizes are static (known when tracing), so every index is a constant of the program: one
gather per axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _pool_indices(n: int, out: int) -> np.ndarray:
    """(out, k) input rows of each output row's bin, the last repeated to a common length k."""
    starts = (np.arange(out) * n) // out
    ends = -((-(np.arange(out) + 1) * n) // out)  # ceil((i + 1) n / out)
    k = int((ends - starts).max())
    return np.minimum(starts[:, None] + np.arange(k)[None, :], ends[:, None] - 1)


def adaptive_max_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`F.adaptive_max_pool2d(x, size)` on NHWC features: (B, H, W, C) -> (B, *size, C)."""
    height, width = x.shape[1:3]
    if min(size) < 1 or size[0] > height or size[1] > width:
        raise ValueError(f"adaptive max pooling of {height}x{width} features to {size[0]}x"
                         f"{size[1]}: the pooled size must be between 1 and the input size")
    rows = _pool_indices(height, size[0])  # (H', kh)
    x = jnp.max(jnp.take(x, rows, axis=1), axis=2)  # (B, H', W, C)
    cols = _pool_indices(width, size[1])  # (W', kw)
    return jnp.max(jnp.take(x, cols, axis=2), axis=3)  # (B, H', W', C)


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`F.interpolate(x, size, mode="nearest")` on NHWC: (B, h, w, C) -> (B, *size, C)."""
    h, w = x.shape[1:3]
    rows = (np.arange(size[0]) * h) // size[0]
    cols = (np.arange(size[1]) * w) // size[1]
    return jnp.take(jnp.take(x, rows, axis=1), cols, axis=2)


def _bilinear_taps(n: int, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left index, right index, right weight) of each of the n*s outputs along one axis."""
    src = np.maximum((np.arange(n * s) + 0.5) / s - 0.5, 0.0)
    left = np.floor(src).astype(np.int64)
    right = np.minimum(left + 1, n - 1)
    return left, right, (src - left).astype(np.float32)


def bilinear_upscale(x: jax.Array, s: int) -> jax.Array:
    """`F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)` on NHWC."""
    h, w = x.shape[1:3]
    left, right, frac = _bilinear_taps(h, s)
    frac = jnp.asarray(frac, x.dtype)[None, :, None, None]
    x = jnp.take(x, left, axis=1) * (1 - frac) + jnp.take(x, right, axis=1) * frac
    left, right, frac = _bilinear_taps(w, s)
    frac = jnp.asarray(frac, x.dtype)[None, None, :, None]
    return jnp.take(x, left, axis=2) * (1 - frac) + jnp.take(x, right, axis=2) * frac


__all__ = ["adaptive_max_pool", "bilinear_upscale", "nearest_resize"]
