"""Pictures of every kind through an RGB super-resolution network: grey, RGB, RGBA, 8 or 16 bits.

The network only sees (H, W, 3) float32 RGB in [0, 1]. `upscale_image` brings a picture there at
its full bit depth (16-bit inputs are not reduced to 8 bits), runs any per-tile predictor on it
through `drsan_jax.tiling`, and gives the result back in the picture's own kind: grey images go
through as three equal channels and come back as their mean, and alpha is upscaled with MATLAB's
bicubic beside the colour. The JAX `api.Upscaler` and the ONNX Runtime `onnx_runtime.OnnxUpscaler`
both call it, so the two backends treat pictures identically. Nothing here imports JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from drsan_jax import tiling
from drsan_jax.data.image_io import to_model_input
from drsan_jax.data.resize import imresize


def check_image(image: Any) -> np.ndarray:
    """The image as an array, or a ValueError saying what an image must be.

    Args:
      image: anything array-like.

    Returns:
      The image as an HxW or HxWxC (C in 1, 3, 4) uint8 or uint16 array.
    """
    image = np.asarray(image)
    layout_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if image.dtype not in (np.uint8, np.uint16) or not layout_ok:
        raise ValueError(f"expected an HxW or HxWxC image (C in 1, 3, 4) of uint8 or uint16, "
                         f"got shape {image.shape} and dtype {image.dtype}")
    return image


def upscale_image(
    predict: tiling.PredictFn,
    image: np.ndarray,
    scale: int,
    tile: int | None,
    overlap: int,
    on_tile: Callable[[], None] | None = None,
) -> np.ndarray:
    """Super-resolves one picture of any kind, tile by tile.

    Args:
      predict: the network on one (h, w, 3) float32 LR tile (see `tiling.PredictFn`).
      image: HxW or HxWxC (C in 1, 3, 4) uint8 or uint16 (see `check_image`).
      scale: the upscaling factor of `predict`.
      tile: the tile size in LR pixels; None for the whole image in one call.
      overlap: the least overlap of neighbouring tiles in LR pixels.
      on_tile: called after each tile (for progress bars).

    Returns:
      (H * scale, W * scale[, C]) array with the input's dtype and channels.
    """
    image = check_image(image)
    height, width = image.shape[:2]
    sr = np.empty((height * scale, width * scale, 3), image.dtype)
    tiling.upscale_tiled(predict, to_model_input(image), scale, sr, tile, overlap, on_tile)
    if image.ndim == 2 or image.shape[2] == 1:
        grey = np.rint(sr.mean(axis=2, dtype=np.float32)).astype(image.dtype)
        return grey if image.ndim == 2 else grey[..., None]
    if image.shape[2] == 4:
        alpha = imresize(image[..., 3], scale)
        return np.concatenate([sr, alpha[..., None]], axis=2)
    return sr


__all__ = ["check_image", "upscale_image"]
