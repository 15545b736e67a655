"""Overlapping tiles: super-resolving an image too large for one pass, in bounded memory.

An image is covered by a grid of equal tiles (`tile` x `tile` LR pixels, fewer along a side
shorter than that) that overlap their neighbours by at least `overlap` pixels. Each tile is
super-resolved on its own and the results are cross-faded in the overlaps.

Tiling changes DRSAN's output in two ways, and the blend is built around both:

- Convolution borders: a tile's 'same' convolutions see zeros past its edges where the whole
  image has pixels, so outputs near an interior tile edge differ. They are given weight zero:
  the outer quarter of every overlap is discarded and the middle half is a linear cross-fade.
- DRM statistics: each DRAG's path weights r are a mean over its whole input, so every tile
  gets its own r. No overlap removes this; only larger tiles shrink it. The cross-fade keeps the
  resulting small shifts from showing as seams.

The weights are separable (a row weight times a column weight) and normalised along each axis, so
they sum to one at every pixel without a weight image. HR rows are quantised and written to the
output as soon as no later tile touches them; besides the output, memory holds one row of tiles
in float32. A single tile covering the whole image is plain whole-image inference.

The tiling itself is NumPy on a callback (`PredictFn`), so any backend can use it: the JAX
`api.Upscaler` and the ONNX Runtime `onnx_runtime.OnnxUpscaler`. JAX is imported only inside the
functions that ask XLA how much memory the compiled network needs, so that the ONNX path runs
where JAX is not installed.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from drsan_jax.data.image_io import quantize

if TYPE_CHECKING:
    import flax.linen as nn
    import jax

# Tiles for images that do not fit in memory whole, in LR pixels. Each tile's DRMs average over
# the tile instead of the image; benchmarks/tiling_agreement.py measures what that costs. With a
# DRSAN-32s x2 at 128-pixel tiles it moved Set5/Set14/B100 PSNR by 0.002 dB on average and
# 0.015 dB on the worst image, and it shrinks as tiles grow. 512 keeps a tile's scratch near
# 1 GiB (32s at x4) and is one of the predictor's bucket sides, so no tile is padded.
DEFAULT_TILE = 512
# A quarter of it (8 LR pixels) is dropped at each interior tile edge, where the zero padding
# of the tile's convolutions differs from the image's pixels; the rest is cross-faded.
DEFAULT_OVERLAP = 32

# (h, w, 3) float32 LR in [0, 1] -> (h * scale, w * scale, 3) float32 HR.
PredictFn = Callable[[np.ndarray], np.ndarray]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one axis begin.

    Args:
      length: the image size along the axis, in pixels.
      tile: the tile size along the axis.
      overlap: the least overlap of neighbouring tiles; less than half the tile.

    Returns:
      Increasing starts, the first 0 and the last `length - tile`, evenly spaced so that each
      tile overlaps the next by `overlap` pixels or a little more; [0] if one tile covers it.
    """
    if tile < 1 or overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"tiles of {tile} px need an overlap from 0 to below {tile / 2}, "
                         f"got {overlap}")
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def blend_weights(starts: list[int], tile: int, length: int, overlap: int,
                  scale: int) -> list[np.ndarray]:
    """Per-tile weights along one axis, at HR resolution, summing to one at every pixel.

    Args:
      starts: the tile starts from `tile_starts` (LR pixels).
      tile: the tile size (LR pixels), clipped to `length`.
      length: the image size along the axis (LR pixels).
      overlap: the nominal overlap (LR pixels).
      scale: the upscaling factor.

    Returns:
      One float32 vector of `min(tile, length) * scale` weights per tile.
    """
    size = min(tile, length)
    # HR pixel centres in LR units, measured from the tile's start.
    x = (np.arange(size * scale) + 0.5) / scale
    raw = []
    for i, start in enumerate(starts):
        w = np.ones(size * scale)
        # Only edges facing another tile fade; the image's own borders keep weight one.
        for distance, faces_tile in ((x, i > 0), (size - x, i < len(starts) - 1)):
            if faces_tile and overlap > 0:
                w = np.minimum(w, np.clip((distance - overlap / 4) / (overlap / 2), 0.0, 1.0))
        raw.append(w)
    total = np.zeros(length * scale)
    for start, w in zip(starts, raw):
        total[start * scale:(start + size) * scale] += w
    return [(w / total[s * scale:(s + size) * scale]).astype(np.float32)
            for s, w in zip(starts, raw)]


# Share of the free memory one inference call may plan to use: the rest is for the process's
# own arrays (input, output, the tile strips) and for whatever else runs on the machine.
MEMORY_FRACTION = 0.5
# The side at which the compiled network's scratch memory is measured; it grows linearly with
# the number of pixels from there (every activation is a per-pixel feature map).
_PROBE_SIDE = 64


@functools.lru_cache(maxsize=None)
def bytes_per_pixel(model: nn.Module) -> float:
    """Device memory one padded LR pixel costs in a masked forward pass of `model`.

    Measured, not estimated: XLA's buffer assignment for the compiled network at a small size
    (scratch plus output), so it follows the model's layers and the backend's kernels.
    """
    import jax
    import jax.numpy as jnp

    from drsan_jax.models import param_shapes

    x = jax.ShapeDtypeStruct((1, _PROBE_SIDE, _PROBE_SIDE, 3), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, _PROBE_SIDE, _PROBE_SIDE, 1), jnp.float32)
    apply = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))
    stats = apply.lower(param_shapes(model), x, mask).compile().memory_analysis()
    used = stats.temp_size_in_bytes + stats.output_size_in_bytes
    return used / _PROBE_SIDE**2


def inference_bytes(model: nn.Module, height: int, width: int, self_ensemble: bool) -> float:
    """Memory a whole-image `inference.Predictor` call on an image of this size needs.

    Args:
      model: the DRSAN.
      height: the LR height.
      width: the LR width.
      self_ensemble: whether the 8 transformed inputs run (their outputs are all held).

    Returns:
      Bytes: the device's share at the padded (bucket) size, plus the host's float32 copies of
      the HR output (the predictor's result and its sum over the ensemble).
    """
    from drsan_jax.data.transforms import NUM_TRANSFORMS
    from drsan_jax.inference import bucket_shape

    padded = math.prod(bucket_shape(height, width))
    calls = NUM_TRANSFORMS if self_ensemble else 1
    host = 2 * 3 * 4 * model.scale**2 * height * width
    return padded * bytes_per_pixel(model) * calls + host


def memory_budget(device: jax.Device | None = None) -> float:
    """Bytes inference may plan to use: `MEMORY_FRACTION` of what is free now.

    Args:
      device: where the network runs; default the first local device. Accelerators report
        their free memory; on the CPU it is the host's available memory.
    """
    import jax

    device = device or jax.local_devices()[0]
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return MEMORY_FRACTION * (stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return host_memory_budget()


def host_memory_budget() -> float:
    """Bytes inference on the host's memory may plan to use: `MEMORY_FRACTION` of what is free."""
    return MEMORY_FRACTION * _host_available_bytes()


def _host_available_bytes() -> int:
    """MemAvailable on Linux (free memory plus reclaimable cache); else half the physical RAM."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def choose_tile(tile: int | str | None, overlap: int,
                fits_whole: Callable[[], bool]) -> int | None:
    """The tile size a backend runs an image at: an int, or None for the whole image at once.

    Args:
      tile: "auto", None (always whole) or a tile size in LR pixels.
      overlap: the least overlap of neighbouring tiles in LR pixels.
      fits_whole: for "auto", whether the whole image fits in the backend's memory budget.

    Returns:
      None or the tile size: with "auto", None when `fits_whole()`, else `DEFAULT_TILE`.

    Raises:
      ValueError: a tile that is not "auto", None or a positive int, or an overlap that is not
        below half the tile.
    """
    if tile == "auto":
        return None if fits_whole() else DEFAULT_TILE
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be 'auto', None or a positive number of LR pixels, "
                         f"got {tile!r}")
    tile_starts(tile, tile, overlap)  # validates the overlap
    return tile


def num_tiles(height: int, width: int, tile: int | None, overlap: int) -> int:
    """How many tiles `upscale_tiled` runs for an image (1 without tiling)."""
    if tile is None:
        return 1
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def upscale_tiled(
    predict: PredictFn,
    lq: np.ndarray,
    scale: int,
    out: np.ndarray,
    tile: int | None,
    overlap: int,
    on_tile: Callable[[], None] | None = None,
) -> np.ndarray:
    """Super-resolves an image tile by tile into a preallocated integer output.

    Args:
      predict: the network on one LR image (see `PredictFn`); it is called with at most
        `tile` x `tile` pixels.
      lq: (H, W, 3) float32 LR image in [0, 1].
      scale: the upscaling factor of `predict`.
      out: (H * scale, W * scale, 3) uint8 or uint16 array that receives the result, clipped to
        [0, 1] and rounded to the dtype's levels (`data.image_io.quantize`, as for benchmarks).
      tile: the tile size in LR pixels; None for one tile holding the whole image.
      overlap: the least overlap of neighbouring tiles in LR pixels (ignored without tiling).
      on_tile: called after each tile, e.g. to advance a progress bar.

    Returns:
      `out`.
    """
    height, width = lq.shape[:2]
    if out.shape != (height * scale, width * scale, 3):
        raise ValueError(f"output of shape {out.shape} does not hold a x{scale} result of an "
                         f"image of shape {lq.shape}")
    if tile is None or (height <= tile and width <= tile):
        quantize(predict(lq), out=out)
        if on_tile is not None:
            on_tile()
        return out
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    row_weights = blend_weights(rows, tile, height, overlap, scale)
    col_weights = blend_weights(cols, tile, width, overlap, scale)
    tile_h, tile_w = min(tile, height), min(tile, width)
    # HR rows from `pending_start` on may still receive contributions.
    pending_start, pending = 0, np.zeros((0, width * scale, 3), np.float32)
    for i, top in enumerate(rows):
        strip = np.zeros((tile_h * scale, width * scale, 3), np.float32)
        for left, col_w in zip(cols, col_weights):
            sr = predict(lq[top:top + tile_h, left:left + tile_w])  # (tile_h*s, tile_w*s, 3)
            strip[:, left * scale:(left + tile_w) * scale] += sr * col_w[None, :, None]
            if on_tile is not None:
                on_tile()
        strip *= row_weights[i][:, None, None]
        end = (top + tile_h) * scale
        grown = np.zeros((end - pending_start, width * scale, 3), np.float32)
        grown[:len(pending)] = pending
        grown[top * scale - pending_start:] += strip
        final = (rows[i + 1] if i + 1 < len(rows) else height) * scale
        quantize(grown[:final - pending_start], out=out[pending_start:final])
        pending_start, pending = final, grown[final - pending_start:]
    return out

