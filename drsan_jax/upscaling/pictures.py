"""Pictures of every kind through an RGB super-resolution network, and the upscaler every
backend shares.

The network only sees (H, W, 3) float32 RGB in [0, 1]. `PictureUpscaler.upscale_rows` brings a
picture there at its full bit depth (16-bit inputs are not reduced to 8 bits), runs the
backend's per-tile predictor on it through `upscaling.tiling`, and gives the result back in the
picture's own kind: grey images go through as three equal channels and come back as their mean,
and alpha is upscaled with MATLAB's bicubic beside the colour. It yields bands of rows, for
writers that stream a picture larger than memory should hold twice; `upscale` gathers them into
one array. Pictures with a side below `shapes.MIN_SIDE` are padded by reflection for the network
and cropped back.

`PictureUpscaler` (`upscale`, `upscale_rows`, `bicubic`, `resolve_tile`, `tile_count`) is what
every backend shares; a backend extends it with its network and its memory rule: the JAX
`api.Upscaler` and the ONNX Runtime `onnx_runtime.OnnxUpscaler`. So the two treat pictures
identically. Nothing here imports JAX.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from drsan_jax.data.resize import imresize
from drsan_jax.upscaling import tiling
from drsan_jax.upscaling.tiling import DEFAULT_OVERLAP


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


def _bands(predict: tiling.BatchPredictFn, image: np.ndarray, scale: int, tile: int | None,
           overlap: int, on_tile: Callable[[], None] | None, batch: int
           ) -> Iterator[np.ndarray]:
    """Super-resolves one picture that `check_image` accepted, in bands of rows.

    Each band is yielded as soon as it is final, so a writer can stream the result to a file
    (`data.image_io.write_image_rows`); nothing of the result's size is held but the upscaled
    alpha of an RGBA picture.

    Args:
      predict: the network on a list of (h, w, 3) float32 LR tiles of one shape.
      image: HxW or HxWxC (C in 1, 3, 4) uint8 or uint16.
      scale: the upscaling factor of `predict`.
      tile: the tile size in LR pixels; None for the whole image in one call.
      overlap: the least overlap of neighbouring tiles in LR pixels.
      on_tile: called after each tile (for progress bars).
      batch: most tiles per `predict` call.

    Yields:
      Consecutive bands of rows of the (H * scale, W * scale[, C]) result, with the input's
      dtype and channels.
    """
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


def _gathered(image: np.ndarray, scale: int, bands: Iterator[np.ndarray]) -> np.ndarray:
    """The bands of `image`'s x`scale` result in one array."""
    out = np.empty((image.shape[0] * scale, image.shape[1] * scale, *image.shape[2:]),
                   image.dtype)
    row = 0
    for band in bands:
        out[row:row + len(band)] = band
        row += len(band)
    return out


class PictureUpscaler(abc.ABC):
    """Upscales pictures with a network a backend supplies: the part every backend shares.

    A backend sets `scale` and implements `_predictor` (its network on a batch of tiles) and
    `_fits_whole` (its memory rule); it may limit `_tile_batch` and refuse options in
    `_check_options`.
    """

    scale: int

    @abc.abstractmethod
    def _predictor(self, self_ensemble: bool) -> tiling.BatchPredictFn:
        """The network on a list of LR tiles of one shape."""

    @abc.abstractmethod
    def _fits_whole(self, height: int, width: int, self_ensemble: bool) -> bool:
        """Whether a whole LR picture of this size fits in this backend's memory budget."""

    def _tile_batch(self, tile: int | None) -> int:
        """Tiles per `_predictor` call."""
        return 1

    def _check_options(self, self_ensemble: bool) -> None:
        """Raises a ValueError for an option this backend does not have."""

    def upscale(
        self,
        image: np.ndarray,
        self_ensemble: bool = False,
        tile: int | str | None = "auto",
        overlap: int = DEFAULT_OVERLAP,
        on_tile: Callable[[], None] | None = None,
    ) -> np.ndarray:
        """Super-resolves one image.

        Args:
          image: HxW or HxWxC (C in 1, 3, 4) uint8 or uint16.
          self_ensemble: average over the 8 flips and quarter turns (slower, a little better).
          tile: "auto" (whole image when it fits in memory, else `tiling.DEFAULT_TILE`), None
            (always whole), or a tile size in LR pixels.
          overlap: the least overlap of neighbouring tiles, in LR pixels.
          on_tile: called after each tile (for progress bars; see `tile_count`).

        Returns:
          (H * scale, W * scale[, C]) array with the input's dtype and channels.
        """
        image = check_image(image)
        return _gathered(image, self.scale,
                         self._run(image, self_ensemble, tile, overlap, on_tile))

    def upscale_rows(
        self,
        image: np.ndarray,
        self_ensemble: bool = False,
        tile: int | str | None = "auto",
        overlap: int = DEFAULT_OVERLAP,
        on_tile: Callable[[], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """`upscale`'s result in consecutive bands of rows, each yielded once it is final.

        For pictures too large to hold twice: with `data.image_io.write_image_rows` the result
        goes to a PNG or TIFF file without ever being whole in memory. The arguments are
        `upscale`'s; the bands are rows of the array it returns.
        """
        return self._run(check_image(image), self_ensemble, tile, overlap, on_tile)

    def bicubic(self, image: np.ndarray) -> np.ndarray:
        """The bicubic baseline: MATLAB's imresize by `scale`, same dtype and channels."""
        return imresize(check_image(image), self.scale)

    def resolve_tile(self, height: int, width: int, tile: int | str | None = "auto",
                     overlap: int = DEFAULT_OVERLAP, self_ensemble: bool = False) -> int | None:
        """The tile size `upscale` uses for an image of this size: an int, or None for whole.

        Raises:
          ValueError: an option this backend does not have, a tile that is not "auto", None
            or an int of at least `shapes.MIN_SIDE`, or an overlap not below half the tile.
        """
        self._check_options(self_ensemble)
        return tiling.choose_tile(tile, overlap,
                                  lambda: self._fits_whole(height, width, self_ensemble),
                                  height * width)

    def tile_count(self, height: int, width: int, tile: int | str | None = "auto",
                   overlap: int = DEFAULT_OVERLAP, self_ensemble: bool = False) -> int:
        """How many tiles `upscale` runs for an image of this size (1 when whole)."""
        resolved = self.resolve_tile(height, width, tile, overlap, self_ensemble)
        return tiling.num_tiles(height, width, resolved, overlap)

    def _run(self, image: np.ndarray, self_ensemble: bool, tile: int | str | None,
             overlap: int, on_tile: Callable[[], None] | None) -> Iterator[np.ndarray]:
        resolved = self.resolve_tile(*image.shape[:2], tile, overlap, self_ensemble)
        return _bands(self._predictor(self_ensemble), image, self.scale, resolved, overlap,
                      on_tile, self._tile_batch(resolved))


__all__ = ["PictureUpscaler", "check_image"]
