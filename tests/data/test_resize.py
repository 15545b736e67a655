"""Tests for drsan_jax.data.resize: golden comparison with the released MATLAB-bicubic LR."""

import functools

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import shared_data_dir as _data_dir

from drsan_jax.data import resize

DATASETS = ("Set5", "Set14", "B100")


@functools.cache
def _hr_images() -> dict[tuple[str, str], np.ndarray]:
    """All benchmark HR images, read once for the whole module."""
    root = _data_dir() / "benchmark" / "HR"
    return {(d, p.name): iio.imread(p) for d in DATASETS for p in sorted((root / d).glob("*.png"))}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real RGB photograph with odd height and width (Set14 comic is 361 x 250)."""
    return iio.imread(_data_dir() / "benchmark" / "HR" / "Set14" / "comic.png")[:61, :47]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_downscale_reproduces_the_benchmark_lr_images(scale):
    root = _data_dir() / "benchmark" / f"x{scale}"
    mismatched = total = 0
    for (dataset, name), hr in _hr_images().items():
        official = iio.imread(root / dataset / name)
        lq = resize.bicubic_downscale(hr, scale)
        assert lq.shape == official.shape and lq.dtype == np.uint8, (dataset, name)
        np.testing.assert_array_equal(lq, official, err_msg=f"{dataset}/{name} x{scale}")

        # imresize on the uint8 image itself differs only where its exact value is k + 0.5:
        # the released files were made in [0, 1] doubles, where those ties fall either way.
        direct_float = resize.imresize(resize.mod_crop(hr, scale).astype(np.float64), 1 / scale)
        direct = resize.imresize(resize.mod_crop(hr, scale), 1 / scale)
        wrong = direct != official
        assert np.all(direct_float[wrong] % 1 == 0.5), (dataset, name)
        assert np.all(np.abs(direct[wrong].astype(int) - official[wrong]) == 1), (dataset, name)
        mismatched += int(wrong.sum())
        total += official.size
    # Measured: x2 113 of 14,230,531 values (0.00079%) over Set5 + Set14 + B100; x3, x4 none.
    assert mismatched <= (1e-5 * total if scale == 2 else 0)


def test_benchmark_sizes_follow_mod_crop():
    hr = _hr_images()[("Set14", "baboon.png")]  # 480 x 500: 500 is not a multiple of 3
    assert resize.mod_crop(hr, 3).shape == (480, 498, 3)
    assert resize.bicubic_downscale(hr, 3).shape == (160, 166, 3)


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 2, 3, 4])
def test_constant_image_stays_constant(scale):
    assert np.all(resize.imresize(np.full((13, 9, 3), 77, np.uint8), scale) == 77)
    np.testing.assert_allclose(resize.imresize(np.full((13, 9), 0.25), scale), 0.25, atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 3, 1 / 2, 2, 3])
def test_linear_ramp_is_reproduced_away_from_the_borders(scale):
    # Keys' cubic and its widened antialiasing version reproduce linear functions, so away from
    # the mirrored borders output pixel x (1-based) equals the ramp at u = x/s + (1 - 1/s)/2.
    ramp = np.tile(np.arange(1, 61, dtype=np.float64), (5, 1))  # value i at column i (1-based)
    out = resize.imresize(ramp, scale)[0]
    x = np.arange(1, out.size + 1)
    u = x / scale + 0.5 * (1 - 1 / scale)
    inner = slice(int(4 * scale + 4), -int(4 * scale + 4))
    np.testing.assert_allclose(out[inner], u[inner], atol=1e-10)


def test_border_weights_are_mirrored_like_matlab():
    # 4 -> 2 pixels: output 1 sits at u = 1.5 and reads 1-based pixels -3..6 with weights
    # 0.5 * cubic(0.5 * d), d = 4.5..-4.5: [0, -3, -9, 29, 111, 111, 29, -9, -3, 0] / 256.
    # Mirroring maps them to pixels [4, 3, 2, 1, 1, 2, 3, 4, 4, 3], so pixel 1 gets
    # (29 + 111) / 256, pixel 2 (-9 + 111) / 256, pixel 3 (-3 + 29 + 0) / 256, pixel 4 -12 / 256.
    # Resizing the identity only along one axis (the other keeps scale 1, where the kernel is
    # exactly 1 at distance 0 and 0 at +-1, +-2) gives that axis's weight matrix.
    rows = resize.imresize(np.eye(4), output_shape=(2, 4))  # (2, 4)
    cols = resize.imresize(np.eye(4), output_shape=(4, 2)).T
    np.testing.assert_array_equal(rows, cols)
    np.testing.assert_allclose(rows[0], np.array([140, 102, 26, -12]) / 256, atol=1e-15)
    np.testing.assert_allclose(rows[1], rows[0][::-1], atol=1e-15)


@pytest.mark.parametrize(
    "in_shape, kwargs, out_shape",
    [
        ((7, 5), {"scale": 2}, (14, 10)),
        ((7, 5, 3), {"scale": 1 / 2}, (4, 3, 3)),  # ceil(3.5), ceil(2.5)
        ((9, 6), {"scale": 1 / 3}, (3, 2)),  # 9 * (1/3) must not become 4 by rounding
        ((5, 7, 1), {"scale": 3}, (15, 21, 1)),
        ((11, 13, 3), {"scale": 0.3}, (4, 4, 3)),
        ((50, 25), {"scale": 1.1}, (55, 28)),  # 1.1 * 50 is 55.00000000000001 in float
        ((1, 1), {"scale": 4}, (4, 4)),
        ((7, 5, 3), {"output_shape": (3, 12)}, (3, 12, 3)),
    ],
)
def test_output_shapes(in_shape, kwargs, out_shape):
    image = np.arange(np.prod(in_shape), dtype=np.float64).reshape(in_shape)
    assert resize.imresize(image, **kwargs).shape == out_shape


def test_output_shape_equals_scale_when_they_agree(photo):
    by_shape = resize.imresize(photo, output_shape=(122, 94))
    np.testing.assert_array_equal(by_shape, resize.imresize(photo, 2))
    assert resize.bicubic_upscale(photo, 2).shape == (122, 94, 3)


def test_float_output_is_not_clipped_and_uint8_is_rounded_once(photo):
    spiky = np.zeros((9, 9))
    spiky[4, 4] = 255.0
    up = resize.imresize(spiky, 3)
    assert up.min() < 0 and up.max() <= 255  # cubic undershoots; floats keep it
    as_uint8 = resize.imresize(spiky.astype(np.uint8), 3)
    np.testing.assert_array_equal(as_uint8, np.clip(np.floor(up + 0.5), 0, 255))


def test_invalid_arguments():
    image = np.zeros((8, 8))
    with pytest.raises(ValueError, match="exactly one"):
        resize.imresize(image)
    with pytest.raises(ValueError, match="exactly one"):
        resize.imresize(image, scale=2, output_shape=(4, 4))
    with pytest.raises(ValueError, match="positive"):
        resize.imresize(image, scale=0)
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 3\)"):
        resize.imresize(np.zeros((2, 8, 8, 3)), scale=2)
    with pytest.raises(ValueError, match="smaller than the scale"):
        resize.mod_crop(np.zeros((2, 8)), 3)
