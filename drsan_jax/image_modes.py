"""Pictures of every kind through an RGB super-resolution network: grey, RGB, RGBA, 8 or 16 bits.

The network only sees (H, W, 3) float32 RGB in [0, 1]. `upscale_image` brings a picture there at
its full bit depth (16-bit inputs are not reduced to 8 bits), runs any per-tile predictor on it
through `drsan_jax.tiling`, and gives the result back in the picture's own kind: grey images go
through as three equal channels and come back as their mean, and alpha is upscaled with MATLAB's
bicubic beside the colour. `upscale_rows` gives the same result in bands of rows, for writers
that stream a picture larger than memory should hold twice. Pictures with a side below
`tiling.MIN_SIDE` are padded by reflection for the network and cropped back (see `tiling`).
The JAX `api.Upscaler` and the ONNX Runtime `onnx_runtime.OnnxUpscaler` both call these, so the
two backends treat pictures identically. Nothing here imports JAX.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from drsan_jax import tiling
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


def upscale_rows(
    predict: tiling.BatchPredictFn,
    image: np.ndarray,
    scale: int,
    tile: int | None,
    overlap: int,
    on_tile: Callable[[], None] | None = None,
    batch: int = 1,
) -> Iterator[np.ndarray]:
    """Super-resolves one picture of any kind, tile by tile, in bands of rows.

    Each band is yielded as soon as it is final, so a writer can stream the result to a file
    (`data.image_io.write_image_rows`); nothing of the result's size is held but the upscaled
    alpha of an RGBA picture.

    Args:
      predict: the network on a list of (h, w, 3) float32 LR tiles of one shape (see
        `tiling.BatchPredictFn`).
      image: HxW or HxWxC (C in 1, 3, 4) uint8 or uint16 (see `check_image`).
      scale: the upscaling factor of `predict`.
      tile: the tile size in LR pixels; None for the whole image in one call.
      overlap: the least overlap of neighbouring tiles in LR pixels.
      on_tile: called after each tile (for progress bars).
      batch: most tiles per `predict` call.

    Yields:
      Consecutive bands of rows of the (H * scale, W * scale[, C]) result, with the input's
      dtype and channels.
    """
    image = check_image(image)
    alpha = None
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = imresize(image[..., 3], scale)  # (H * scale, W * scale)
    row = 0
    for sr in tiling.tiled_rows(predict, image, scale, tile, overlap, image.dtype, batch,
                                on_tile):
        if image.ndim == 2 or image.shape[2] == 1:
            grey = np.rint(sr.mean(axis=2, dtype=np.float32)).astype(image.dtype)
            yield grey if image.ndim == 2 else grey[..., None]
        elif alpha is not None:
            yield np.concatenate([sr, alpha[row:row + len(sr), :, None]], axis=2)
        else:
            yield sr
        row += len(sr)


def upscale_image(
    predict: tiling.BatchPredictFn,
    image: np.ndarray,
    scale: int,
    tile: int | None,
    overlap: int,
    on_tile: Callable[[], None] | None = None,
    batch: int = 1,
) -> np.ndarray:
    """Super-resolves one picture of any kind, tile by tile: `upscale_rows` in one array.

    Returns:
      (H * scale, W * scale[, C]) array with the input's dtype and channels.
    """
    image = check_image(image)
    out = np.empty((image.shape[0] * scale, image.shape[1] * scale, *image.shape[2:]),
                   image.dtype)
    row = 0
    for band in upscale_rows(predict, image, scale, tile, overlap, on_tile, batch):
        out[row:row + len(band)] = band
        row += len(band)
    return out


__all__ = ["check_image", "upscale_image", "upscale_rows"]
