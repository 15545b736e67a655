"""Tests for drsan_jax.data: sources, the LR cache, and the resumable patch sampler."""

import sys
import types

import numpy as np
import pytest

from drsan_jax import data, image_io, resize

SCALE = 2


@pytest.fixture(scope="module")
def photos(shared_data):
    """Real training images: three T91 BMPs and one BSD200 PNG, as 8-bit RGB."""
    paths = sorted((shared_data / "train" / "T91").glob("*.bmp"))[:3]
    paths += sorted((shared_data / "train" / "BSD200").glob("*.png"))[:1]
    return {p.name: image_io.to_rgb_uint8(image_io.read_image(p)) for p in paths}


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


def test_bad_sources_say_what_was_expected(tmp_path, photos):
    with pytest.raises(FileNotFoundError, match="nowhere.*tfds:div2k"):
        data.load_training_set(str(tmp_path / "nowhere"), SCALE, 16, tmp_path / "cache")
    with pytest.raises(ValueError, match="train_data is empty"):
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


def _block_dataset(images, scale):
    """Pairs whose HR repeats each LR pixel in an s x s block, so alignment is checkable."""
    pairs = []
    for name, image in images.items():
        lq = image[:40, :52]
        gt = np.repeat(np.repeat(lq, scale, axis=0), scale, axis=1)
        pairs.append(data.TrainingPair(name, gt, lq))
    return data.TrainingSet(tuple(pairs), scale, "blocks")


@pytest.mark.parametrize("scale", [2, 3])
def test_patches_are_aligned(photos, scale):
    sampler = data.PatchSampler(_block_dataset(photos, scale), batch_size=8, patch_size=10, seed=0)
    for step in range(4):
        batch = sampler.batch(step)
        assert batch["lq"].shape == (8, 10, 10, 3) and batch["lq"].dtype == np.uint8
        assert batch["gt"].shape == (8, 10 * scale, 10 * scale, 3)
        np.testing.assert_array_equal(
            batch["gt"], np.repeat(np.repeat(batch["lq"], scale, axis=1), scale, axis=2))


def test_patches_use_all_eight_flips_and_rotations():
    rows, cols = np.meshgrid(np.arange(40), np.arange(52), indexing="ij")
    coordinates = np.stack([rows, cols, np.zeros_like(rows)], axis=2).astype(np.uint8)
    sampler = data.PatchSampler(_block_dataset({"grid": coordinates}, 2), batch_size=16,
                                patch_size=6, seed=0)
    orientations = set()
    for step in range(4):
        for patch in sampler.batch(step)["lq"].astype(int):
            # A crop of the coordinate grid, moved by a flip/rotation: one step along each patch
            # axis is one step along a distinct image axis.
            down, right = patch[1, 0] - patch[0, 0], patch[0, 1] - patch[0, 0]
            assert sorted(np.abs(down[:2]).tolist() + np.abs(right[:2]).tolist()) == [0, 0, 1, 1]
            orientations.add((tuple(down), tuple(right)))
    assert len(orientations) == 8


def test_each_epoch_visits_every_image_once():
    pairs = tuple(data.TrainingPair(str(i), np.full((24, 24, 3), i, np.uint8),
                                    np.full((12, 12, 3), i, np.uint8)) for i in range(5))
    sampler = data.PatchSampler(data.TrainingSet(pairs, 2, "flat"), batch_size=4, patch_size=6,
                                seed=3)
    images = np.concatenate([sampler.batch(step)["lq"][:, 0, 0, 0] for step in range(5)])
    for epoch in range(4):
        assert sorted(images[5 * epoch:5 * epoch + 5]) == [0, 1, 2, 3, 4]
    assert list(images[:5]) != list(images[5:10])  # a fresh order each epoch


def test_batches_are_a_pure_function_of_seed_host_and_step(photos):
    dataset = _block_dataset(photos, 2)
    sampler = data.PatchSampler(dataset, batch_size=4, patch_size=8, seed=5)
    stream = sampler.batches(start_step=3, workers=3, prefetch=4)
    for step in range(3, 12):
        batch = next(stream)
        for key in ("lq", "gt"):
            np.testing.assert_array_equal(batch[key], sampler.batch(step)[key])
    stream.close()
    same = data.PatchSampler(dataset, batch_size=4, patch_size=8, seed=5)
    np.testing.assert_array_equal(same.batch(7)["lq"], sampler.batch(7)["lq"])
    for other in (data.PatchSampler(dataset, 4, 8, seed=6),
                  data.PatchSampler(dataset, 4, 8, seed=5, process_index=1)):
        assert not np.array_equal(other.batch(7)["lq"], sampler.batch(7)["lq"])


def test_sampler_state_round_trips_and_flags_changed_data(photos, caplog):
    sampler = data.PatchSampler(_block_dataset(photos, 2), batch_size=4, patch_size=8, seed=5)
    state = sampler.state(next_step=42)
    assert state["next_step"] == 42 and state["seed"] == 5
    with caplog.at_level("WARNING"):
        sampler.check_resume(state)
    assert caplog.text == ""
    with caplog.at_level("WARNING"):
        sampler.check_resume({**state, "seed": 4, "fingerprint": "other"})
    assert "fingerprint: other -> blocks" in caplog.text and "seed: 4 -> 5" in caplog.text
