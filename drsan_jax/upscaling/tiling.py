"""Overlapping tiles: where they lie, how they are cross-faded, and the tiled run itself.

Tiles. An image too large for one pass is covered by overlapping tiles, each super-resolved on
its own, and the results are cross-faded. Along each axis the tiles are `tile` pixels long and
start `tile - overlap` apart; the last one is shortened to the smallest bucket that still covers
the rest of the axis with the overlap (`tile_spans`). So the pixels computed twice are those
the blend needs, plus at most half of the last tile: for a 1600x1200 image in 512-pixel tiles,
15% more than the image instead of the 64% of tiles spread evenly over it.

Tiling changes DRSAN's output in two ways, and the blend is built around both:

- Convolution borders: a tile's 'same' convolutions see zeros past its edges where the whole
  image has pixels, so outputs near an interior tile edge differ. They are given weight zero:
  the outer quarter of every overlap is discarded and the middle half is a linear cross-fade.
- DRM statistics: each DRAG's path weights r are a mean over its whole input, so every tile
  gets its own r. No overlap removes this; only larger tiles shrink it. The cross-fade keeps the
  resulting small shifts from showing as seams.

The weights are separable (a row weight times a column weight) and normalised along each axis,
so they sum to one at every pixel without a weight image. `tiled_rows` yields the result in bands
of HR rows, quantised as soon as no later tile touches them; besides the band it holds only the
float32 rows still shared with the next row of tiles and the columns still shared with the next
tile, and it converts each tile from the stored picture as it goes (no float copy of the input).
Tiles of one shape may run together (`batch`), e.g. one per CPU device. A single tile covering
the whole image is plain whole-image inference.

The tiling itself is NumPy on a callback (`BatchPredictFn`), so any backend can use it: the JAX
`api.Upscaler` and the ONNX Runtime `onnx_runtime.OnnxUpscaler`. Nothing here imports JAX, so the ONNX
path runs where JAX is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from drsan_jax.data.image_io import quantize, to_model_input
from drsan_jax.upscaling.shapes import MIN_SIDE, bucket_size, min_side_padding

# Tiles for images that do not fit in memory whole, in LR pixels. Each tile's DRMs average over
# the tile instead of the image; benchmarks/tiling_agreement.py measures what that costs
# (benchmarks/README.md, "Tiles move"), and it shrinks as tiles grow. 512 keeps a tile's scratch near
# 1 GiB (32s at x4) and is one of the predictor's bucket sides, so no tile is padded.
DEFAULT_TILE = 512
# A quarter of it (8 LR pixels) is dropped at each interior tile edge, where the zero padding
# of the tile's convolutions differs from the image's pixels; the rest is cross-faded.
DEFAULT_OVERLAP = 32
# (h, w, 3) float32 LR in [0, 1] -> (h * scale, w * scale, 3) float32 HR.
PredictFn = Callable[[np.ndarray], np.ndarray]
# Several such tiles, all of one shape -> their outputs, in order.
BatchPredictFn = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Where the tiles along one axis lie, as (start, size) pairs.

    Args:
      length: the image size along the axis, in pixels.
      tile: the tile size along the axis.
      overlap: the least overlap of neighbouring tiles; less than half the tile.

    Returns:
      [(0, length)] if one tile covers the axis. Else tiles of `tile` pixels starting
      `tile - overlap` apart, and a last one ending at `length`: the smallest bucket size (at
      least `MIN_SIDE`, at most `tile`) that overlaps its neighbour by `overlap` or more.
    """
    if tile < 1 or overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"tiles of {tile} px need an overlap from 0 to below {tile / 2}, "
                         f"got {overlap}")
    if length <= tile:
        return [(0, length)]
    step = tile - overlap
    full = (length - overlap) // step  # tiles of `tile` pixels that fit
    spans = [(i * step, tile) for i in range(full)]
    covered = (full - 1) * step + tile
    if covered < length:
        size = min(tile, bucket_size(max(length - covered + overlap, MIN_SIDE)))
        spans.append((length - size, size))
    return spans


def blend_weights(spans: list[tuple[int, int]], length: int, overlap: int,
                  scale: int) -> list[np.ndarray]:
    """Per-tile weights along one axis, at HR resolution, summing to one at every pixel.

    Args:
      spans: the tiles' (start, size) from `tile_spans` (LR pixels).
      length: the image size along the axis (LR pixels).
      overlap: the nominal overlap (LR pixels).
      scale: the upscaling factor.

    Returns:
      One float32 vector of `size * scale` weights per tile.
    """
    raw = []
    for i, (_, size) in enumerate(spans):
        # HR pixel centres in LR units, measured from the tile's start.
        x = (np.arange(size * scale) + 0.5) / scale
        w = np.ones(size * scale)
        # Only edges facing another tile fade; the image's own borders keep weight one.
        for distance, faces_tile in ((x, i > 0), (size - x, i < len(spans) - 1)):
            if faces_tile and overlap > 0:
                w = np.minimum(w, np.clip((distance - overlap / 4) / (overlap / 2), 0.0, 1.0))
        raw.append(w)
    total = np.zeros(length * scale)
    for (start, size), w in zip(spans, raw):
        total[start * scale:(start + size) * scale] += w
    return [(w / total[start * scale:(start + size) * scale]).astype(np.float32)
            for (start, size), w in zip(spans, raw)]


def choose_tile(tile: int | str | None, overlap: int, fits_whole: Callable[[], bool],
                pixels: int | None = None) -> int | None:
    """The tile size a backend runs an image at: an int, or None for the whole image at once.

    Args:
      tile: "auto", None (always whole) or a tile size in LR pixels, at least `MIN_SIDE`.
      overlap: the least overlap of neighbouring tiles in LR pixels.
      fits_whole: for "auto", whether the whole image fits in the backend's memory budget.
      pixels: for "auto", the image's LR pixels, if known.

    Returns:
      None or the tile size: with "auto", None for a picture of at most `DEFAULT_TILE` squared
      pixels that `fits_whole()`, else `DEFAULT_TILE`. A larger picture is tiled even when it
      would fit: one pass of it shows no progress for minutes on a CPU (a 2000x1500 photo at
      x2: three), and needs several times the memory, where tiles show a bar with the time
      left and cost 8-22% of the speed (benchmarks/README.md, "Tiled against whole-image pixel
      rate"). `tile=None` runs it whole.

    Raises:
      ValueError: a tile that is not "auto", None or an int of at least `MIN_SIDE`, or an
        overlap that is not below half the tile.
    """
    if tile == "auto":
        small = pixels is None or pixels <= DEFAULT_TILE * DEFAULT_TILE
        return None if small and fits_whole() else DEFAULT_TILE
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_SIDE:
        raise ValueError(f"tile must be 'auto', None or a number of LR pixels of at least "
                         f"{MIN_SIDE} (smaller tiles come out darker), got {tile!r}")
    tile_spans(tile, tile, overlap)  # validates the overlap
    return tile


def num_tiles(height: int, width: int, tile: int | None, overlap: int) -> int:
    """How many tiles `tiled_rows` runs for an image (1 without tiling)."""
    height, width = max(height, MIN_SIDE), max(width, MIN_SIDE)
    if tile is None or (height <= tile and width <= tile):
        return 1
    return len(tile_spans(height, tile, overlap)) * len(tile_spans(width, tile, overlap))


def tiled_rows(
    predict: BatchPredictFn,
    image: np.ndarray,
    scale: int,
    tile: int | None,
    overlap: int,
    dtype: np.dtype = np.uint8,
    batch: int = 1,
    on_tile: Callable[[], None] | None = None,
) -> Iterator[np.ndarray]:
    """Super-resolves an image tile by tile, yielding the result in bands of rows.

    Args:
      predict: the network on a list of LR tiles of one shape (see `BatchPredictFn`); each is
        at most `tile` x `tile` pixels and at least `MIN_SIDE` a side.
      image: (H, W[, C]) picture as `data.image_io.to_model_input` takes it (uint8, uint16 or
        float in [0, 1]; grey, RGB or RGBA). Each tile is converted as it is cut.
      scale: the upscaling factor of `predict`.
      tile: the tile size in LR pixels; None for one tile holding the whole image.
      overlap: the least overlap of neighbouring tiles in LR pixels (ignored without tiling).
      dtype: the integer type of the result (uint8 or uint16).
      batch: most tiles per `predict` call (tiles of one shape, taken in raster order).
      on_tile: called once per tile as soon as its output is computed (for progress bars).

    Yields:
      (h_band, W * scale, 3) arrays of `dtype`, consecutive bands of HR rows whose heights add
      up to H * scale: the network's output clipped to [0, 1] and rounded to the dtype's levels
      (`data.image_io.quantize`, as for benchmarks).
    """
    height, width = image.shape[:2]
    pads = [min_side_padding(n) for n in (height, width)]
    if any(sum(p) for p in pads):
        image = np.pad(image, pads + [(0, 0)] * (image.ndim - 2), mode="symmetric")
    (top_pad, _), (left_pad, _) = pads
    # What to keep of the padded result, in HR pixels.
    first, last = top_pad * scale, (top_pad + height) * scale
    columns = slice(left_pad * scale, (left_pad + width) * scale)
    begin = 0  # the padded result's row where the next band begins
    for band in _tiled_rows(predict, image, scale, tile, overlap, np.dtype(dtype), batch,
                            on_tile):
        end = begin + len(band)
        if max(first, begin) < min(last, end):
            yield band[max(first, begin) - begin:min(last, end) - begin, columns]
        begin = end


def _tiled_rows(predict: BatchPredictFn, image: np.ndarray, scale: int, tile: int | None,
                overlap: int, dtype: np.dtype, batch: int,
                on_tile: Callable[[], None] | None) -> Iterator[np.ndarray]:
    """`tiled_rows` on an image whose sides are at least `MIN_SIDE`."""
    height, width = image.shape[:2]
    s = scale
    if tile is None or (height <= tile and width <= tile):
        (sr,) = predict([to_model_input(image)])
        if on_tile is not None:
            on_tile()
        yield quantize(sr, dtype)
        return
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    row_weights = blend_weights(rows, height, overlap, s)
    col_weights = blend_weights(cols, width, overlap, s)
    outputs = _predicted(predict, image, [(r, c) for r in rows for c in cols], batch, on_tile)
    # HR rows [top * s, top * s + len(shared)) of the next row of tiles already hold the
    # (weighted) outputs of the tiles above: float32, over the full width.
    shared = np.zeros((0, width * s, 3), np.float32)
    for i, (top, tile_h) in enumerate(rows):
        # After this row of tiles, HR rows up to where the next one starts are final.
        final = (rows[i + 1][0] if i + 1 < len(rows) else height) * s - top * s
        band = np.empty((final, width * s, 3), dtype)
        below = np.empty((tile_h * s - final, width * s, 3), np.float32)
        # The strip's columns from `left * s` on that a later tile of this row still touches.
        open_cols = np.zeros((tile_h * s, 0, 3), np.float32)
        for j, ((left, tile_w), col_w) in enumerate(zip(cols, col_weights)):
            sr = next(outputs)  # (tile_h * s, tile_w * s, 3)
            strip = np.zeros((tile_h * s, tile_w * s, 3), np.float32)
            strip[:, :open_cols.shape[1]] = open_cols
            strip += sr * col_w[None, :, None]
            # Columns up to where the next tile starts are complete in this row.
            done = ((cols[j + 1][0] if j + 1 < len(cols) else width) - left) * s
            open_cols = strip[:, done:]
            strip = strip[:, :done]
            strip *= row_weights[i][:, None, None]
            strip[:len(shared)] += shared[:, left * s:left * s + done]
            quantize(strip[:final], out=band[:, left * s:left * s + done])
            below[:, left * s:left * s + done] = strip[final:]
        yield band
        shared = below


def _predicted(predict: BatchPredictFn, image: np.ndarray,
               tiles: list[tuple[tuple[int, int], tuple[int, int]]], batch: int,
               on_tile: Callable[[], None] | None) -> Iterator[np.ndarray]:
    """The outputs of `tiles` ((top, h), (left, w)) in order, computed `batch` of one shape at a
    time: each call takes the next tile not yet computed and the following ones of its shape.

    At most `batch - 1` outputs per tile shape wait to be used.
    """
    ready: dict[int, np.ndarray] = {}
    for k, ((_, h), (_, w)) in enumerate(tiles):
        if k not in ready:
            group = [m for m in range(k, len(tiles))
                     if m not in ready and (tiles[m][0][1], tiles[m][1][1]) == (h, w)][:batch]
            lq = [to_model_input(image[top:top + th, left:left + tw])
                  for (top, th), (left, tw) in (tiles[m] for m in group)]
            for m, sr in zip(group, predict(lq)):
                ready[m] = sr
                if on_tile is not None:
                    on_tile()
        yield ready.pop(k)


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

    `tiled_rows` with one tile per call, written into `out`.

    Args:
      predict: the network on one LR image (see `PredictFn`).
      lq: (H, W, 3) float32 LR image in [0, 1].
      scale: the upscaling factor of `predict`.
      out: (H * scale, W * scale, 3) uint8 or uint16 array that receives the result.
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
    row = 0
    for band in tiled_rows(lambda tiles: [predict(x) for x in tiles], lq, scale, tile, overlap,
                           out.dtype, 1, on_tile):
        out[row:row + len(band)] = band
        row += len(band)
    return out
