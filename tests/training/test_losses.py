"""The training losses against their definitions: SAFMN's and SMFANet's FFT term especially.

docs/networks/safmn.md, "Training recipe": L1 + 0.05 x the L1 distance of `torch.fft.rfft2`
of prediction and ground truth (NCHW, so over H and W), real and imaginary parts stacked.
"""

import numpy as np
import pytest

from drsan_jax.training import fft_loss, l1_fft_loss, l1_loss


def test_fft_loss_of_a_constant_offset_is_its_dc_term():
    # A constant difference d has one nonzero coefficient per channel, the DC term d*H*W, among
    # H * (W // 2 + 1) complex ones: the stacked mean is d*H*W / (2 * H * (W // 2 + 1)).
    h, w, d = 6, 7, 0.25
    gt = np.zeros((2, h, w, 3), np.float32)
    expected = d * h * w / (2 * h * (w // 2 + 1))
    assert float(fft_loss(gt + d, gt)) == pytest.approx(expected, rel=1e-6)


def test_fft_loss_equals_numpy_rfft2_over_height_and_width():
    rng = np.random.default_rng(0)
    sr, gt = (rng.uniform(size=(2, 9, 10, 3)).astype(np.float32) for _ in range(2))
    # NumPy on the NCHW layout PyTorch sees: rfft2 over the last two axes.
    diff = np.fft.rfft2(sr.transpose(0, 3, 1, 2)) - np.fft.rfft2(gt.transpose(0, 3, 1, 2))
    expected = np.mean(np.abs(np.stack([diff.real, diff.imag], axis=-1)))
    assert float(fft_loss(sr, gt)) == pytest.approx(expected, rel=1e-5)
    assert float(l1_fft_loss(sr, gt)) == pytest.approx(
        float(l1_loss(sr, gt)) + 0.05 * expected, rel=1e-5)

