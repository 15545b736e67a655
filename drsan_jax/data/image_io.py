"""Reading and writing images, and the conversions between stored pixels and the network's.

The one place eval, training and the upscale CLI touch image files. `read_image` returns pixels
as stored (8- or 16-bit, grey, RGB or RGBA) and turns every failure into an `ImageReadError`
that names the file; `write_image` stores 8- or 16-bit images, whole or not at all.

Between files and the network there is one conversion each way: `to_model_input` turns any
stored image into the (H, W, 3) float32 RGB in [0, 1] the network takes, at the image's full
bit depth, and `quantize` turns the network's float output back into integer levels (clipped,
rounded half up), the last step before every benchmark score and every saved image.
`to_rgb_uint8` gives the 8-bit RGB that the training cache and the metrics use.

Decoding (`data.decode`) checks the size a header claims against a limit before any pixel is
decoded, applies EXIF orientation, keeps transparency as alpha and refuses animations. Pillow
silently truncates 16-bit colour PNGs to 8 bits, so those are read and written by the
project's own PNG codec (`data.png`).
`write_image_rows` writes an image that arrives in bands of rows (an upscaled photo of hundreds
of megapixels) without ever holding it whole: PNGs through that codec, TIFFs through tifffile,
which takes rows one by one and writes the same file as for the whole array.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from drsan_jax.data import decode, png
from drsan_jax.files import atomic_write

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

_EXPECTED = (
    "expected a PNG, BMP, JPEG or TIFF image with 8- or 16-bit unsigned samples "
    "and 1 (grey), 3 (RGB) or 4 (RGBA) channels"
)
# The first bytes of every format `read_image` decodes: enough to tell an image file from
# anything else without decoding it (TIFF: little- or big-endian, classic or BigTIFF).
_SIGNATURES = (png.SIGNATURE, b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00",
               b"MM\x00+")


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
    to grey or RGB (RGBA where they have transparency), so the channel count is always 1, 3
    or 4; EXIF orientation is applied (`data.decode`).

    Args:
      path: the image file.

    Returns:
      An HxW (grey) or HxWxC array, C in {1, 3, 4}, of dtype uint8 or uint16.

    Raises:
      ImageReadError: the file is missing, cannot be decoded, is larger than
        `decode.max_image_pixels()` or animated, or holds other sample types (for example
        float or 32-bit TIFFs). The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"cannot read image {path}: no such file")
    check_image_file(path)  # else a decoder's own words describe a file that is no image
    try:
        image = decode.decode(path)
    except decode.DecodeError as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from None
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
        atomic_write(path, lambda tmp: png.write(tmp, image.shape, image.dtype, [image]))
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
        atomic_write(path, lambda tmp: png.write(tmp, shape, dtype, bands))
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
