"""MATLAB-compatible bicubic `imresize`, shared by data preparation, evaluation and upscaling.

Super-resolution benchmarks define their low-resolution images as MATLAB's
`imresize(hr, 1/s, 'bicubic')`, so training data and baselines must reproduce it, antialiasing
included. The algorithm (MATLAB's `imresize.m`, `contributions`):

- Keys' cubic convolution kernel with a = -0.5, support [-2, 2] (width 4).
- When shrinking (scale < 1) the kernel is stretched to width 4 / scale and scaled by `scale`
  (antialiasing).
- Output pixel x (1-based) samples input position u = x / scale + 0.5 * (1 - 1 / scale).
- It uses the ceil(width) + 2 input pixels from floor(u - width / 2) on, with weights normalised
  to sum to one; indices past an edge are mirrored (half-sample symmetric: ..., 2, 1, 1, 2, ...).
- Separable: one dimension after the other, the one with the smaller scale first (rows first
  on a tie), everything in float64. Integer images are rounded (half away from zero) and
  clipped once at the end; float images are returned unclipped.

`bicubic_downscale` makes SR training and test inputs; it matches the released Set5, Set14 and
B100 LR images bit for bit. `imresize` is the NumPy reference; `imresize_jax` applies the same
weights as dense matrices with `jnp.einsum`, so it runs inside `jax.jit` (shape, scale static).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import jax

# The output length is ceil(scale * length); float rounding can push an exact product just past
# an integer (1.1 * 50 == 55.00000000000001), which would add a pixel nobody asked for.
_SIZE_TOLERANCE = 1e-9


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def _contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel, the input indices it reads and their weights, as MATLAB computes them.

    Args:
      in_length: input length along the dimension.
      out_length: output length along the dimension.
      scale: output / input scale factor MATLAB uses for this dimension.

    Returns:
      (weights, indices), both (out_length, taps): float64 weights summing to one per row and
      0-based input indices, already mirrored into [0, in_length).
    """
    kernel_width = 4.0
    if scale < 1:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)  # 1-based, may fall outside [1, in_length]
    distance = u[:, None] - indices
    weights = scale * _cubic(scale * distance) if scale < 1 else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirrored = (indices.astype(np.int64) - 1) % (2 * in_length)
    mirrored = np.where(mirrored < in_length, mirrored, 2 * in_length - 1 - mirrored)
    return weights, mirrored


def _plan(
    in_shape: Sequence[int], scale: float | None, output_shape: Sequence[int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Output (H, W) and per-dimension scales from exactly one of `scale` / `output_shape`."""
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize needs exactly one of scale or output_shape")
    height, width = int(in_shape[0]), int(in_shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize an empty image of shape {tuple(in_shape)}")
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        scale = float(scale)
        out = tuple(math.ceil(scale * n - _SIZE_TOLERANCE) for n in (height, width))
        return out, (scale, scale)
    out = tuple(int(n) for n in output_shape)
    if len(out) != 2 or min(out) < 1:
        raise ValueError(f"output_shape must be (height, width) with both >= 1, got {output_shape}")
    return out, (out[0] / height, out[1] / width)


def _dimension_order(scales: tuple[float, float]) -> tuple[int, int]:
    """MATLAB resizes the dimension with the smaller scale first; rows first on a tie."""
    return (1, 0) if scales[1] < scales[0] else (0, 1)


def resize_matrices(
    in_shape: Sequence[int],
    scale: float | None = None,
    output_shape: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense weight matrices of `imresize`: out = rows @ image @ cols.T per channel.

    Args:
      in_shape: (H, W, ...) of the input; only H and W are used.
      scale: one factor for both dimensions (> 1 enlarges). Exactly one of scale and
        output_shape is given.
      output_shape: (H_out, W_out).

    Returns:
      (rows, cols): float64 matrices of shape (H_out, H) and (W_out, W). Taps that mirror onto
      the same input pixel are summed into one entry.
    """
    (out_h, out_w), (scale_h, scale_w) = _plan(in_shape, scale, output_shape)
    matrices = []
    for in_length, out_length, s in ((in_shape[0], out_h, scale_h), (in_shape[1], out_w, scale_w)):
        weights, indices = _contributions(int(in_length), out_length, s)
        matrix = np.zeros((out_length, int(in_length)))
        np.add.at(matrix, (np.arange(out_length)[:, None], indices), weights)
        matrices.append(matrix)
    return matrices[0], matrices[1]


def _check_image(image) -> None:
    """Raises a ValueError unless the array is HxW or HxWxC."""
    if image.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC image, got shape {image.shape}")


def _to_output_dtype(resized, dtype, xp):
    """Integer images: round half away from zero and clip once, as MATLAB does; floats as is."""
    if not np.issubdtype(dtype, np.integer):
        return resized
    info = np.iinfo(dtype)
    return xp.clip(xp.floor(resized + 0.5), info.min, info.max).astype(dtype)


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Resizes like MATLAB's `imresize(image, scale_or_size, 'bicubic')` (antialiasing on).

    Args:
      image: HxW or HxWxC array, integer (e.g. uint8) or float.
      scale: one factor for both dimensions (> 1 enlarges); the output has
        ceil(scale * H) x ceil(scale * W) pixels. Exactly one of scale and output_shape.
      output_shape: (H_out, W_out); each dimension then uses its own scale H_out / H, W_out / W.

    Returns:
      The resized image with the input's dtype: integer images rounded and clipped to their
      range, float images unclipped (bicubic overshoots).
    """
    image = np.asarray(image)
    _check_image(image)
    (out_h, out_w), scales = _plan(image.shape, scale, output_shape)
    result = image.astype(np.float64)
    for dim in _dimension_order(scales):
        out_length = (out_h, out_w)[dim]
        weights, indices = _contributions(image.shape[dim], out_length, scales[dim])
        moved = np.moveaxis(result, dim, 0)
        lines = np.ascontiguousarray(moved).reshape(moved.shape[0], -1)  # (L_in, rest)
        # Tap by tap in index order, as MATLAB accumulates; a dense matmul would sum in another
        # order and move values that land on a .5 tie to the other side.
        acc = np.zeros((out_length, lines.shape[1]))
        tap_values = np.empty_like(acc)
        for tap in range(weights.shape[1]):
            np.take(lines, indices[:, tap], axis=0, out=tap_values)
            tap_values *= weights[:, tap, None]
            acc += tap_values
        result = np.moveaxis(acc.reshape((out_length,) + moved.shape[1:]), 0, dim)
    return _to_output_dtype(result, image.dtype, np)


def imresize_jax(
    image: jax.Array,
    scale: float | None = None,
    output_shape: Sequence[int] | None = None,
) -> jax.Array:
    """`imresize` as two dense matrix products, traceable by `jax.jit` and `jax.vmap`.

    The weight matrices depend only on the (static) shape and scale, so they are built with
    NumPy at trace time and become constants of the compiled function. Under `jax.jit`, pass
    `scale` / `output_shape` as static arguments; use `jax.vmap` for batches.

    Args:
      image: HxW or HxWxC array, integer or float.
      scale: as in `imresize`.
      output_shape: as in `imresize`.

    Returns:
      The resized image, equal to `imresize` up to float rounding (float32 unless jax_enable_x64).
      Integer images are rounded and clipped like `imresize`; a pixel within float32 rounding of
      a .5 tie may land one level away from the NumPy result.
    """
    # Imported here: `imresize` and the rest of this file serve the ONNX path without JAX.
    import jax
    import jax.numpy as jnp

    _check_image(image)
    rows, cols = resize_matrices(image.shape, scale, output_shape)
    dtype = image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.result_type(float)
    x = jnp.asarray(image, dtype)
    # HIGHEST: on GPUs the default lets float32 matmuls drop to TF32 (~3 decimal digits).
    spec = "oh,hw,pw->op" if x.ndim == 2 else "oh,hwc,pw->opc"  # (H_out, W_out[, C])
    resized = jnp.einsum(
        spec, rows.astype(dtype), x, cols.astype(dtype), precision=jax.lax.Precision.HIGHEST
    )
    return _to_output_dtype(resized, image.dtype, jnp)


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crops the bottom and right so that height and width are multiples of `scale`.

    Args:
      image: HxW or HxWxC array.
      scale: integer super-resolution factor.

    Returns:
      A view of the top-left (H // scale * scale) x (W // scale * scale) pixels.
    """
    height, width = image.shape[0] // scale * scale, image.shape[1] // scale * scale
    if height == 0 or width == 0:
        raise ValueError(f"image of shape {image.shape} is smaller than the scale {scale}")
    return image[:height, :width]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """Makes the low-quality input of an SR pair the way the benchmark LR images were made.

    Integer images go through [0, 1] floats, as MATLAB's
    `im2uint8(imresize(im2double(hr), 1 / scale, 'bicubic'))`: that reproduces the released
    Set5 / Set14 / B100 LR images bit for bit at x2, x3 and x4, while resizing the uint8
    image directly differs at x2 on a few pixels whose value is exactly k + 0.5 (the x2
    weights are dyadic, so those ties are exact; after the division by 255 they fall on
    either side, as in the released files).

    Args:
      hr: HxW or HxWxC image, usually uint8.
      scale: integer factor (2, 3, 4, ...).

    Returns:
      (H // scale) x (W // scale) image of the same dtype, from `mod_crop(hr, scale)`.
    """
    hr = mod_crop(np.asarray(hr), scale)
    if not np.issubdtype(hr.dtype, np.integer):
        return imresize(hr, 1 / scale)
    peak = float(np.iinfo(hr.dtype).max)
    return _to_output_dtype(imresize(hr / peak, 1 / scale) * peak, hr.dtype, np)


def bicubic_upscale(lq: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscaling, the baseline row of every SR table.

    Args:
      lq: HxW or HxWxC low-quality image.
      scale: integer factor.

    Returns:
      imresize(lq, scale): (H * scale) x (W * scale), same dtype.
    """
    return imresize(lq, scale)
