"""Tests for drsan_jax.data.decode: size limits before decoding, pictures as viewers show them."""

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from drsan_jax.data import ImageReadError, decode, read_image, write_image


def _chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body)))


def _png(path, width, height, depth, colour_type, data):
    """A PNG whose IHDR says what we like and whose IDAT inflates to `data`."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + _chunk(b"IDAT", zlib.compress(data, 9)) + _chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("depth", [8, 16])
def test_a_header_over_the_limit_is_refused_before_decoding(depth, tmp_path):
    # 100000 x 100000 RGB: 60 GB at 16 bits; the file is a few kilobytes.
    path = _png(tmp_path / "bomb.png", 100000, 100000, depth, 2, bytes(1 << 22))
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as error:
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(error.value) == (
        f"cannot read image {path}: its header claims 100000x100000 = 10,000,000,000 pixels, "
        f"over the limit of 1,073,741,824 (set DRSAN_JAX_MAX_IMAGE_PIXELS to a larger number "
        f"of pixels to read it)")
    assert peak < 32 << 20


def test_image_data_larger_than_its_header_is_not_inflated(tmp_path):
    # A 64x64 16-bit RGB header (49 KB of rows) over data that inflates to 256 MB.
    path = _png(tmp_path / "lying.png", 64, 64, 16, 2, bytes(256 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match="does not match the size in its header"):
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # the compressed file (250 KB) and the rows the header allows


def test_the_limit_can_be_set(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    write_image(path, np.zeros((16, 20, 3), np.uint16))
    monkeypatch.setenv(decode.MAX_PIXELS_ENV, "319")
    with pytest.raises(ImageReadError, match="16 = 320 pixels, over the limit of 319"):
        read_image(path)
    monkeypatch.setenv(decode.MAX_PIXELS_ENV, "320")
    assert read_image(path).shape == (16, 20, 3)
    monkeypatch.setenv(decode.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="DRSAN_JAX_MAX_IMAGE_PIXELS='lots': expected a positive"):
        decode.max_image_pixels()


def _asymmetric(height=6, width=10):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(suffix, tmp_path):
    # Smooth ramps (JPEG keeps them), different along each axis.
    y, x = np.mgrid[:16, :24]
    pixels = np.stack([x * 10, y * 15, np.full_like(x, 128)], axis=2).astype(np.uint8)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / f"camera{suffix}"
    PILImage.fromarray(pixels).save(path, exif=exif, **({"quality": 100} if suffix == ".jpg"
                                                       else {}))
    image = read_image(path)
    upright = np.rot90(pixels, k=-1)
    assert image.shape == upright.shape == (24, 16, 3)
    if suffix == ".png":
        np.testing.assert_array_equal(image, upright)
    else:  # lossy, but the turn is unmistakable
        assert np.abs(image.astype(int) - upright).mean() < 8
        assert np.abs(image.astype(int) - pixels.reshape(upright.shape)).mean() > 30


def test_transparency_of_palette_grey_and_rgb_pngs_becomes_alpha(tmp_path):
    palette = PILImage.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    palette.save(tmp_path / "palette.png", transparency=1)
    image = read_image(tmp_path / "palette.png")
    assert image.shape == (2, 4, 4)
    np.testing.assert_array_equal(image[0, :, 3], [255, 0, 255, 0])
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0, 255])
    PILImage.fromarray(np.array([[10, 20]], np.uint8)).save(tmp_path / "grey.png",
                                                            transparency=20)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png")[0, :, 3], [255, 0])
    PILImage.fromarray(np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)).save(
        tmp_path / "rgb.png", transparency=(4, 5, 6))
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png")[0, :, 3], [255, 0])
    # Without transparency a palette picture is plain RGB.
    palette.save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png").shape == (2, 4, 3)


def test_animations_and_multi_page_tiffs_are_refused_not_cut(tmp_path):
    frames = [PILImage.fromarray(_asymmetric()), PILImage.fromarray(_asymmetric()[::-1])]
    frames[0].save(tmp_path / "moving.png", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match=r"moving.png: it is an animation of 2 frames; "
                                             r"upscale its frames"):
        read_image(tmp_path / "moving.png")
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tiff:
        for _ in range(3):
            tiff.write(_asymmetric())
    with pytest.raises(ImageReadError, match=r"pages.tif: it is a TIFF of 3 pages"):
        read_image(tmp_path / "pages.tif")
    # One frame is a picture.
    frames[0].save(tmp_path / "still.png")
    np.testing.assert_array_equal(read_image(tmp_path / "still.png"), _asymmetric())
