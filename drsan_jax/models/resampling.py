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

Indices are computed with jnp from the sizes, so that they are constants of the program for a
known size and expressions of the size for a symbolic one (a shape-polymorphic StableHLO
export); one gather per axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _index_range(length) -> jax.Array:
    """0 .. length - 1 as int32; `length` may be a symbolic dimension (shape-polymorphic export)."""
    return jnp.arange(length, dtype=jnp.int32)


def _pool_indices(n, out, k: int) -> jax.Array:
    """(out, k) input rows of each output row's bin, the last repeated to the common length k."""
    i = _index_range(out)
    starts = (i * n) // out
    ends = -((-(i + 1) * n) // out)  # ceil((i + 1) n / out)
    taps = starts[:, None] + jnp.arange(k, dtype=jnp.int32)[None, :]
    return jnp.minimum(taps, ends[:, None] - 1)


def _longest_bin(n, factor: int) -> int:
    """The longest bin of n rows pooled to n // factor: exact for a known n; otherwise the bound
    2 factor + 1 (n < (n // factor + 1) factor, so n / (n // factor) < 2 factor)."""
    if isinstance(n, int):
        out = n // factor
        return max(-((-(i + 1) * n) // out) - (i * n) // out for i in range(out))
    return 2 * factor + 1


def adaptive_max_pool(x: jax.Array, factor: int) -> jax.Array:
    """`F.adaptive_max_pool2d(x, (H // factor, W // factor))` on NHWC features.

    (B, H, W, C) -> (B, H // factor, W // factor, C); H and W may be symbolic dimensions.
    """
    height, width = x.shape[1:3]
    if isinstance(height, int) and isinstance(width, int) and min(height, width) < factor:
        raise ValueError(f"adaptive max pooling of {height}x{width} features by {factor}: "
                         f"both sides must be at least {factor}")
    rows = _pool_indices(height, height // factor, _longest_bin(height, factor))  # (H', kh)
    x = jnp.max(jnp.take(x, rows, axis=1, mode="clip"), axis=2)  # (B, H', W, C)
    cols = _pool_indices(width, width // factor, _longest_bin(width, factor))  # (W', kw)
    return jnp.max(jnp.take(x, cols, axis=2, mode="clip"), axis=3)  # (B, H', W', C)


def nearest_resize(x: jax.Array, size) -> jax.Array:
    """`F.interpolate(x, size, mode="nearest")` on NHWC: (B, h, w, C) -> (B, *size, C)."""
    h, w = x.shape[1:3]
    rows = (_index_range(size[0]) * h) // size[0]
    cols = (_index_range(size[1]) * w) // size[1]
    return jnp.take(jnp.take(x, rows, axis=1, mode="clip"), cols, axis=2, mode="clip")


def _bilinear_taps(n, s: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(left index, right index, right weight) of each of the n*s outputs along one axis."""
    src = jnp.maximum((_index_range(n * s).astype(jnp.float32) + 0.5) / s - 0.5, 0.0)
    left = jnp.floor(src).astype(jnp.int32)
    right = jnp.minimum(left + 1, n - 1)
    return left, right, src - left.astype(jnp.float32)


def bilinear_upscale(x: jax.Array, s: int) -> jax.Array:
    """`F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)` on NHWC."""
    h, w = x.shape[1:3]
    left, right, frac = _bilinear_taps(h, s)
    frac = frac.astype(x.dtype)[None, :, None, None]
    x = (jnp.take(x, left, axis=1, mode="clip") * (1 - frac)
         + jnp.take(x, right, axis=1, mode="clip") * frac)
    left, right, frac = _bilinear_taps(w, s)
    frac = frac.astype(x.dtype)[None, None, :, None]
    return (jnp.take(x, left, axis=2, mode="clip") * (1 - frac)
            + jnp.take(x, right, axis=2, mode="clip") * frac)


__all__ = ["adaptive_max_pool", "bilinear_upscale", "nearest_resize"]
