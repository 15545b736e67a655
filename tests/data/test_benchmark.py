"""Tests for drsan_jax.data.benchmark: finding datasets, pairing HR with LR, loading and caching."""

import numpy as np
import pytest
from conftest import make_benchmark, nearest

from drsan_jax.data import benchmark
from drsan_jax.data.benchmark import (
    BENCHMARK_DIR_ENV,
    BenchmarkError,
    default_data_dir,
    find_datasets,
    load_pair,
    pair_images,
)
from drsan_jax.data.image_io import read_image, write_image


def test_lq_made_from_hr_is_the_official_lq(benchmark_dir, tmp_path):
    (tmp_path / "HR").mkdir()
    for name in ("Set5", "Set14"):
        (tmp_path / "HR" / name).symlink_to(benchmark_dir / "HR" / name)
        official = pair_images(benchmark_dir, name, 3)
        made = pair_images(tmp_path, name, 3)
        assert [p.stem for p in made] == [p.stem for p in official]
        for pair, official_pair in zip(made, official):
            assert pair.lq_path is None
            lq, gt = load_pair(pair, 3)
            np.testing.assert_array_equal(lq, read_image(official_pair.lq_path))
            np.testing.assert_array_equal(gt, load_pair(official_pair, 3)[1])


def test_datasets_in_table_order_and_pairing_errors(benchmark_dir, tmp_path, lq_rgb):
    assert find_datasets(benchmark_dir) == ["Set5", "Set14", "B100"]
    with pytest.raises(BenchmarkError, match=r"'Urban100' not found .*found: Set5, Set14, B100"):
        pair_images(benchmark_dir, "Urban100", 2)
    with pytest.raises(BenchmarkError, match="no HR/ subfolder"):
        find_datasets(tmp_path)
    hr = nearest(lq_rgb, 2)
    small = lq_rgb[:10, :8]
    root = make_benchmark(
        tmp_path / "a", {"Toy": {"a.png": hr, "b.png": hr}},
        {2: {"Toy": {"a.png": lq_rgb}}, 3: {"Toy": {"ax3.png": small, "b.png": small,
                                                    "c.png": small}}})
    with pytest.raises(BenchmarkError, match=r"x2/Toy has no LR partner for b\.png"):
        pair_images(root, "Toy", 2)
    with pytest.raises(BenchmarkError, match=r"HR/Toy has no HR partner for c\.png"):
        pair_images(root, "Toy", 3)
    (root / "x3" / "Toy" / "c.png").unlink()
    pairs = pair_images(root, "Toy", 3)
    assert [p.lq_path.name for p in pairs] == ["ax3.png", "b.png"]
    # Made from HR at x4 (no x4 folder); at x3 the files are checked against HR // 3.
    assert pair_images(root, "Toy", 4)[0].lq_path is None
    write_image(root / "x3" / "Toy" / "b.png", lq_rgb)
    with pytest.raises(BenchmarkError, match=r"b\.png is 13x16 .* 26x32, whose x3 LR is 8x10"):
        load_pair(pairs[1], 3)
    write_image(root / "HR" / "Toy" / "b.bmp", hr)
    with pytest.raises(BenchmarkError, match="same name"):
        pair_images(root, "Toy", 2)


def test_load_pair_decodes_once_until_the_file_changes(tmp_path, monkeypatch, lq_rgb):
    root = make_benchmark(tmp_path, {"Toy": {"a.png": nearest(lq_rgb, 2),
                                             "grey.png": nearest(lq_rgb[..., 0], 2)}},
                          {2: {"Toy": {"a.png": lq_rgb, "grey.png": lq_rgb[..., 0]}}})
    pair, grey_pair = pair_images(root, "Toy", 2)
    lq, gt = load_pair(pair, 2)
    np.testing.assert_array_equal(lq, lq_rgb)
    assert not lq.flags.writeable and not gt.flags.writeable  # shared between calls
    assert load_pair(grey_pair, 2)[1].shape == (32, 26)  # grey ground truth stays grey
    reads = []
    monkeypatch.setattr(benchmark, "read_image", lambda p: reads.append(p) or read_image(p))
    assert load_pair(pair, 2)[0] is lq and reads == []
    write_image(pair.lq_path, 255 - lq_rgb)
    np.testing.assert_array_equal(load_pair(pair, 2)[0], 255 - lq_rgb)
    assert reads == [pair.lq_path]


def test_default_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(BENCHMARK_DIR_ENV, raising=False)
    (tmp_path / "shared" / "data" / "benchmark").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    assert default_data_dir(tmp_path / "repo") == tmp_path / "shared" / "data" / "benchmark"
    with pytest.raises(BenchmarkError, match="--data_dir"):
        default_data_dir(tmp_path / "repo" / "nested")
    monkeypatch.setenv(BENCHMARK_DIR_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(BenchmarkError, match="DRSAN_BENCHMARK_DIR"):
        default_data_dir(tmp_path / "repo")
