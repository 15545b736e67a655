"""Random aligned LR/HR patch pairs for training, resumable at any step.

`PatchSampler` draws patches from a `training_set.TrainingSet` with one of the 8 flips and
quarter turns (`transforms.transform`, the same transforms as the self-ensemble). The batch of
step t is a pure function of (seed, host, t), so a resumed run sees exactly the batches it would
have seen, and background threads may prepare batches ahead in any order.
`MultiScaleSampler` adds a scale drawn per step for the multi-scale models (MDSR, LESRCNN-S).
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from drsan_jax.data.training_set import TrainingSet
from drsan_jax.data.transforms import NUM_TRANSFORMS, transform

# Purposes of the random streams. A host's crops and order are seeded by (seed, host, purpose,
# counter); the scale of a multi-scale step by (seed, purpose, step), the same on every host.
_CROPS, _ORDER, _SCALES = 0, 1, 2


class PatchSampler:
    """Random aligned LR/HR patch pairs; the batch of a step is a pure function of the step.

    Images are visited in a fresh random order every epoch (each image once per epoch, as the
    EDSR-family code does); each patch has a uniformly random position and one of the 8
    flips/rotations, applied identically to LR and HR.
    """

    def __init__(
        self, dataset: TrainingSet, batch_size: int, patch_size: int, seed: int,
        process_index: int = 0,
    ):
        """Creates a sampler.

        Args:
          dataset: this host's training pairs.
          batch_size: pairs per batch on this host.
          patch_size: LR patch side; HR patches are `patch_size * dataset.scale`.
          seed: `--config.seed`.
          process_index: this host's index; hosts draw independent streams.
        """
        self.dataset = dataset
        self.batch_size = batch_size
        self.patch_size = patch_size
        self.seed = seed
        self.process_index = process_index

    def _rng(self, purpose: int, counter: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.process_index, purpose, counter))

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch of training step `step` (0-based).

        Returns:
          {"lq": (B, p, p, 3) uint8, "gt": (B, p*s, p*s, 3) uint8}, and "teacher" (cut as "gt")
          when the pairs carry a teacher's outputs.
        """
        p, s, b = self.patch_size, self.dataset.scale, self.batch_size
        num_images = len(self.dataset.pairs)
        lq = np.empty((b, p, p, 3), np.uint8)
        gt = np.empty((b, p * s, p * s, 3), np.uint8)
        distilled = self.dataset.pairs[0].teacher is not None
        teacher = np.empty_like(gt) if distilled else None
        rng = self._rng(_CROPS, step)
        orders: dict[int, np.ndarray] = {}
        for i in range(b):
            epoch, position = divmod(step * b + i, num_images)
            if epoch not in orders:
                orders[epoch] = self._rng(_ORDER, epoch).permutation(num_images)
            pair = self.dataset.pairs[orders[epoch][position]]
            h, w = pair.lq.shape[:2]
            y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
            k = int(rng.integers(NUM_TRANSFORMS))
            lq[i] = transform(pair.lq[y:y + p, x:x + p], k)
            gt[i] = transform(pair.gt[y * s:(y + p) * s, x * s:(x + p) * s], k)
            if distilled:
                teacher[i] = transform(pair.teacher[y * s:(y + p) * s, x * s:(x + p) * s], k)
        return {"lq": lq, "gt": gt} if teacher is None else {"lq": lq, "gt": gt,
                                                            "teacher": teacher}

    def batches(self, start_step: int, workers: int = 2, prefetch: int = 8
                ) -> Iterator[dict[str, np.ndarray]]:
        """Yields the batches of steps start_step, start_step + 1, ..., prepared ahead.

        Args:
          start_step: the first step to yield (the step a run starts or resumes at).
          workers: background threads that cut patches.
          prefetch: batches prepared ahead of the one being consumed.

        Yields:
          The same batches as `batch(step)`, in step order.
        """
        return _prefetched(self.batch, start_step, workers, prefetch)

    def state(self, next_step: int) -> dict[str, Any]:
        """What a checkpoint stores to resume the stream: it restarts at `next_step`.

        The random streams are seeded by (seed, host, purpose, step or epoch), so the seed and
        the step determine every later batch; the rest identifies the data they index.
        """
        return {
            "next_step": int(next_step),
            "seed": int(self.seed),
            "rng": "numpy default_rng((seed, host, 0, step)) crops, ((seed, host, 1, epoch)) order",
            "batch_size_per_host": int(self.batch_size),
            "patch_size": int(self.patch_size),
            "scale": int(self.dataset.scale),
            "num_images": len(self.dataset.pairs),
            "fingerprint": self.dataset.fingerprint,
        }

    def check_resume(self, saved: dict[str, Any]) -> None:
        """Warns when a checkpoint's sampler state does not describe this sampler.

        Resuming still works (the stream restarts at the saved step), but the batches are no
        longer those of an uninterrupted run.
        """
        current = self.state(saved.get("next_step", 0))
        changed = sorted(k for k in current if k != "rng" and saved.get(k) != current[k])
        if changed:
            logging.warning(
                "resuming with a different data stream than the checkpoint's (%s): batches "
                "will differ from those of an uninterrupted run",
                ", ".join(f"{k}: {saved.get(k)} -> {current[k]}" for k in changed))


def _prefetched(batch: Callable[[int], dict[str, Any]], start_step: int, workers: int,
                prefetch: int) -> Iterator[dict[str, Any]]:
    """Yields batch(start_step), batch(start_step + 1), ..., computed ahead by threads."""
    pool = concurrent.futures.ThreadPoolExecutor(
        max(1, workers), thread_name_prefix="drsan-patches")
    try:
        ahead = max(1, prefetch)
        pending = collections.deque(
            pool.submit(batch, step) for step in range(start_step, start_step + ahead))
        next_step = start_step + ahead
        while True:
            result = pending.popleft().result()
            pending.append(pool.submit(batch, next_step))
            next_step += 1
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class MultiScaleSampler:
    """Single-scale batches whose scale is drawn uniformly per step (MDSR, LESRCNN-S).

    The scale of step t is a pure function of (seed, t), the same on every host, so a resumed
    run draws the scales an uninterrupted one would; the batch itself is the step-t batch of
    that scale's `PatchSampler`.
    """

    def __init__(self, samplers: dict[int, PatchSampler], seed: int):
        """Creates a sampler.

        Args:
          samplers: scale -> the `PatchSampler` of that scale's training pairs.
          seed: `--config.seed`.
        """
        self.samplers = dict(sorted(samplers.items()))
        self.scales = tuple(self.samplers)
        self.seed = seed

    def scale_of(self, step: int) -> int:
        """The scale of training step `step` (0-based)."""
        rng = np.random.default_rng((self.seed, _SCALES, step))
        return self.scales[int(rng.integers(len(self.scales)))]

    def batch(self, step: int) -> dict[str, Any]:
        """{"lq", "gt", "scale"}: the step's batch at its scale (see `PatchSampler.batch`)."""
        scale = self.scale_of(step)
        return {**self.samplers[scale].batch(step), "scale": scale}

    def batches(self, start_step: int, workers: int = 2, prefetch: int = 8
                ) -> Iterator[dict[str, Any]]:
        """Yields `batch(step)` from `start_step` on, prepared ahead (see `PatchSampler`)."""
        return _prefetched(self.batch, start_step, workers, prefetch)

    def state(self, next_step: int) -> dict[str, Any]:
        """What a checkpoint stores: each scale's sampler state (see `PatchSampler.state`)."""
        return {"next_step": int(next_step), "seed": int(self.seed),
                "scales": {str(s): sampler.state(next_step)
                           for s, sampler in self.samplers.items()}}

    def check_resume(self, saved: dict[str, Any]) -> None:
        """Warns when a checkpoint's sampler states do not describe these samplers."""
        saved_scales = saved.get("scales", {})
        for scale, sampler in self.samplers.items():
            sampler.check_resume(saved_scales.get(str(scale), {}))


__all__ = ["MultiScaleSampler", "PatchSampler"]
