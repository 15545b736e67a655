"""Tests for drsan_jax.data.sampler: aligned patches, all 8 transforms, resumable streams."""

import numpy as np
import pytest

from drsan_jax import data


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
