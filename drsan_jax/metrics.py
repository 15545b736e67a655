"""Y-channel PSNR and SSIM, and the evaluation protocols behind SR benchmark tables.

Every protocol crops HR to the SR size, removes `scale` pixels from every border (BasicSR's
`crop_border`) and scores the luma Y of ITU-R BT.601 (MATLAB's `rgb2ycbcr`). The project's two
protocols differ in two details that move Set14 by about 0.1 dB:

- "drsan": Y kept in float; one-channel images are expanded to three equal channels first,
  as the project notes (docs/evaluation.md) state it.
- "matlab": Y rounded to 8-bit levels, as `rgb2ycbcr` returns it for uint8 images; one-channel
  images are scored on their grey values as they are, as the common MATLAB evaluation scripts
  do. The bicubic rows published in SR papers sit within 0.02 dB of this protocol.

Both round the network's output to 8-bit levels (`to_levels`). Two more protocols reproduce
authors' own scoring, for comparing with their published numbers:

- "lesrcnn": the LESRCNN test script (`tcw_sample.py`): the output is *truncated* to 8 bits
  (PyTorch's `.byte()`), Y is rounded to integer levels, grey images are scored as three equal
  channels. It costs a model a few hundredths of a dB against "drsan".

- "ntire": the NTIRE efficient-SR challenges' `test_demo.py` (the SPAN and SAFMN-NTIRE files'
  authors'): PSNR on **RGB** rather than Y, the output rounded to 8 bits, grey images as three
  equal channels, `scale` pixels shaved (the challenge's `border = 4` at its x4); SSIM is the
  mean of the three channels' SSIMs, as that code's `calculate_ssim` does for RGB.

SSIM is Wang et al. 2004 as in their reference `ssim_index.m`: 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering, mean of the map, no downsampling.
Everything is NumPy float64.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

PROTOCOLS = ("drsan", "matlab", "lesrcnn", "ntire")
# The project's own protocols (what `eval.py --protocol both` scores).
PROJECT_PROTOCOLS = ("drsan", "matlab")
# What the evaluation accepts (eval.py's --protocol): one protocol, or "both" to score every SR
# image under each of the project's two; and what it scores (--method).
BOTH = "both"
PROTOCOL_CHOICES = (*PROTOCOLS, BOTH)
METHODS = ("model", "bicubic")

# ITU-R BT.601 luma for R, G, B in [0, 1], on the [16, 235] scale (MATLAB's rgb2ycbcr).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2, _SSIM_RANGE = 0.01, 0.03, 255.0


def rgb_to_y(image: np.ndarray, round_to_uint8: bool) -> np.ndarray:
    """Luma Y of an RGB image, Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1].

    Args:
      image: HxWx3 RGB on the [0, 255] scale, usually uint8.
      round_to_uint8: round Y to 8-bit levels (half away from zero), as MATLAB's `rgb2ycbcr`
        returns it for uint8 input; otherwise keep it in float.

    Returns:
      HxW float64 Y on the [16, 235] scale.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 RGB image, got shape {image.shape}")
    rgb = image.astype(np.float64)
    # Coefficients divided by 255 first and the offset added last: rgb2ycbcr's order for uint8.
    y = sum((w / 255.0) * rgb[..., c] for c, w in enumerate(_Y_WEIGHTS)) + _Y_OFFSET
    return np.floor(y + 0.5) if round_to_uint8 else y


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio, 10 log10(data_range^2 / MSE), in float64.

    Args:
      a: image, any shape.
      b: image of the same shape.
      data_range: the peak value (255 for 8-bit levels).

    Returns:
      PSNR in dB; `inf` for identical images (MSE 0), which also makes a dataset mean inf.
    """
    a, b = _same_shape_float(a, b, "psnr")
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two single-channel images on the [0, 255] scale.

    Args:
      a: HxW image, both sides at least 11 pixels.
      b: HxW image of the same shape.

    Returns:
      The mean of the SSIM map over the 'valid' (H - 10) x (W - 10) positions; 1 for identical
      images.
    """
    a, b = _same_shape_float(a, b, "ssim")
    if a.ndim != 2 or min(a.shape) < _SSIM_WINDOW:
        raise ValueError(
            f"ssim expects single-channel images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} "
            f"pixels, got shape {a.shape}"
        )
    c1 = (_SSIM_K1 * _SSIM_RANGE) ** 2
    c2 = (_SSIM_K2 * _SSIM_RANGE) ** 2
    # One filtering pass for all five local statistics.
    mu_a, mu_b, e_aa, e_bb, e_ab = _gaussian_filter_valid(np.stack([a, b, a * a, b * b, a * b]))
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(numerator / denominator))


def to_levels(sr: np.ndarray, protocol: str = "drsan") -> np.ndarray:
    """A network's float output in [0, 1] as the uint8 image a protocol scores.

    Rounded half up ("drsan", "matlab": `image_io.quantize`), or truncated after scaling and
    clamping ("lesrcnn": `sr.mul(255).clamp(0, 255).byte()` in the authors' code).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of {PROTOCOLS}")
    levels = np.clip(np.asarray(sr, np.float32) * np.float32(255.0), 0.0, 255.0)
    if protocol != "lesrcnn":
        levels = np.floor(levels + np.float32(0.5))
    return levels.astype(np.uint8)


def evaluate_pair(
    sr: np.ndarray, hr: np.ndarray, scale: int, protocol: str = "drsan"
) -> tuple[float, float]:
    """Scores one super-resolved image against its ground truth as the benchmark tables do.

    Args:
      sr: HxW or HxWxC (C in {1, 3}) uint8, the SR output already clipped and rounded.
      hr: ground truth, uint8, at least as large as `sr` and at most `scale - 1` pixels larger
        in each dimension (HR sizes are not always a multiple of the scale); cropped to `sr`.
      scale: the super-resolution factor; also the number of pixels removed from every border.
      protocol: "drsan", "matlab", "lesrcnn" or "ntire" (see the module docstring).

    Returns:
      (PSNR in dB, SSIM) on the luma channel ("ntire": on RGB).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of {PROTOCOLS}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    sr, hr = np.asarray(sr), np.asarray(hr)
    for name, image in (("SR", sr), ("HR", hr)):
        if image.dtype != np.uint8:
            raise ValueError(f"{name} image must be uint8 (clipped and rounded), got {image.dtype}")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
            raise ValueError(f"{name} image must be HxW or HxWxC with C in 1, 3; got {image.shape}")
    extra = (hr.shape[0] - sr.shape[0], hr.shape[1] - sr.shape[1])
    if not all(0 <= e < scale for e in extra):
        raise ValueError(
            f"SR shape {sr.shape} does not match HR shape {hr.shape} at scale {scale}: HR may "
            f"only be 0 to {scale - 1} pixels larger in height and width"
        )
    hr = hr[: sr.shape[0], : sr.shape[1]]
    if protocol == "ntire":
        sr_rgb, hr_rgb = (_rgb(image)[scale:-scale, scale:-scale] for image in (sr, hr))
        return psnr(sr_rgb, hr_rgb), float(np.mean([ssim(sr_rgb[..., c], hr_rgb[..., c])
                                                    for c in range(3)]))
    sr_y, hr_y = (_luma(image, protocol) for image in (sr, hr))
    sr_y, hr_y = sr_y[scale:-scale, scale:-scale], hr_y[scale:-scale, scale:-scale]
    return psnr(sr_y, hr_y), ssim(sr_y, hr_y)


def _luma(image: np.ndarray, protocol: str) -> np.ndarray:
    """The channel a protocol scores: Y of RGB images; grey images per the protocol."""
    if image.ndim == 3 and image.shape[2] == 3:
        return rgb_to_y(image, round_to_uint8=protocol in ("matlab", "lesrcnn"))
    grey = image.reshape(image.shape[:2])
    if protocol == "matlab":
        return grey.astype(np.float64)
    return rgb_to_y(np.stack([grey] * 3, axis=2), round_to_uint8=protocol == "lesrcnn")


def _rgb(image: np.ndarray) -> np.ndarray:
    """An RGB image as it is; a grey one as three equal channels (float64)."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image.astype(np.float64)
    return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2).astype(np.float64)


def _same_shape_float(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64, or a ValueError naming both shapes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{what} needs images of the same shape, got {a.shape} and {b.shape}")
    return a, b


def _gaussian_filter_valid(x: np.ndarray) -> np.ndarray:
    """Correlates (..., H, W) with the normalised 11x11 Gaussian, keeping only 'valid' output.

    The window (MATLAB's fspecial('gaussian', 11, 1.5) / sum) is the outer product of a
    normalised 1-D Gaussian, so it is applied as two 11-tap passes over sliding-window views.
    """
    offsets = np.arange(_SSIM_WINDOW) - _SSIM_WINDOW // 2
    taps = np.exp(-(offsets**2) / (2 * _SSIM_SIGMA**2))
    taps /= taps.sum()
    x = sliding_window_view(x, _SSIM_WINDOW, axis=-2) @ taps  # (..., H - 10, W)
    return sliding_window_view(x, _SSIM_WINDOW, axis=-1) @ taps  # (..., H - 10, W - 10)
