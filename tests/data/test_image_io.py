"""Tests for drsan_jax.data.image_io: real images written and read back, and converted."""

import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import shared_data_dir as _data_dir
from PIL import Image

from drsan_jax.data import image_io, png
from drsan_jax.data.image_io import ImageReadError, quantize, to_model_input


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A real 8-bit RGB photograph (cropped to keep the tests fast)."""
    return iio.imread(_data_dir() / "benchmark" / "HR" / "Set5" / "butterfly.png")[:96, :80]


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    """The one single-channel image of Set14."""
    return iio.imread(_data_dir() / "benchmark" / "HR" / "Set14" / "bridge.png")[:64, :72]


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".PNG"])
def test_lossless_formats_roundtrip_rgb_and_grey(tmp_path, rgb, grey, ext):
    for name, image in (("rgb", rgb), ("grey", grey)):
        path = tmp_path / f"{name}{ext}"
        image_io.write_image(path, image)
        back = image_io.read_image(path)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, image)


def test_single_channel_axis_is_written_as_grey(tmp_path, grey):
    image_io.write_image(tmp_path / "g.png", grey[..., None])
    np.testing.assert_array_equal(image_io.read_image(tmp_path / "g.png"), grey)


def test_jpeg_roundtrip_is_close(tmp_path, rgb):
    path = tmp_path / "sub" / "dir" / "photo.jpg"  # parent folders are created
    image_io.write_image(path, rgb)
    back = image_io.read_image(path)
    assert back.shape == rgb.shape and back.dtype == np.uint8
    # Quality 95: a few levels of error on average, far less than the default quality 75.
    assert np.abs(back.astype(float) - rgb).mean() < 3.0


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_roundtrip_keeps_every_bit(tmp_path, rgb, grey, ext):
    rng = np.random.default_rng(0)
    for name, image8 in (("rgb", rgb), ("grey", grey)):
        # Real content in the high byte, noise in the low byte: a truncation to 8 bits shows.
        image = image8.astype(np.uint16) * 256 + rng.integers(0, 256, image8.shape, dtype=np.uint16)
        path = tmp_path / f"{name}16{ext}"
        image_io.write_image(path, image)
        back = image_io.read_image(path)
        assert back.dtype == np.uint16
        np.testing.assert_array_equal(back, image)


def test_16bit_rgba_png_roundtrip(tmp_path, rgb):
    image = np.concatenate([rgb, rgb[..., :1]], axis=2).astype(np.uint16) * 257 + 3
    image_io.write_image(tmp_path / "rgba16.png", image)
    np.testing.assert_array_equal(image_io.read_image(tmp_path / "rgba16.png"), image)


def test_rgba_png_roundtrip(tmp_path, rgb):
    image = np.concatenate([rgb, 255 - rgb[..., 1:2]], axis=2)
    image_io.write_image(tmp_path / "rgba.png", image)
    back = image_io.read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(image_io.to_rgb_uint8(back), rgb)


def test_palette_and_grey_alpha_pngs_come_back_as_rgb_and_rgba(tmp_path, rgb, grey):
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    palette = image_io.read_image(tmp_path / "palette.png")
    assert palette.shape == rgb.shape and palette.dtype == np.uint8
    Image.fromarray(np.stack([grey, 255 - grey], axis=2), "LA").save(tmp_path / "la.png")
    la = image_io.read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(la, np.stack([grey, grey, grey, 255 - grey], axis=2))


def test_png_unfilter_matches_pillow_on_a_real_adaptively_filtered_png():
    # The 16-bit colour decoder's unfiltering is format independent; an 8-bit PNG from the
    # shared data uses the Sub, Up, Average and Paeth filters, so it checks all of them.
    path = _data_dir() / "benchmark" / "HR" / "Set14" / "comic.png"
    data, pos, idat = path.read_bytes(), 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    expected = iio.imread(path)
    height, width, channels = expected.shape
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, -1)
    assert set(np.unique(rows[:, 0])) >= {1, 2, 3, 4}
    decoded = png._unfilter(rows[:, 0], rows[:, 1:].reshape(height, width, channels))
    np.testing.assert_array_equal(decoded, expected)


def test_to_rgb_uint8_conversions(rgb, grey):
    np.testing.assert_array_equal(image_io.to_rgb_uint8(grey), np.stack([grey] * 3, axis=2))
    np.testing.assert_array_equal(
        image_io.to_rgb_uint8(grey[..., None]), np.stack([grey] * 3, axis=2)
    )
    np.testing.assert_array_equal(image_io.to_rgb_uint8(rgb), rgb)
    # 16 bit -> 8 bit is round(x * 255 / 65535) = round(x / 257).
    levels = np.array([[0, 128, 129, 257, 385, 386, 65535]], np.uint16)
    np.testing.assert_array_equal(image_io.to_rgb_uint8(levels)[..., 0], [[0, 0, 1, 1, 1, 2, 255]])
    with pytest.raises(ValueError, match="float32"):
        image_io.to_rgb_uint8(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 4, 2\)"):
        image_io.to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))


def test_to_model_input_keeps_the_bit_depth(rgb):
    expected = rgb.astype(np.float32) / np.float32(255)
    for image in (rgb, np.dstack([rgb, rgb[..., :1]]), rgb.astype(np.uint16) * 257, expected):
        got = to_model_input(image)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)
    grey = rgb[..., 1]
    for image in (grey, grey[..., None], grey / 255.0):
        np.testing.assert_allclose(to_model_input(image), np.stack([grey / 255] * 3, axis=2),
                                   rtol=1e-7)
    # 16-bit levels between two 8-bit ones are kept, not rounded to 8 bits.
    np.testing.assert_array_equal(to_model_input(np.array([[1, 128]], np.uint16))[0, :, 0],
                                  np.float32([1, 128]) / np.float32(65535))
    with pytest.raises(ValueError, match=r"\(4, 4, 2\)"):
        to_model_input(np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="int32"):
        to_model_input(np.zeros((4, 4, 3), np.int32))


def test_quantize_clips_and_rounds_half_up(rgb):
    sr = np.array([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 127.5 / 255, 254.49 / 255, 1.0, 1.3])
    np.testing.assert_array_equal(quantize(sr), [0, 0, 0, 1, 128, 254, 255, 255])
    assert quantize(sr).dtype == np.uint8
    deep = quantize(sr, np.uint16)
    assert deep.dtype == np.uint16 and list(deep[[0, 6, 7]]) == [0, 65535, 65535]
    out = np.zeros((2, 8), np.uint16)
    row = out[1]  # in place, into part of a larger array
    assert quantize(sr, out=row) is row
    np.testing.assert_array_equal(out, [np.zeros(8), deep])
    # The network's input, quantized, is the image again, at either bit depth.
    np.testing.assert_array_equal(quantize(to_model_input(rgb)), rgb)
    rgb16 = rgb.astype(np.uint16) * 257 + 100
    np.testing.assert_array_equal(quantize(to_model_input(rgb16), np.uint16), rgb16)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, rgb, monkeypatch):
    path = tmp_path / "a.png"
    image_io.write_image(path, rgb)
    before = path.read_bytes()

    def fail_halfway(target, image, **kwargs):
        Path(target).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(image_io.iio, "imwrite", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        image_io.write_image(path, rgb[::-1])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]

def test_truncated_and_corrupt_files_raise_image_read_error(tmp_path, rgb):
    good = tmp_path / "good.png"
    image_io.write_image(good, rgb)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all" * 20)
    empty = tmp_path / "empty.bmp"
    empty.write_bytes(b"")
    image_io.write_image(tmp_path / "deep16.png", rgb.astype(np.uint16) * 257)
    truncated16 = tmp_path / "truncated16.png"
    truncated16.write_bytes((tmp_path / "deep16.png").read_bytes()[:-40])
    for path in (truncated, garbage, empty, truncated16):
        with pytest.raises(ImageReadError, match=path.name) as info:
            image_io.read_image(path)
        assert "expected a PNG, BMP, JPEG or TIFF" in str(info.value)
        # No decoder's traceback chained to the message.
        assert info.value.__cause__ is None
        assert info.value.__context__ is None or info.value.__suppress_context__


def test_files_that_are_no_images_are_told_by_their_first_bytes(tmp_path, rgb):
    for suffix in (".png", ".jpg", ".bmp", ".tif"):
        image_io.write_image(tmp_path / f"good{suffix}", rgb)
        image_io.check_image_file(tmp_path / f"good{suffix}")
    (tmp_path / "notes.png").write_text("hello")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"notes\.png is not an image file \(it starts with "
                                             r"b'hello'\); expected a PNG"):
        image_io.check_image_file(tmp_path / "notes.png")
    with pytest.raises(ImageReadError, match=r"empty\.jpg is not an image file \(it is empty\)"):
        image_io.check_image_file(tmp_path / "empty.jpg")
    with pytest.raises(ImageReadError, match="nowhere.png: no such file"):
        image_io.check_image_file(tmp_path / "nowhere.png")


def test_missing_file_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match=r"nowhere\.png.*no such file"):
        image_io.read_image(tmp_path / "nowhere.png")
    assert issubclass(ImageReadError, ValueError)


def test_float_image_is_rejected_naming_the_file(tmp_path):
    Image.fromarray(np.full((5, 6), 0.5, np.float32), "F").save(tmp_path / "float.tif")
    with pytest.raises(ImageReadError, match=r"float\.tif.*float32"):
        image_io.read_image(tmp_path / "float.tif")


def test_write_image_rejects_what_the_format_cannot_hold(tmp_path, rgb):
    with pytest.raises(ValueError, match="PNG or TIFF"):
        image_io.write_image(tmp_path / "a.jpg", rgb.astype(np.uint16))
    with pytest.raises(ValueError, match="alpha"):
        image_io.write_image(tmp_path / "a.bmp", np.concatenate([rgb, rgb[..., :1]], axis=2))
    with pytest.raises(ValueError, match=r"'\.gif'"):
        image_io.write_image(tmp_path / "a.gif", rgb)
    with pytest.raises(ValueError, match="float64"):
        image_io.write_image(tmp_path / "a.png", rgb / 255.0)


def test_list_images(tmp_path, rgb):
    for name in ("b.png", "a.JPG", "c.tiff", "d.bmp"):
        image_io.write_image(tmp_path / name, rgb)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._b.png").write_bytes(b"macOS metadata")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in image_io.list_images(tmp_path)] == ["a.JPG", "b.png", "c.tiff", "d.bmp"]
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        image_io.list_images(tmp_path / "missing_folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no images"):
        image_io.list_images(tmp_path / "empty")


def bands_of(image, heights):
    """The image cut into bands of rows of the given heights (the last band takes the rest)."""
    start = 0
    for h in heights:
        yield image[start:start + h]
        start += h
    if start < len(image):
        yield image[start:]


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp", ".jpg"])
def test_rows_are_written_as_the_whole_image_is(tmp_path, rgb, grey, ext):
    rng = np.random.default_rng(0)
    deep = rgb.astype(np.uint16) * 256 + rng.integers(0, 256, rgb.shape, dtype=np.uint16)
    kinds = {"rgb": rgb, "grey": grey, "grey1": grey[..., None]}
    if ext in (".png", ".tif"):
        kinds |= {"rgba": np.dstack([rgb, 255 - rgb[..., :1]]), "deep": deep,
                  "deep_grey": deep[..., 0], "deep_rgba": np.dstack([deep, deep[..., :1]])}
    for name, image in kinds.items():
        whole, streamed = tmp_path / f"{name}_whole{ext}", tmp_path / f"{name}_rows{ext}"
        image_io.write_image(whole, image)
        image_io.write_image_rows(streamed, image.shape, image.dtype,
                                  bands_of(image, [1, 30, 0, 7, 64]))
        got = image_io.read_image(streamed)
        np.testing.assert_array_equal(got, image_io.read_image(whole), err_msg=name)
        if ext != ".jpg":
            np.testing.assert_array_equal(got.reshape(image.shape), image, err_msg=name)
        if ext in (".tif", ".bmp", ".jpg"):  # TIFF streams through tifffile: the same file
            assert streamed.read_bytes() == whole.read_bytes(), name
        if ext == ".png" and image.dtype == np.uint8:  # Pillow decodes it alike
            np.testing.assert_array_equal(np.asarray(Image.open(streamed)).reshape(image.shape),
                                          image)


def test_streamed_png_filters_real_rows_adaptively(tmp_path):
    image = iio.imread(_data_dir() / "benchmark" / "HR" / "Set14" / "comic.png")
    path = tmp_path / "comic.png"
    image_io.write_image_rows(path, image.shape, image.dtype, bands_of(image, [100, 100]))
    data, pos, idat = path.read_bytes(), 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(len(image), -1)
    # A photograph takes more than one filter, and the file is no larger than Pillow's.
    assert len(np.unique(rows[:, 0])) >= 3
    image_io.write_image(tmp_path / "pillow.png", image)
    assert path.stat().st_size < 1.05 * (tmp_path / "pillow.png").stat().st_size
    np.testing.assert_array_equal(image_io.read_image(path), image)


def test_rows_that_do_not_make_the_image_leave_no_file(tmp_path, rgb):
    path = tmp_path / "short.png"
    with pytest.raises(ValueError, match="the bands end after 40 of 96 rows"):
        image_io.write_image_rows(path, rgb.shape, rgb.dtype, [rgb[:40]])
    with pytest.raises(ValueError, match="does not continue"):
        image_io.write_image_rows(path, rgb.shape, rgb.dtype, [rgb[:40], rgb[:40, :10]])
    with pytest.raises(ValueError, match="16-bit images can be stored as PNG or TIFF"):
        image_io.write_image_rows(tmp_path / "deep.jpg", rgb.shape, np.uint16, [])
    assert list(tmp_path.iterdir()) == []
