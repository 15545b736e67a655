"""Tests for drsan_jax.tiling: tile geometry, blend weights, exact stitching, memory planning."""

import numpy as np
import pytest
from conftest import tiny_model

from drsan_jax import tiling


def nearest(scale):
    """A per-pixel 'network' (pixel replication): tiling cannot change its output at all."""
    return lambda lq: np.repeat(np.repeat(lq, scale, axis=0), scale, axis=1)


@pytest.mark.parametrize("length,tile,overlap", [(100, 40, 8), (41, 40, 8), (1000, 512, 32),
                                                 (97, 32, 0), (500, 96, 40)])
def test_tiles_cover_the_axis_with_at_least_the_overlap(length, tile, overlap):
    starts = tiling.tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (tile - gaps >= overlap).all()
    assert len(starts) == int(np.ceil((length - overlap) / (tile - overlap)))


def test_tile_geometry_errors_and_single_tiles():
    assert tiling.tile_starts(30, 40, 8) == [0]
    assert tiling.num_tiles(30, 100, 40, 8) == 3
    assert tiling.num_tiles(3000, 4000, None, 8) == 1
    with pytest.raises(ValueError, match="below 20"):
        tiling.tile_starts(100, 40, 20)


@pytest.mark.parametrize("overlap", [0, 8, 12])
def test_blend_weights_sum_to_one_and_drop_the_outer_quarter(overlap):
    length, tile, scale = 150, 48, 3
    starts = tiling.tile_starts(length, tile, overlap)
    weights = tiling.blend_weights(starts, tile, length, overlap, scale)
    total = np.zeros(length * scale)
    for start, w in zip(starts, weights):
        assert w.shape == (tile * scale,) and (w >= 0).all()
        total[start * scale:(start + tile) * scale] += w
        if start > 0:  # an interior edge: pixels near it are never used
            assert (w[: overlap * scale // 4] == 0).all()
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_stitching_is_exact_for_a_per_pixel_network(dtype):
    rng = np.random.default_rng(0)
    lq = rng.random((77, 130, 3), dtype=np.float32)
    scale = 3
    expected = np.zeros((231, 390, 3), dtype)
    tiling.upscale_tiled(nearest(scale), lq, scale, expected, None, 0)
    calls = []
    tiled = tiling.upscale_tiled(nearest(scale), lq, scale, np.zeros_like(expected), 32, 8,
                                 on_tile=lambda: calls.append(1))
    # Equal up to float rounding of the cross-fade (weights summing to one in float32).
    assert np.abs(tiled.astype(np.int64) - expected).max() <= 1
    assert (tiled == expected).mean() > 0.999
    assert len(calls) == tiling.num_tiles(77, 130, 32, 8) == 3 * 6
    peak = np.iinfo(dtype).max
    np.testing.assert_array_equal(expected[::scale, ::scale],
                                  np.floor(lq * peak + 0.5).astype(dtype))


def test_output_shape_is_checked():
    with pytest.raises(ValueError, match="does not hold a x2 result"):
        tiling.upscale_tiled(nearest(2), np.zeros((10, 10, 3), np.float32), 2,
                             np.zeros((20, 21, 3), np.uint8), None, 0)


def test_memory_estimate_follows_scale_and_bucket():
    x2, x4 = tiny_model(2), tiny_model(4)
    # The x4 upsampler's second stage runs at twice the resolution: more per LR pixel.
    assert tiling.bytes_per_pixel(x4) > tiling.bytes_per_pixel(x2) > 8 * 4
    # 100x100 pads to a 128x128 bucket; the ensemble holds 8 results.
    single = tiling.inference_bytes(x2, 100, 100, False)
    assert single > 128 * 128 * tiling.bytes_per_pixel(x2)
    assert tiling.inference_bytes(x2, 100, 100, True) > 2 * single
    assert 0 < tiling.memory_budget()
