"""Tests for drsan_jax.data.training_set: sources, DIV2K, TFDS, the LR cache, host shards."""

import sys
import types

import numpy as np
import pytest

from drsan_jax import data
from drsan_jax.data import image_io, resize

SCALE = 2


def _hr_folder(tmp_path, photos):
    """A folder holding the photos, plus a JPEG, a grey PNG, an RGBA PNG and a tiny image."""
    folder = tmp_path / "hr"
    for name, image in photos.items():
        image_io.write_image(folder / name, image)
    photo = next(iter(photos.values()))
    image_io.write_image(folder / "photo.jpg", photo[:60, :70])
    image_io.write_image(folder / "grey.png", photo[:64, :50, 1])
    rgba = np.concatenate([photo[:40, :48], np.full((40, 48, 1), 7, np.uint8)], axis=2)
    image_io.write_image(folder / "rgba.png", rgba)
    image_io.write_image(folder / "tiny.png", photo[:20, :50])  # LR 10 x 25 < patch 16
    return folder


def test_hr_folder_makes_lr_once_with_the_project_bicubic(tmp_path, photos, monkeypatch, caplog):
    folder = _hr_folder(tmp_path, photos)
    calls = []
    real_downscale = resize.bicubic_downscale
    monkeypatch.setattr(resize, "bicubic_downscale",
                        lambda hr, s: calls.append(hr.shape) or real_downscale(hr, s))
    with caplog.at_level("WARNING"):
        dataset = data.load_training_set(str(folder), SCALE, 16, tmp_path / "cache")
    assert len(calls) == 8  # every image, the tiny one too: a later run may use smaller patches
    assert "tiny.png" in caplog.text and "--config.patch_size=16" in caplog.text
    names = {p.name.rsplit("/", 1)[-1]: p for p in dataset.pairs}
    assert sorted(names) == sorted([*photos, "photo.jpg", "grey.png", "rgba.png"])
    assert dataset.skipped == (str(folder / "tiny.png"),)
    for name, pair in names.items():
        expected_hr = image_io.to_rgb_uint8(image_io.read_image(folder / name))
        np.testing.assert_array_equal(pair.gt, expected_hr, err_msg=name)
        np.testing.assert_array_equal(pair.lq, resize.bicubic_downscale(expected_hr, SCALE))
    grey = names["grey.png"].gt
    assert grey.shape == (64, 50, 3) and np.all(grey == grey[..., :1])
    assert names["rgba.png"].gt.shape == (40, 48, 3)

    calls.clear()
    again = data.load_training_set(f"{folder}, ", SCALE, 8, tmp_path / "cache")
    assert calls == []  # made once: the second run only opens the cache
    assert len(again.pairs) == 8 and again.skipped == ()
    assert again.fingerprint != dataset.fingerprint  # the tiny image joined


def test_unreadable_images_are_all_named_before_training(tmp_path, photos):
    folder = tmp_path / "hr"
    image_io.write_image(folder / "good.png", next(iter(photos.values())))
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes((folder / "good.png").read_bytes()[:200])
    with pytest.raises(ValueError, match="2 training image") as error:
        data.load_training_set(str(folder), SCALE, 16, tmp_path / "cache")
    assert "empty.png" in str(error.value) and "truncated.png" in str(error.value)


def test_sources_are_checked_before_any_image_is_decoded(tmp_path, photos):
    folder = tmp_path / "hr"
    image_io.write_image(folder / "good.png", next(iter(photos.values())))
    data.check_training_data(str(folder))
    for name in ("notes.png", "b.jpg", "c.bmp", "d.png", "e.png", "f.png", "g.png"):
        (folder / name).write_text("not an image")
    with pytest.raises(ValueError) as error:
        data.check_training_data(f"{folder}, tfds:div2k")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("--config.train_data: 7 of 8 training files are not PNG, BMP, JPEG "
                              "or TIFF images; remove or replace them: ")
    assert f"{folder / 'b.jpg'}" in message and message.endswith("(and 2 more)")
    for spec, error_type, match in (
            (None, ValueError, "--config.train_data is not set: give .*shared/data/train/T91"),
            (str(tmp_path / "nowhere"), FileNotFoundError, "nowhere is not a folder"),
            (str(tmp_path), ValueError, "holds no images")):
        with pytest.raises(error_type, match=match):
            data.check_training_data(spec)


def test_bad_sources_say_what_was_expected(tmp_path, photos):
    with pytest.raises(FileNotFoundError, match="nowhere.*tfds:div2k"):
        data.load_training_set(str(tmp_path / "nowhere"), SCALE, 16, tmp_path / "cache")
    with pytest.raises(ValueError, match="train_data is not set: give comma-separated folders"):
        data.load_training_set(" , ", SCALE, 16, tmp_path / "cache")
    folder = tmp_path / "small"
    image_io.write_image(folder / "a.png", next(iter(photos.values()))[:30, :30])
    with pytest.raises(ValueError, match="patch_size=48"):
        data.load_training_set(str(folder), SCALE, 48, tmp_path / "cache")


def _div2k(tmp_path, photos, with_lr):
    """A DIV2K-layout folder; its 'official' LR images are nearest-neighbour, unlike bicubic."""
    root = tmp_path / "DIV2K"
    for i, image in enumerate(photos.values(), start=1):
        image_io.write_image(root / data.DIV2K_HR / f"{i:04d}.png", image)
        if with_lr:
            lq = resize.mod_crop(image, SCALE)[::SCALE, ::SCALE]
            image_io.write_image(root / data.DIV2K_LR / f"X{SCALE}" / f"{i:04d}x{SCALE}.png", lq)
    return root


def test_div2k_layout_uses_the_official_lr_images(tmp_path, photos):
    root = _div2k(tmp_path, photos, with_lr=True)
    dataset = data.load_training_set(str(root), SCALE, 16, tmp_path / "cache")
    assert len(dataset.pairs) == len(photos)
    for pair, image in zip(dataset.pairs, photos.values()):
        np.testing.assert_array_equal(pair.gt, image)
        np.testing.assert_array_equal(pair.lq, resize.mod_crop(image, SCALE)[::SCALE, ::SCALE])
    (root / data.DIV2K_LR / f"X{SCALE}" / "0002x2.png").unlink()
    with pytest.raises(FileNotFoundError, match="0002x2.png is missing"):
        data.load_training_set(str(root), SCALE, 16, tmp_path / "cache")


def test_div2k_without_lr_folder_falls_back_to_bicubic(tmp_path, photos):
    root = _div2k(tmp_path, photos, with_lr=False)
    dataset = data.load_training_set(str(root), SCALE, 16, tmp_path / "cache")
    for pair, image in zip(dataset.pairs, photos.values()):
        np.testing.assert_array_equal(pair.lq, resize.bicubic_downscale(image, SCALE))


def _fake_tfds(photos, loads):
    """A stand-in for tensorflow_datasets: `div2k/bicubic_x2` holding the photos."""
    examples = [{"hr": image, "lr": resize.bicubic_downscale(image, SCALE)}
                for image in photos.values()]

    def load(name, split, shuffle_files):
        loads.append((name, split, shuffle_files))
        return examples

    return types.SimpleNamespace(load=load, as_numpy=iter)


def test_tfds_div2k_is_read_once_into_the_cache(tmp_path, photos, monkeypatch):
    loads = []
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(photos, loads))
    shards = [data.load_training_set("tfds:div2k", SCALE, 16, tmp_path / "cache", i, 2)
              for i in range(2)]
    assert loads == [("div2k/bicubic_x2", "train", False)] * 2
    images = list(photos.values())
    for host, dataset in enumerate(shards):
        assert len(dataset.pairs) == 2
        for pair, image in zip(dataset.pairs, images[host::2]):
            np.testing.assert_array_equal(pair.gt, image)
    again = data.load_training_set("tfds:div2k", SCALE, 16, tmp_path / "cache", 1, 2)
    assert len(loads) == 2 and again.fingerprint == shards[1].fingerprint
    with pytest.raises(ValueError, match="x3 LR images but --config.scale=2"):
        data.load_training_set("tfds:div2k/bicubic_x3", SCALE, 16, tmp_path / "cache")


def test_tfds_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        data.load_training_set("tfds:div2k", SCALE, 16, tmp_path / "cache")


def test_hosts_read_disjoint_shards(tmp_path, photos):
    folder = _hr_folder(tmp_path, photos)
    shards = [data.load_training_set(str(folder), SCALE, 8, tmp_path / "cache", i, 3)
              for i in range(3)]
    names = [{p.name for p in s.pairs} for s in shards]
    assert all(names) and not (names[0] & names[1] or names[1] & names[2] or names[0] & names[2])
    assert len(set().union(*names)) == 8
