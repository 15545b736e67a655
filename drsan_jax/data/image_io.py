"""Reading and writing images, and the conversions between stored pixels and the network's.

The one place eval, training and the upscale CLI touch image files. `read_image` returns pixels
as stored (8- or 16-bit, grey, RGB or RGBA) and turns every failure into an `ImageReadError`
that names the file; `write_image` stores 8- or 16-bit images, whole or not at all.

Between files and the network there is one conversion each way: `to_model_input` turns any
stored image into the (H, W, 3) float32 RGB in [0, 1] the network takes, at the image's full
bit depth, and `quantize` turns the network's float output back into integer levels (clipped,
rounded half up), the last step before every benchmark score and every saved image.
`to_rgb_uint8` gives the 8-bit RGB that the training cache and the metrics use.

Decoding goes through imageio (Pillow, and imageio's bundled tifffile for TIFF). Pillow silently
truncates 16-bit colour PNGs to 8 bits, so those are read and written by a small PNG codec here.
`write_image_rows` writes an image that arrives in bands of rows (an upscaled photo of hundreds
of megapixels) without ever holding it whole: PNGs through that codec, TIFFs through tifffile,
which takes rows one by one and writes the same file as for the whole array.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from PIL import Image as PILImage

from drsan_jax.files import atomic_write

# Pillow refuses images over ~179 Mpixels as possible decompression bombs, but a 4000x3000 photo
# upscaled x4 is 192 Mpixels. These are the user's own files: allow up to 2^30 pixels (4 GiB as
# RGBA uint8) so results can be read back, while a truly absurd header is still refused.
PILImage.MAX_IMAGE_PIXELS = 2**30

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

_EXPECTED = (
    "expected a PNG, BMP, JPEG or TIFF image with 8- or 16-bit unsigned samples "
    "and 1 (grey), 3 (RGB) or 4 (RGBA) channels"
)
# Pillow modes that are not grey/RGB/RGBA samples; converting on decode keeps the contract
# that callers only ever see grey, RGB or RGBA ("1" is bilevel, stored as bool).
_PILLOW_CONVERSIONS = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The first bytes of every format `read_image` decodes: enough to tell an image file from
# anything else without decoding it (TIFF: little- or big-endian, classic or BigTIFF).
_SIGNATURES = (_PNG_SIGNATURE, b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00",
               b"MM\x00+")
# PNG colour types (PNG spec, IHDR) -> samples per pixel, for those Pillow truncates at 16 bit.
_PNG_COLOUR_CHANNELS = {2: 3, 4: 2, 6: 4}
# Samples per pixel -> the PNG colour type that `_write_png` writes them as.
_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}
# Rows filtered at a time by `_write_png`: its scratch is a few times this many rows.
_PNG_FILTER_ROWS = 16
# Compressed bytes gathered into one IDAT chunk.
_PNG_CHUNK_BYTES = 1 << 22


class ImageReadError(ValueError):
    """An image file is missing, unreadable, or holds pixels this project cannot use."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Lists the image files directly inside a folder, sorted by name.

    Args:
      folder: the folder to scan (not recursive). Hidden files are skipped: copies made on macOS
        carry `._name.png` metadata files that are not images.

    Returns:
      The paths of the files whose extension (any case) is in `IMAGE_EXTENSIONS`.

    Raises:
      FileNotFoundError: the folder does not exist or is not a folder.
      ValueError: the folder holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
    paths = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not paths:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def check_image_file(path: str | os.PathLike) -> None:
    """Checks, from its first bytes only, that a file is a PNG, BMP, JPEG or TIFF image.

    Cheap enough to run on every input before any work starts; damage further into a file is
    found only when `read_image` decodes it.

    Raises:
      ImageReadError: the file is missing or starts like no such image; the message names it.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise ImageReadError(f"cannot read image {path}: no such file") from None
    except OSError as e:
        raise ImageReadError(f"cannot read image {path}: {e.strerror or e}") from None
    if not head.startswith(_SIGNATURES):
        what = "it is empty" if not head else f"it starts with {head!r}"
        raise ImageReadError(f"{path} is not an image file ({what}); {_EXPECTED}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image with its samples as stored.

    Grey + alpha images come back as RGBA, and palette, bilevel and CMYK images are converted
    to grey or RGB, so the channel count is always 1, 3 or 4.

    Args:
      path: the image file.

    Returns:
      An HxW (grey) or HxWxC array, C in {1, 3, 4}, of dtype uint8 or uint16.

    Raises:
      ImageReadError: the file is missing, cannot be decoded, or holds other sample types
        (for example float or 32-bit TIFFs). The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"cannot read image {path}: no such file")
    check_image_file(path)  # else a decoder's own words describe a file that is no image
    try:
        if _is_16bit_colour_png(path):
            image = _read_png_16bit_colour(path)
        else:
            mode = iio.immeta(path).get("mode")
            kwargs = {"mode": _PILLOW_CONVERSIONS[mode]} if mode in _PILLOW_CONVERSIONS else {}
            image = iio.imread(path, index=0, **kwargs)
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageReadError(f"cannot read image {path}: {_EXPECTED} ({reason})") from None
    if image.ndim == 3 and image.shape[2] == 2:
        grey, alpha = image[..., :1], image[..., 1:]
        image = np.concatenate([grey, grey, grey, alpha], axis=2)
    problem = _layout_problem(image)
    if problem:
        raise ImageReadError(f"cannot use image {path}: {problem}; {_EXPECTED}")
    return image


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Converts an image from `read_image` to the 8-bit RGB the model and metrics use.

    Args:
      image: HxW or HxWxC (C in {1, 3, 4}) uint8 or uint16.

    Returns:
      HxWx3 uint8: grey repeated on three channels, alpha dropped (not composited), 16-bit
      samples scaled to 8 bit with rounding (65535 -> 255).

    Raises:
      ValueError: another dtype or layout.
    """
    image = np.asarray(image)
    problem = _layout_problem(image)
    if problem:
        raise ValueError(f"cannot convert image to RGB: {problem}")
    if image.dtype == np.uint16:
        # 65535 / 255 == 257 exactly, and x / 257 is never a .5 tie, so rint is unambiguous.
        image = np.rint(image / 257.0).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def to_model_input(image: np.ndarray) -> np.ndarray:
    """Brings an image to the network's (H, W, 3) float32 RGB in [0, 1].

    Args:
      image: HxW or HxWxC (C in 1, 3, 4): uint8 or uint16, divided by the dtype's maximum (so
        16-bit images keep their precision), or float already in [0, 1]. Grey is repeated on
        three channels, alpha dropped.

    Returns:
      (H, W, 3) float32.

    Raises:
      ValueError: another dtype or layout.
    """
    image = np.asarray(image)
    problem = _layout_problem(image, floats=True)
    if problem:
        raise ValueError(f"cannot use image as network input: {problem}")
    colour = image[..., None] if image.ndim == 2 else image
    colour = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour[..., :3]
    if np.issubdtype(image.dtype, np.floating):
        return np.ascontiguousarray(colour, dtype=np.float32)
    return colour.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)


def quantize(image: np.ndarray, dtype: np.dtype = np.uint8,
             out: np.ndarray | None = None) -> np.ndarray:
    """Turns float pixels in [0, 1] into integer levels: clipped, then rounded half up.

    This is the last step before scoring in every benchmark table, and before saving.

    Args:
      image: float array, nominally in [0, 1] (a network's output).
      dtype: the integer type; its maximum is the level that 1.0 becomes (255 for uint8).
      out: where to write the levels (any integer array of the image's shape); `dtype` is then
        `out.dtype`. Writing in place costs one float temporary instead of two.

    Returns:
      The integer image (`out` when given).
    """
    dtype = np.dtype(dtype if out is None else out.dtype)
    levels = np.clip(image, 0.0, 1.0)  # the one temporary; the rest is in place
    levels *= np.iinfo(dtype).max
    levels += 0.5
    np.floor(levels, out=levels)
    if out is None:
        return levels.astype(dtype)
    out[...] = levels
    return out


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an image, creating missing parent folders.

    Args:
      path: the destination; its extension picks the format (any of `IMAGE_EXTENSIONS`).
        16-bit images need PNG or TIFF; images with alpha need PNG or TIFF. JPEGs are written at
        quality 95, since the usual default of 75 visibly blurs super-resolved detail.
      image: HxW or HxWxC (C in {1, 3, 4}) uint8 or uint16.

    Raises:
      ValueError: an unknown extension, or an image the format cannot hold.
      OSError: the file cannot be written; an older file at `path` is then left as it was.
    """
    path = Path(path)
    image = np.asarray(image)
    ext = _check_writable(path, image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if ext == ".png" and image.dtype == np.uint16 and image.ndim == 3:
        atomic_write(path, lambda tmp: _write_png(tmp, image.shape, image.dtype, [image]))
    elif ext in (".jpg", ".jpeg"):
        atomic_write(path, lambda tmp: iio.imwrite(tmp, image, quality=95))
    else:
        atomic_write(path, lambda tmp: iio.imwrite(tmp, image))


def write_image_rows(path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype,
                     rows: Iterable[np.ndarray]) -> None:
    """Writes an image that arrives as consecutive bands of rows, as `write_image` would.

    PNG and TIFF files are written band by band, so the image is never whole in memory (a
    24000x16000 RGB result is 1.1 GB as uint8); they decode to exactly the pixels `write_image`
    stores (TIFFs are the same bytes). Other formats gather the bands first.

    Args:
      path: the destination; its extension picks the format (any of `IMAGE_EXTENSIONS`).
      shape: the whole image's shape, HxW or HxWxC (C in {1, 3, 4}).
      dtype: uint8 or uint16.
      rows: arrays of shape (h, *shape[1:]) and `dtype`, top to bottom, whose heights add up
        to shape[0]; consumed while the file is written.

    Raises:
      ValueError: what `write_image` refuses, or bands that do not make up `shape`.
      OSError: the file cannot be written; an older file at `path` is then left as it was.
    """
    path = Path(path)
    shape, dtype = tuple(shape), np.dtype(dtype)
    ext = _check_writable(path, np.empty((0, *shape[1:]), dtype))
    bands = _checked_bands(path, shape, dtype, rows)
    if ext not in (".png", ".tif", ".tiff"):
        whole = np.empty(shape, dtype)
        start = 0
        for band in bands:
            whole[start:start + len(band)] = band
            start += len(band)
        write_image(path, whole)
        return
    if len(shape) == 3 and shape[2] == 1:
        shape, bands = shape[:2], (band[..., 0] for band in bands)
    if ext == ".png":
        atomic_write(path, lambda tmp: _write_png(tmp, shape, dtype, bands))
    else:
        # tifffile takes an iterator of rows and writes the file `iio.imwrite` writes.
        row_iter = (row for band in bands for row in band)
        atomic_write(path, lambda tmp: tifffile.imwrite(tmp, row_iter, shape=shape, dtype=dtype))


def _check_writable(path: Path, image: np.ndarray) -> str:
    """The file extension, or a ValueError if `image`'s kind cannot be stored at `path`."""
    problem = _layout_problem(image)
    if problem:
        raise ValueError(f"cannot write image {path}: {problem}")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"cannot write image {path}: unknown extension {path.suffix!r}; "
            f"expected one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    lossy_or_8bit = ext in (".bmp", ".jpg", ".jpeg")
    if lossy_or_8bit and image.dtype == np.uint16:
        raise ValueError(f"cannot write image {path}: 16-bit images can be stored as PNG or TIFF")
    if lossy_or_8bit and image.ndim == 3 and image.shape[2] == 4:
        # Pillow writes RGBA BMPs but reads them back without alpha; JPEG has no alpha at all.
        raise ValueError(
            f"cannot write image {path}: images with alpha can be stored as PNG or TIFF"
        )
    return ext


def _checked_bands(path: Path, shape: tuple[int, ...], dtype: np.dtype,
                   rows: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The bands of `rows`, checked against the image's shape and dtype as they pass."""
    done = 0
    for band in rows:
        band = np.asarray(band)
        if band.shape[1:] != shape[1:] or band.dtype != dtype or done + len(band) > shape[0]:
            raise ValueError(f"cannot write image {path}: a band of {band.shape} {band.dtype} "
                             f"after {done} rows does not continue a {shape} {dtype} image")
        done += len(band)
        yield band
    if done != shape[0]:
        raise ValueError(f"cannot write image {path}: the bands end after {done} of "
                         f"{shape[0]} rows")


def _layout_problem(image: np.ndarray, floats: bool = False) -> str | None:
    """Says what is wrong with an array's dtype or shape as an image, or None if nothing.

    `floats`: float samples (the network's [0, 1]) are fine too.
    """
    integer = image.dtype in (np.uint8, np.uint16)
    if not (integer or (floats and np.issubdtype(image.dtype, np.floating))):
        expected = "uint8, uint16 or float" if floats else "uint8 or uint16"
        return f"its samples are {image.dtype}, expected {expected}"
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)):
        return None
    return f"its shape is {image.shape}, expected HxW or HxWxC with C in 1, 3, 4"


def _is_16bit_colour_png(path: Path) -> bool:
    """Whether a file is a PNG whose IHDR announces 16-bit RGB, RGBA or grey + alpha."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = head[24], head[25]
    return bit_depth == 16 and colour_type in _PNG_COLOUR_CHANNELS


def _read_png_16bit_colour(path: Path) -> np.ndarray:
    """Decodes a non-interlaced 16-bit colour PNG to HxWxC uint16 (C = 2, 3 or 4)."""
    data = path.read_bytes()
    pos, header, idat = len(_PNG_SIGNATURE), None, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"PNG chunk {kind!r} is corrupt (CRC mismatch)")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:
        raise ValueError("PNG ends before its IEND chunk (truncated file)")
    width, height, _, colour_type, _, _, interlace = header
    if interlace:
        raise ValueError("interlaced 16-bit colour PNGs are not supported")
    channels = _PNG_COLOUR_CHANNELS[colour_type]
    bytes_per_pixel = 2 * channels
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    if raw.size != height * (1 + width * bytes_per_pixel):
        raise ValueError("PNG image data does not match the size in its header")
    rows = raw.reshape(height, 1 + width * bytes_per_pixel)
    filtered = rows[:, 1:].reshape(height, width, bytes_per_pixel)
    pixels = _png_unfilter(rows[:, 0], filtered)
    return pixels.view(">u2").reshape(height, width, channels).astype(np.uint16)


def _png_unfilter(filter_types: np.ndarray, filtered: np.ndarray) -> np.ndarray:
    """Undoes PNG's per-row filters (PNG spec section 9) for HxWxB bytes.

    Every filter predicts a pixel from its left, upper and upper-left neighbours only, so all
    pixels on one anti-diagonal (row + column constant) can be decoded together: H + W - 1
    vectorised steps instead of H * W scalar ones.
    """
    if filter_types.max(initial=0) > 4:
        raise ValueError(f"PNG uses unknown row filter {int(filter_types.max())}")
    height, width, _ = filtered.shape
    # Decoded pixels with a zero row above and a zero column to the left, as the spec assumes.
    out = np.zeros((height + 1, width + 1, filtered.shape[2]), np.int32)
    for diagonal in range(height + width - 1):
        r = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        c = diagonal - r
        left, up, up_left = out[r + 1, c], out[r, c + 1], out[r, c]
        estimate = left + up - up_left
        d_left, d_up, d_up_left = (np.abs(estimate - v) for v in (left, up, up_left))
        paeth = np.where(
            (d_left <= d_up) & (d_left <= d_up_left), left, np.where(d_up <= d_up_left, up, up_left)
        )
        predictions = np.stack([np.zeros_like(left), left, up, (left + up) // 2, paeth])
        chosen = predictions[filter_types[r], np.arange(r.size)]
        out[r + 1, c + 1] = (filtered[r, c] + chosen) & 0xFF
    return out[1:, 1:].astype(np.uint8)


def _write_png(path: Path, shape: tuple[int, ...], dtype: np.dtype,
               bands: Iterable[np.ndarray]) -> None:
    """Encodes an 8- or 16-bit grey, RGB or RGBA image given in bands of rows as a PNG.

    Each row takes the filter with the least sum of absolute (signed) filtered bytes, libpng's
    heuristic, and the rows go through one zlib stream as they come, so only a band and its
    filtered copy are ever in memory.
    """
    height, width = shape[:2]
    channels = 1 if len(shape) == 2 else shape[2]
    depth = 8 * np.dtype(dtype).itemsize
    bpp = channels * depth // 8  # bytes per pixel, the distance of the "left" neighbour

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, depth, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    compressor = zlib.compressobj(6)
    with open(path, "wb") as f:
        f.write(_PNG_SIGNATURE + chunk(b"IHDR", header))
        pending, above = [], np.zeros(width * bpp, np.uint8)
        for band in bands:
            raw = band.astype(f">u{depth // 8}", copy=False).view(np.uint8)
            raw = raw.reshape(len(band), width * bpp)
            for start in range(0, len(raw), _PNG_FILTER_ROWS):
                rows = raw[start:start + _PNG_FILTER_ROWS]
                pending.append(compressor.compress(_png_filter(rows, above, bpp).tobytes()))
                above = rows[-1].copy()  # not a view: the band can go once it is written
                if sum(map(len, pending)) >= _PNG_CHUNK_BYTES:
                    f.write(chunk(b"IDAT", b"".join(pending)))
                    pending = []
        pending.append(compressor.flush())
        f.write(chunk(b"IDAT", b"".join(pending)) + chunk(b"IEND", b""))


def _png_filter(rows: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """PNG's per-row filters (spec section 9) on (h, n) bytes, the row above the first given.

    Returns:
      (h, 1 + n) uint8: each row's filter type, then its filtered bytes; of the five filters
      the one whose bytes, read as signed, have the least sum of magnitudes (ties: the lowest).
    """
    x = rows.astype(np.int16)
    up = np.concatenate([above[None].astype(np.int16), x[:-1]])
    left, up_left = np.zeros_like(x), np.zeros_like(x)
    left[:, bpp:], up_left[:, bpp:] = x[:, :-bpp], up[:, :-bpp]
    p = left + up - up_left
    d_left, d_up, d_up_left = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((d_left <= d_up) & (d_left <= d_up_left), left,
                     np.where(d_up <= d_up_left, up, up_left))
    predictions = (0, left, up, (left + up) >> 1, paeth)
    filtered = np.stack([(x - prediction).astype(np.uint8) for prediction in predictions])
    cost = np.abs(filtered.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)  # (5, h)
    choice = np.argmin(cost, axis=0)
    out = np.empty((len(rows), 1 + rows.shape[1]), np.uint8)
    out[:, 0] = choice
    out[:, 1:] = filtered[choice, np.arange(len(rows))]
    return out
