"""Tests for drsan_jax.api: load, upscale of every image kind, tiles, bicubic, inspect, the
smallest pictures of every family."""

import numpy as np
import pytest
from conftest import TINY, lr_crop, random_params, save_tiny_checkpoint

from drsan_jax import api, device_memory, metrics
from drsan_jax.data import imresize, quantize, read_image, to_model_input
from drsan_jax.inference import Predictor
from drsan_jax.models import build_model, config_of, num_paths, path_index
from drsan_jax.upscaling import shapes, tiling
from drsan_jax.weights.loaded import InferenceModel

# Largest PSNR change (dB, Y channel against HR) that tiling may cause; the shipped defaults
# measured far below it on the benchmarks (see docs/upscaling.md, "Tiles and memory").
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
    monkeypatch.setattr(device_memory, "memory_budget", lambda: 1e6)
    assert upscaler.resolve_tile(600, 1100) == api.DEFAULT_TILE
    assert upscaler.tile_count(600, 1100) == 2 * 3
    calls = []
    monkeypatch.setattr(tiling, "DEFAULT_TILE", 32)  # where both backends read it
    sr = upscaler.upscale(lq, overlap=8, on_tile=lambda: calls.append(1))
    assert len(calls) == tiling.num_tiles(*lq.shape[:2], 32, 8) > 1
    assert sr.shape == (90, 122, 3)


def test_tiles_per_call_follow_the_devices_and_the_scratch(upscaler, lq, monkeypatch):
    assert upscaler._tile_batch(512) == 1  # the suite keeps one CPU device
    one_at_a_time = upscaler.upscale(lq, tile=32, overlap=8)
    monkeypatch.setattr(upscaler, "_devices", 2)
    assert upscaler._tile_batch(None) == 1 and upscaler._tile_batch(512) == 2
    # Tiles grouped two by two come out as they do one by one.
    np.testing.assert_array_equal(upscaler.upscale(lq, tile=32, overlap=8), one_at_a_time)
    per_tile = device_memory.bytes_per_pixel(upscaler.inference_model.model) * 512 * 512
    monkeypatch.setattr(api, "TILE_CALL_BYTES", 1.5 * per_tile)
    assert upscaler._tile_batch(512) == 1


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


# A tiny model of every family, random weights: enough to see what the picture's size does.
TINY_FAMILIES = {
    "drsan": ("32s", {"features": 8, "num_blocks": 2, "num_groups": 1}),
    "dran": ("dran-s", {"features": 8, "num_blocks": 2, "drm_width": 1}),
    "edsr": ("edsr-baseline", {"features": 8, "num_blocks": 1}),
    "mdsr": ("mdsr-baseline", {"features": 8, "num_blocks": 1}),
    "lesrcnn": ("lesrcnn", {"features": 8}),
    "smfanet": ("smfanet", {"features": 8, "num_blocks": 1}),  # needs 8 px a side
    "span": ("span", {"features": 8}),
    "safmn": ("safmn-ntire", {"features": 8, "num_blocks": 1}),  # needs 16 px a side
}


def tiny_upscaler(family: str, scale: int = 2) -> api.Upscaler:
    name, sizes = TINY_FAMILIES[family]
    model = build_model(name, scale, **sizes)
    return api.Upscaler(InferenceModel(model, random_params(model), scale, None, None,
                                       config_of(model), f"tiny {family}"))


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_small_pictures_go_through_the_network_mirrored(family):
    upscaler = tiny_upscaler(family)
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (2, 2), (1, 7), (3, 2), (7, 1), (5, 40), (31, 31)]:
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        pads = [shapes.min_side_padding(n) for n in shape]
        # Reflection: a 1-pixel side becomes the pixel repeated (numpy's "edge").
        mirrored = np.pad(image, [*pads, (0, 0)], mode="symmetric")
        assert min(mirrored.shape[:2]) >= shapes.MIN_SIDE
        (top, _), (left, _) = pads
        expected = upscaler.upscale(mirrored)[2 * top:2 * (top + shape[0]),
                                              2 * left:2 * (left + shape[1])]
        np.testing.assert_array_equal(upscaler.upscale(image), expected, err_msg=str(shape))
        grey = upscaler.upscale(image[..., 0])
        assert grey.shape == (2 * shape[0], 2 * shape[1])
    if family == "dran":
        # Why no picture may skip it: DRAN's DRM pools twice by 2, and has no value below 4 px.
        alone = upscaler._predictors[False](to_model_input(image[:3, :3]))
        assert np.isnan(alone).all()


@pytest.mark.slow
def test_tiny_grey_pictures_keep_their_brightness_with_the_shipped_model():
    model = api.load("32s-x2")
    for level in (64, 128, 200):
        for side in (1, 2):
            for image in (np.full((side, side), level, np.uint8),
                          np.full((side, side, 3), level, np.uint8)):
                sr = model.upscale(image)
                assert sr.shape == (2 * side, 2 * side, *image.shape[2:])
                assert abs(sr.astype(float).mean() - level) <= 2, (level, side, sr.mean())
    # Before the mirroring, the network saw 1 pixel amid zeros: about a fifth of the level.
    alone = model._predictors[False](np.full((1, 1, 3), 128 / 255, np.float32))
    assert quantize(alone).mean() < 128 * 0.3
