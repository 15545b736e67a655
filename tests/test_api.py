"""Tests for drsan_jax.api: load, upscale of every image kind, tiles, bicubic, inspect."""

import numpy as np
import pytest
from conftest import TINY, lr_crop, save_tiny_checkpoint

from drsan_jax import api, metrics, tiling
from drsan_jax.data import imresize, quantize, read_image
from drsan_jax.inference import Predictor
from drsan_jax.models import num_paths, path_index

# Largest PSNR change (dB, Y channel against HR) that tiling may cause; the shipped defaults
# measured far below it on the benchmarks (see README, "Tiles").
TILE_TOLERANCE_DB = 0.05


@pytest.fixture(scope="module")
def upscaler(tiny_checkpoint):
    return api.load(tiny_checkpoint)


@pytest.fixture(scope="module")
def lq(benchmark_dir):
    return lr_crop(benchmark_dir)


def test_load_describes_the_checkpoint(upscaler):
    assert (upscaler.scale, upscaler.step, upscaler.variant) == (2, 7, None)
    assert "x2, step 7" in repr(upscaler)
    with pytest.raises(FileNotFoundError, match="/no/such/run: no such file or folder"):
        api.load("/no/such/run")


def test_upscale_is_the_benchmark_prediction(upscaler, lq):
    inference_model = upscaler.inference_model
    expected = quantize(Predictor(inference_model.model, inference_model.params)(lq))
    np.testing.assert_array_equal(upscaler.upscale(lq), expected)
    ensemble = Predictor(inference_model.model, inference_model.params, self_ensemble=True)
    np.testing.assert_array_equal(upscaler.upscale(lq, self_ensemble=True),
                                  quantize(ensemble(lq)))


def test_grey_rgba_and_16_bit_keep_their_kind(upscaler, lq):
    rgb = upscaler.upscale(lq)
    grey = lq[..., 1]
    sr_grey = upscaler.upscale(grey)
    assert sr_grey.shape == (90, 122) and sr_grey.dtype == np.uint8
    grey_as_rgb = upscaler.upscale(np.repeat(grey[..., None], 3, axis=2)).astype(np.float32)
    np.testing.assert_array_equal(sr_grey, np.rint(grey_as_rgb.mean(axis=2)))
    assert upscaler.upscale(grey[..., None]).shape == (90, 122, 1)

    alpha = np.linspace(0, 255, lq.shape[1]).astype(np.uint8)[None].repeat(lq.shape[0], 0)
    sr_rgba = upscaler.upscale(np.dstack([lq, alpha]))
    np.testing.assert_array_equal(sr_rgba[..., :3], rgb)
    np.testing.assert_array_equal(sr_rgba[..., 3], imresize(alpha, 2))

    rng = np.random.default_rng(0)
    deep = (lq.astype(np.uint16) * 257 + rng.integers(-100, 100, lq.shape)).astype(np.uint16)
    sr_deep = upscaler.upscale(deep)
    assert sr_deep.dtype == np.uint16 and sr_deep.shape == rgb.shape
    # The model sees all 16 bits: the result is not an 8-bit image scaled up ...
    unclipped = sr_deep[(sr_deep > 0) & (sr_deep < 65535)]
    assert unclipped.size > 1000 and (unclipped % 257 != 0).mean() > 0.9
    # ... and agrees with the 8-bit result to within the input's sub-8-bit detail.
    assert np.abs(sr_deep / 257.0 - rgb).max() < 3


def test_bad_images_are_refused(upscaler, lq):
    for bad in (lq.astype(np.float32), np.zeros((8, 8, 2), np.uint8), np.zeros(8, np.uint8)):
        with pytest.raises(ValueError, match="uint8 or uint16"):
            upscaler.upscale(bad)


def test_bicubic_is_matlab_imresize(upscaler, lq):
    np.testing.assert_array_equal(upscaler.bicubic(lq), imresize(lq, 2))
    assert upscaler.bicubic(lq[..., 0]).shape == (90, 122)


def test_tiles_equal_the_whole_image_without_drm(tmp_path, benchmark_dir):
    # Without DRM every pixel depends on a bounded neighbourhood, which the dropped quarter of
    # the overlap (8 px) covers for this tiny model: tiling changes nothing but float rounding.
    plain = api.load(save_tiny_checkpoint(tmp_path / "plain", residual="plain"))
    lq = lr_crop(benchmark_dir, size=(130, 150))
    whole = plain.upscale(lq, tile=None)
    tiled = plain.upscale(lq, tile=80, overlap=api.DEFAULT_OVERLAP)
    assert plain.tile_count(130, 150, 80) == 3 * 3
    assert np.abs(tiled.astype(int) - whole).max() <= 1


def test_tiles_stay_within_the_tolerance_with_drm(upscaler, benchmark_dir):
    # Each tile averages its own DRM statistics: a small change, bounded in PSNR.
    name = "Set14/barbara.png"
    lq = read_image(benchmark_dir / "x2" / name)[:160, :200]
    hr = read_image(benchmark_dir / "HR" / name)[:320, :400]
    whole = upscaler.upscale(lq, tile=None)
    tiled = upscaler.upscale(lq, tile=96, overlap=api.DEFAULT_OVERLAP)
    delta = metrics.evaluate_pair(tiled, hr, 2)[0] - metrics.evaluate_pair(whole, hr, 2)[0]
    assert abs(delta) < TILE_TOLERANCE_DB
    assert 0 < np.abs(tiled.astype(int) - whole).max()


def test_auto_tiles_only_when_the_whole_image_does_not_fit(upscaler, lq, monkeypatch):
    assert upscaler.resolve_tile(*lq.shape[:2]) is None
    monkeypatch.setattr(tiling, "memory_budget", lambda: 1e6)
    assert upscaler.resolve_tile(600, 1100) == api.DEFAULT_TILE
    assert upscaler.tile_count(600, 1100) == 2 * 3
    calls = []
    monkeypatch.setattr(tiling, "DEFAULT_TILE", 32)  # where both backends read it
    sr = upscaler.upscale(lq, overlap=8, on_tile=lambda: calls.append(1))
    assert len(calls) == tiling.num_tiles(*lq.shape[:2], 32, 8) > 1
    assert sr.shape == (90, 122, 3)


def test_tile_arguments_are_checked(upscaler, lq):
    for tile in (0, -5, "big", 2.5, True):
        with pytest.raises(ValueError, match="tile must be"):
            upscaler.upscale(lq, tile=tile)
    with pytest.raises(ValueError, match="below 32"):
        upscaler.upscale(lq, tile=64, overlap=32)


def test_inspect_equals_the_unpadded_network(upscaler, lq):
    info = upscaler.inspect(lq, blocks=[(0, 2)])
    model, params = upscaler.inference_model.model, upscaler.inference_model.params
    x = lq[None].astype(np.float32) / 255
    sr, state = model.apply({"params": params}, x, mutable=["intermediates", "attention"])
    r = state["intermediates"]["DRAG_0"]["dra_coefficients"][0]
    assert info.dra_coefficients.shape == (TINY["num_groups"], num_paths(TINY["num_blocks"]))
    np.testing.assert_allclose(info.dra_coefficients, r, rtol=1e-5, atol=1e-6)
    assert list(info.rsa_maps) == [(0, 2)]
    attention = state["attention"]["DRAG_0"]["rsa_block_2"][0][0]
    np.testing.assert_allclose(info.rsa_maps[0, 2], attention, atol=1e-5)
    assert np.abs(info.sr.astype(int) - quantize(np.asarray(sr[0]))).max() <= 1
    matrix = info.dra_matrix(0)
    assert matrix[1, 0] == info.dra_coefficients[0, path_index(2, 0)]
    assert matrix[1, 1] == info.dra_coefficients[0, path_index(2, 1)]
    assert np.isnan(matrix[0, 1])


def test_inspect_all_blocks_and_bad_blocks(upscaler, lq):
    info = upscaler.inspect(lq[..., 0])
    assert sorted(info.rsa_maps) == [(0, 1), (0, 2)]
    assert info.rsa_maps[0, 1].shape == (*lq.shape[:2], TINY["features"])
    assert ((info.rsa_maps[0, 1] > 0) & (info.rsa_maps[0, 1] < 1)).all()  # a sigmoid
    with pytest.raises(ValueError, match="no block"):
        upscaler.inspect(lq, blocks=[(1, 1)])
