"""Distillation targets (`--config.teacher`): a stronger model's outputs, computed once.

With a teacher, the training loss mixes two targets: `(1 - w) * loss(sr, hr) + w *
loss(sr, teacher)`, with `w = --config.teacher_weight`. The teacher (any model `drsan-jax`
loads: a shipped name, a workdir, a weights file such as the LESRCNN authors' `lesrcnn_x2.pth`)
upscales every whole LR training image once, before the first step. Its outputs, rounded to
8 bits as a saved picture would be, are stored beside the training cache and cropped with the
patches, so a step costs what it costs without a teacher.

Each stored output is named by a hash of the teacher (its model configuration and every
parameter's bytes) and of the LR image it was computed from, so a changed image or another
teacher computes it again, and the files of an interrupted first pass are reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging

from drsan_jax import files
from drsan_jax.data import TrainingSet, quantize
from drsan_jax.inference import Predictor
from drsan_jax.models import flatten, model_name
from drsan_jax.weights import loading


def _teacher_identity(config: dict, params) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, value in sorted(flatten(jax.device_get(params)).items()):
        digest.update(name.encode() + np.ascontiguousarray(value, np.float32).tobytes())
    return digest.hexdigest()[:24]


def with_teacher_outputs(dataset: TrainingSet, spec: str, cache_dir: str | Path
                         ) -> TrainingSet:
    """`dataset` with each pair's `teacher` image: the teacher's output on its LR image.

    Args:
      dataset: the training pairs (one scale).
      spec: `--config.teacher`, anything `loading.load_model` accepts.
      cache_dir: where the outputs are stored (`<cache_dir>/teacher/`).

    Returns:
      The same pairs, each with `teacher` (lq height * scale, lq width * scale, 3) uint8,
      memory-mapped.

    Raises:
      ValueError: the teacher cannot be read, or does not upscale by the dataset's scale.
    """
    try:
        loaded = loading.load_model(spec, scale=dataset.scale)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"--config.teacher={spec!r}: {e}") from None
    if loaded.scale != dataset.scale:
        raise ValueError(f"--config.teacher={spec!r} is a x{loaded.scale} model; this run "
                         f"trains x{dataset.scale}")
    identity = _teacher_identity(loaded.config, loaded.params)
    folder = Path(cache_dir).expanduser() / "teacher"
    folder.mkdir(parents=True, exist_ok=True)

    def path_of(lq: np.ndarray) -> Path:
        digest = hashlib.sha1(identity.encode() + str(lq.shape).encode()
                              + np.ascontiguousarray(lq).tobytes()).hexdigest()[:24]
        return folder / f"{digest}.x{dataset.scale}.npy"

    paths = [path_of(pair.lq) for pair in dataset.pairs]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        logging.info("teacher %s (%s): upscaling %d of %d training images once into %s",
                     model_name(loaded.config), spec, len(missing), len(paths), folder)
        predictor = Predictor(loaded.model, loaded.params)
        start = last = time.perf_counter()
        for done, i in enumerate(missing, 1):
            out = quantize(predictor(dataset.pairs[i].lq))
            files.atomic_write(paths[i], lambda tmp, out=out: np.save(tmp, out))
            if time.perf_counter() - last > 30 or done == len(missing):
                last = time.perf_counter()
                logging.info("teacher: %d/%d images in %.0f s", done, len(missing),
                             last - start)
    pairs = []
    for pair, path in zip(dataset.pairs, paths):
        out = np.load(path, mmap_mode="r")
        h, w = pair.lq.shape[:2]
        if out.shape != (h * dataset.scale, w * dataset.scale, 3):
            raise ValueError(f"teacher output {path} has shape {out.shape}, expected "
                             f"{(h * dataset.scale, w * dataset.scale, 3)} for {pair.name}; "
                             f"delete it to compute it again")
        pairs.append(dataclasses.replace(pair, teacher=out))
    return dataclasses.replace(dataset, pairs=tuple(pairs))


__all__ = ["with_teacher_outputs"]
