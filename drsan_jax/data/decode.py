"""Decoding an image file to its pixels as a viewer shows them, within a size limit.

What `image_io.read_image` returns, decoded here:

- The size a file's header claims is checked against `max_image_pixels()` before any pixel
  is decoded: a few kilobytes of PNG can claim 100000 x 100000 pixels, and decoding that
  would take tens of gigabytes. The limit is 2^30 pixels (a 32768 x 32768 picture, 4 GiB as
  8-bit RGBA; an upscaled 24000 x 16000 photo is 0.38 of it); the environment variable
  `DRSAN_JAX_MAX_IMAGE_PIXELS` sets another for genuine gigapixel inputs.
- EXIF orientation (the tag a camera writes instead of turning the pixels) is applied, so
  the pixels are upright as every viewer shows them; the tag is not passed on, so a result
  written from them shows the same way.
- Transparency is kept as alpha: a palette PNG's tRNS entries, a grey or RGB PNG's
  transparent colour, grey + alpha (as RGBA).
- Palette, bilevel, CMYK, YCbCr, LAB and HSV pictures become grey or RGB.
- An animated PNG or a TIFF of several pages is refused, naming its frame count: upscaling
  the first frame alone would drop the rest without a word.

Not kept: ICC colour profiles, EXIF and other text metadata (the pixels are upscaled in the
colour space they are stored in; a result is written without a profile).

16-bit colour PNGs are decoded by the project's own codec (`data.png`, Pillow cuts them to 8
bits), TIFFs by tifffile (through imageio), everything else by Pillow.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import ImageOps

from drsan_jax.data import png
from drsan_jax.limits import env_limit

MAX_PIXELS_ENV = "DRSAN_JAX_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 2**30
# The limit is ours (`max_image_pixels`), checked before decoding; Pillow's own (which warns
# at 89 Mpixels, less than a 4000x3000 photo upscaled x4) would only get in its way.
PILImage.MAX_IMAGE_PIXELS = None

_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# Pillow modes that are not grey / RGB samples -> the mode they are decoded as ("1" is bilevel).
_CONVERSIONS = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


class DecodeError(ValueError):
    """A file that cannot be decoded as one picture within the limits; the message says why."""


def max_image_pixels() -> int:
    """The most pixels a picture may have: `DRSAN_JAX_MAX_IMAGE_PIXELS`, else 2^30.

    Raises:
      ValueError: the variable is set to something other than a positive integer.
    """
    return env_limit(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, "pixels")


def check_size(height: int, width: int) -> None:
    """Raises DecodeError when a header's size is empty or over `max_image_pixels()`."""
    if height < 1 or width < 1:
        raise DecodeError(f"its header claims {width}x{height} pixels")
    limit = max_image_pixels()
    if height * width > limit:
        raise DecodeError(
            f"its header claims {width}x{height} = {height * width:,} pixels, over the limit of "
            f"{limit:,} (set {MAX_PIXELS_ENV} to a larger number of pixels to read it)")


def decode(path: Path) -> np.ndarray:
    """The pixels of an image file, upright, as stored (uint8 or uint16; 1 to 4 channels).

    Raises:
      DecodeError: over the size limit, or an animation.
      Exception: whatever the decoder raises for a damaged file (the caller names the file).
    """
    if png.is_16bit_colour(path):
        width, height = png.header_size(path)
        check_size(height, width)
        return png.read_16bit_colour(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head in _TIFF_SIGNATURES:
        return _decode_tiff(path)
    with PILImage.open(path) as image:
        width, height = image.size
        check_size(height, width)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise DecodeError(f"it is an animation of {frames} frames; upscale its frames as "
                              f"pictures of their own (e.g. ffmpeg -i in.png frame%03d.png)")
        upright = ImageOps.exif_transpose(image)
        return np.asarray(_viewable(upright))


def _viewable(image: PILImage.Image) -> PILImage.Image:
    """Converts to grey, grey + alpha, RGB or RGBA, keeping any transparency as alpha."""
    mode, transparent = image.mode, "transparency" in image.info
    if mode in ("P", "PA"):
        return image.convert("RGBA" if transparent or mode == "PA" else "RGB")
    if transparent and mode in ("L", "RGB"):
        return image.convert("LA" if mode == "L" else "RGBA")
    if mode in _CONVERSIONS:
        return image.convert(_CONVERSIONS[mode])
    return image


def _decode_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tiff:
        pages = len(tiff.pages)
        if pages > 1:
            raise DecodeError(f"it is a TIFF of {pages} pages; save the page to upscale as a "
                              f"file of its own")
        page = tiff.pages[0]
        check_size(page.imagelength, page.imagewidth)
    return iio.imread(path, index=0)


__all__ = ["DEFAULT_MAX_PIXELS", "DecodeError", "MAX_PIXELS_ENV", "check_size", "decode",
           "max_image_pixels"]
