"""Tests for drsan_jax.metrics: cases computed by hand.

The bicubic baseline table, through the whole path (files, resize, protocols), is checked in
tests/commands/test_eval_cli.py.
"""

import math

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import shared_data_dir as _data_dir

from drsan_jax import metrics


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    """A real single-channel photograph (Set14 bridge), cropped to an odd size."""
    return iio.imread(_data_dir() / "benchmark" / "HR" / "Set14" / "bridge.png")[:67, :53]


def test_rgb_to_y_known_colours():
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]])
    np.testing.assert_allclose(
        metrics.rgb_to_y(colours.astype(np.uint8), round_to_uint8=False),
        [[16.0, 235.0, 81.481, 144.553, 40.966]],
        atol=1e-12,
    )
    np.testing.assert_array_equal(
        metrics.rgb_to_y(colours.astype(np.uint8), round_to_uint8=True), [[16, 235, 81, 145, 41]]
    )
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        metrics.rgb_to_y(np.zeros((4, 4), np.uint8), round_to_uint8=False)


def test_identical_images_give_infinite_psnr_and_ssim_one(grey):
    assert metrics.psnr(grey, grey) == math.inf
    assert metrics.ssim(grey, grey) == 1.0
    assert metrics.evaluate_pair(grey, grey, 3, "matlab") == (math.inf, 1.0)


def test_psnr_of_known_noise(grey):
    noise = np.random.default_rng(0).normal(0, 3, grey.shape)
    noisy = grey + noise
    assert metrics.psnr(grey, noisy) == pytest.approx(
        10 * math.log10(255**2 / np.mean(noise**2)), abs=1e-10
    )
    # A difference of one level everywhere: 20 log10(255).
    assert metrics.psnr(grey, grey + 1.0) == pytest.approx(48.130803608679, abs=1e-9)
    assert metrics.psnr(grey, grey + 2.0, data_range=1.0) == pytest.approx(-20 * math.log10(2))


def test_ssim_of_a_constant_offset_on_a_ramp():
    # With b = a + c the contrast-structure term is exactly 1 and the map is the luminance
    # term (2 mu (mu + c) + C1) / (mu^2 + (mu + c)^2 + C1). On a linear ramp the normalised
    # symmetric window's local mean mu is the ramp's value at the window centre.
    rows, cols, c = 31, 60, 10.0
    ramp = np.tile(20 + 0.5 * np.arange(cols, dtype=np.float64), (rows, 1))
    mu = np.tile(20 + 0.5 * (np.arange(cols - 10) + 5), (rows - 10, 1))
    c1 = (0.01 * 255) ** 2
    expected = np.mean((2 * mu * (mu + c) + c1) / (mu**2 + (mu + c) ** 2 + c1))
    assert metrics.ssim(ramp, ramp + c) == pytest.approx(expected, abs=1e-12)
    # Constant images: one value, (2 * 100 * 120 + C1) / (100^2 + 120^2 + C1).
    flat = np.full((11, 11), 100.0)
    expected = (24000 + c1) / (24400 + c1)
    assert metrics.ssim(flat, flat + 20) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_a_direct_2d_window_on_odd_sizes():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 255, (23, 17))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    offsets = np.arange(-5, 6)
    window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()  # MATLAB's fspecial('gaussian', 11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mu_a, mu_b = np.sum(window * pa), np.sum(window * pb)
            var_a = np.sum(window * (pa - mu_a) ** 2)
            var_b = np.sum(window * (pb - mu_b) ** 2)
            cov = np.sum(window * (pa - mu_a) * (pb - mu_b))
            values.append(
                ((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            )
    assert metrics.ssim(a, b) == pytest.approx(np.mean(values), abs=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_border_shave_is_exactly_scale_pixels(grey, scale):
    hr = grey.copy()
    sr = grey.copy()
    sr[:scale] = 255 - sr[:scale]  # anything in the shaved border is ignored
    sr[:, -scale:] = 0
    assert metrics.evaluate_pair(sr, hr, scale, "matlab") == (math.inf, 1.0)
    sr[scale, scale] = np.uint8(int(sr[scale, scale]) + 10 if sr[scale, scale] < 128 else 0)
    difference = abs(int(sr[scale, scale]) - int(hr[scale, scale]))
    kept = (grey.shape[0] - 2 * scale) * (grey.shape[1] - 2 * scale)
    psnr, ssim = metrics.evaluate_pair(sr, hr, scale, "matlab")
    assert psnr == pytest.approx(10 * math.log10(255**2 * kept / difference**2), abs=1e-10)
    assert ssim < 1.0


def test_grey_images_under_each_protocol(grey):
    noisy = np.clip(grey + np.random.default_rng(2).normal(0, 5, grey.shape), 0, 255)
    sr = np.round(noisy).astype(np.uint8)
    shaved = (slice(2, -2), slice(2, -2))
    grey_psnr = metrics.psnr(sr[shaved], grey[shaved])
    assert metrics.evaluate_pair(sr, grey, 2, "matlab")[0] == pytest.approx(grey_psnr, abs=1e-10)
    # Three equal channels give Y = 16 + 219 g / 255: differences shrink by 219 / 255.
    drsan_psnr = grey_psnr - 20 * math.log10(219 / 255)
    assert metrics.evaluate_pair(sr, grey, 2, "drsan")[0] == pytest.approx(drsan_psnr, abs=1e-10)
    # A model's RGB output scored against a grey ground truth is the same under "drsan".
    rgb_sr = np.stack([sr] * 3, axis=2)
    assert metrics.evaluate_pair(rgb_sr, grey[..., None], 2, "drsan") == pytest.approx(
        metrics.evaluate_pair(sr, grey, 2, "drsan"), abs=1e-12
    )


def test_hr_is_cropped_to_the_sr_size(grey):
    sr = grey[:60, :48]
    hr = grey.copy()  # 67 x 53; at x4 HR may be up to 3 pixels taller and wider than SR
    hr[60:] = 0  # what the crop removes may hold anything
    hr[:, 48:] = 255
    assert metrics.evaluate_pair(sr, hr[:63, :51], 4) == (math.inf, 1.0)
    with pytest.raises(ValueError, match=r"\(60, 48\).*\(64, 51\)"):
        metrics.evaluate_pair(sr, hr[:64, :51], 4)
    with pytest.raises(ValueError, match=r"\(60, 48\).*\(59, 48\)"):
        metrics.evaluate_pair(sr, hr[:59, :48], 4)


def test_invalid_arguments(grey):
    with pytest.raises(ValueError, match=r"'ycbcr'.*\('drsan', 'matlab', 'lesrcnn', 'ntire'\)"):
        metrics.evaluate_pair(grey, grey, 2, protocol="ycbcr")
    with pytest.raises(ValueError, match="SR image must be uint8"):
        metrics.evaluate_pair(grey / 255.0, grey, 2)
    with pytest.raises(ValueError, match="HR image must be HxW"):
        metrics.evaluate_pair(grey, np.zeros(grey.shape + (4,), np.uint8), 2)
    with pytest.raises(ValueError, match="positive integer"):
        metrics.evaluate_pair(grey, grey, 0)
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(4, 3\)"):
        metrics.psnr(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(np.zeros((10, 40)), np.zeros((10, 40)))


def test_lesrcnn_protocol_truncates_and_rounds_y():
    sr = np.array([[[0.999, 0.5, 0.0021]]], np.float32)  # 254.7, 127.5, 0.54 levels
    np.testing.assert_array_equal(metrics.to_levels(sr, "drsan"), [[[255, 128, 1]]])
    np.testing.assert_array_equal(metrics.to_levels(sr, "lesrcnn"), [[[254, 127, 0]]])
    np.testing.assert_array_equal(metrics.to_levels(np.array([-0.2, 1.3]), "lesrcnn"), [0, 255])
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (20, 22, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-3, 4, hr.shape), 0, 255).astype(np.uint8)
    # On RGB images the authors' integer Y is MATLAB's rounded Y; grey images differ: the
    # authors' script scores them as three equal channels, MATLAB's on their grey levels.
    assert (metrics.evaluate_pair(sr, hr, 2, "lesrcnn")
            == metrics.evaluate_pair(sr, hr, 2, "matlab"))
    grey_sr, grey_hr = sr[..., 0], hr[..., 0]
    y = metrics.rgb_to_y(np.stack([grey_sr] * 3, axis=2), round_to_uint8=True)
    y_hr = metrics.rgb_to_y(np.stack([grey_hr] * 3, axis=2), round_to_uint8=True)
    expected = metrics.psnr(y[2:-2, 2:-2], y_hr[2:-2, 2:-2])
    assert metrics.evaluate_pair(grey_sr, grey_hr, 2, "lesrcnn")[0] == expected


def test_ntire_protocol_scores_rgb_with_the_border_shaved():
    # One level of error in the red channel only: MSE over RGB = 1/3 -> 10 log10(3 * 255^2);
    # on Y the same error weighs 65.481 / 255 and would read far higher. The shaved border
    # carries a huge error that must not count.
    rng = np.random.default_rng(0)
    hr = rng.integers(20, 200, size=(30, 26, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[..., 0] += 1
    sr[:4] = 255
    psnr, ssim = metrics.evaluate_pair(sr, hr, 4, "ntire")
    assert psnr == pytest.approx(10 * math.log10(3 * 255**2), abs=1e-9)
    assert 0.99 < ssim < 1.0
    # Grey ground truth counts as three equal channels.
    grey = hr[..., 1]
    assert metrics.evaluate_pair(np.stack([grey] * 3, 2), grey, 4, "ntire") == (math.inf, 1.0)
