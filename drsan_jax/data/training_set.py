"""Training images: HR/LR pairs from folders, DIV2K or TFDS, decoded once into a cache.

`--config.train_data` is a comma-separated list of sources:

- a folder of HR images (PNG, BMP, JPEG, TIFF), e.g. `../shared/data/train/T91`: the LR images
  are made with the project's MATLAB-compatible bicubic (`resize.bicubic_downscale`);
- a DIV2K folder in its usual layout, `<root>/DIV2K_train_HR/0001.png`, with the official
  `<root>/DIV2K_train_LR_bicubic/X<s>/0001x<s>.png` used when that folder exists;
- `tfds:div2k` (the TensorFlow Datasets builder, config `bicubic_x<s>`; or name the config, as in
  `tfds:div2k/unknown_x4`), which needs the optional `tensorflow-datasets` package.

`load_training_set` decodes every image once, turns it into 8-bit RGB (grey repeated, alpha
dropped), makes its LR image if none is given, and stores both as `.npy` files in a cache folder,
keyed by the source file's path, size and modification time. Later runs, and every run after the
first, only open those files memory-mapped: no decoding in the training loop, and memory bounded
by the operating system's page cache rather than the dataset size. Images whose LR side is
smaller than a patch are skipped with a warning that names them; files that are no images stop
the run before anything starts (`check_training_data`, from their first bytes), and files that
cannot be decoded stop it before training, with one error that names them. In a multi-host run
each host reads its own shard of every source (every `process_count`-th image).
`sampler.PatchSampler` cuts the patches.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from absl import logging

from drsan_jax import files
from drsan_jax.data import image_io, resize

DIV2K_HR = "DIV2K_train_HR"
DIV2K_LR = "DIV2K_train_LR_bicubic"
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class TrainingPair:
    """One training image, memory-mapped from the cache.

    Attributes:
      name: where it came from (a file path or a TFDS record), for messages.
      gt: (H', W', 3) uint8 ground truth, H' >= H * scale and W' >= W * scale; the sampler only
        reads its top-left (H * scale, W * scale) corner, which is what the LR image covers.
      lq: (H, W, 3) uint8 low-quality input.
      teacher: (H * scale, W * scale, 3) uint8, a teacher model's output on `lq` for
        distillation (`training.teacher`), or None.
    """

    name: str
    gt: np.ndarray
    lq: np.ndarray
    teacher: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """The image pairs this host trains on.

    Attributes:
      pairs: the usable pairs, in a fixed order.
      scale: the super-resolution factor.
      fingerprint: a hash of the pairs' cache keys; it changes when the data does.
      skipped: names of the images left out because they are smaller than a patch.
    """

    pairs: tuple[TrainingPair, ...]
    scale: int
    fingerprint: str
    skipped: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Source:
    """One image of a folder source, not yet read."""

    name: str
    key: str  # identity in the cache: path, size and mtime of the file(s), and the scale
    read_gt: Callable[[], np.ndarray]
    read_lq: Callable[[], np.ndarray] | None  # None: make LR with bicubic


# Listed by name in an error; the rest are counted.
_NAMED = 5
# What `--config.train_data` takes, for the message when it is missing.
_EXPECTED_SOURCES = (
    "comma-separated folders of HR images (e.g. --config.train_data=../shared/data/train/T91,"
    "../shared/data/train/BSD200), a DIV2K folder holding DIV2K_train_HR/, or tfds:div2k")


def _some(names: list[str]) -> str:
    more = len(names) - _NAMED
    return "; ".join(names[:_NAMED]) + (f" (and {more} more)" if more > 0 else "")


def check_training_data(spec: str | None) -> None:
    """Checks `--config.train_data` before any work starts, without decoding an image.

    Every folder must exist and hold images, each starting like a PNG, BMP, JPEG or TIFF file
    (`image_io.check_image_file`: 8 bytes a file). TFDS sources are checked when prepared.

    Raises:
      FileNotFoundError: a folder that does not exist.
      ValueError: no source at all, a folder without images, or files that are no images (named,
        all in one line).
    """
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--config.train_data is not set: give {_EXPECTED_SOURCES}")
    bad, total = [], 0
    for part in parts:
        if part.startswith(TFDS_PREFIX):
            continue
        folder = Path(part)
        if not folder.is_dir():
            raise FileNotFoundError(f"--config.train_data: {folder} is not a folder (expected "
                                    f"{_EXPECTED_SOURCES})")
        hr = folder / DIV2K_HR if (folder / DIV2K_HR).is_dir() else folder
        try:
            paths = image_io.list_images(hr)
        except ValueError as e:
            raise ValueError(f"--config.train_data: {e}") from None
        total += len(paths)
        for path in paths:
            try:
                image_io.check_image_file(path)
            except image_io.ImageReadError:
                bad.append(str(path))
    if bad:
        raise ValueError(f"--config.train_data: {len(bad)} of {total} training files are not "
                         f"PNG, BMP, JPEG or TIFF images; remove or replace them: {_some(bad)}")


def load_training_set(
    spec: str,
    scale: int,
    patch_size: int,
    cache_dir: str | os.PathLike,
    process_index: int = 0,
    process_count: int = 1,
    workers: int = 2,
) -> TrainingSet:
    """Finds, prepares (once) and opens this host's share of the training images.

    Args:
      spec: `--config.train_data`, comma-separated sources (see the module docstring).
      scale: the super-resolution factor.
      patch_size: the LR patch side; smaller images are skipped.
      cache_dir: where the decoded HR and the LR images are stored as `.npy` files.
      process_index: this host's index in a multi-host run.
      process_count: the number of hosts; each takes every `process_count`-th image of every
        source, starting at its own index.
      workers: threads that decode and downscale images during the first preparation.

    Returns:
      The usable pairs of this host, memory-mapped.

    Raises:
      FileNotFoundError: a source folder does not exist.
      ValueError: an empty or malformed source, unreadable images (all of them listed), or no
        image large enough for a patch.
    """
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--config.train_data is not set: give {_EXPECTED_SOURCES}")
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    folder_sources, tfds_parts = [], []
    for part in parts:
        if part.startswith(TFDS_PREFIX):
            tfds_parts.append(part)
        else:
            sources = _folder_sources(Path(part), scale)
            folder_sources += sources[process_index::process_count]
    prepared = _prepare_folder_sources(folder_sources, scale, patch_size, cache, workers)
    for part in tfds_parts:
        prepared += _prepare_tfds(part, scale, patch_size, cache, process_index, process_count)
    usable = [(name, key, paths) for name, key, paths in prepared if paths is not None]
    skipped = tuple(name for name, _, paths in prepared if paths is None)
    if skipped:
        logging.warning(
            "skipping %d training image(s) whose LR image is smaller than the %dx%d patch "
            "(--config.patch_size=%d at x%d): %s", len(skipped), patch_size, patch_size,
            patch_size, scale, ", ".join(skipped))
    if not usable:
        raise ValueError(
            f"--config.train_data={spec!r} has no image (on host {process_index} of "
            f"{process_count}) with an LR side of at least --config.patch_size={patch_size} "
            f"at x{scale}"
        )
    pairs = tuple(
        TrainingPair(name, np.load(gt, mmap_mode="r"), np.load(lq, mmap_mode="r"))
        for name, _, (gt, lq) in usable
    )
    fingerprint = hashlib.sha1("\n".join(key for _, key, _ in usable).encode()).hexdigest()
    return TrainingSet(pairs, scale, fingerprint, skipped)


def _folder_sources(folder: Path, scale: int) -> list[_Source]:
    """The images of an HR folder or a DIV2K root, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--config.train_data: {folder} is not a folder (expected {_EXPECTED_SOURCES})")
    if (folder / DIV2K_HR).is_dir():
        return _div2k_sources(folder, scale)
    return [
        _Source(str(p), f"{files.file_key(p)}|x{scale}", _reader(p), None)
        for p in image_io.list_images(folder)
    ]


def _div2k_sources(root: Path, scale: int) -> list[_Source]:
    """DIV2K's HR images, paired with the official bicubic LR images when they are present."""
    hr_paths = image_io.list_images(root / DIV2K_HR)
    lr_folder = root / DIV2K_LR / f"X{scale}"
    if not lr_folder.is_dir():
        logging.info("DIV2K at %s has no %s; making the x%d LR images with bicubic",
                     root, lr_folder.relative_to(root), scale)
        return [_Source(str(p), f"{files.file_key(p)}|x{scale}", _reader(p), None)
                for p in hr_paths]
    sources = []
    for p in hr_paths:
        lq_path = lr_folder / f"{p.stem}x{scale}{p.suffix}"
        if not lq_path.is_file():
            raise FileNotFoundError(
                f"DIV2K LR image {lq_path} is missing for {p}; complete {lr_folder} or remove it "
                f"to make the LR images with bicubic"
            )
        key = f"{files.file_key(p)}|{files.file_key(lq_path)}|x{scale}"
        sources.append(_Source(f"{p} + {lq_path.name}", key, _reader(p), _reader(lq_path)))
    return sources


def _reader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: image_io.to_rgb_uint8(image_io.read_image(path))


def _cache_paths(cache: Path, key: str, scale: int) -> tuple[Path, Path]:
    digest = hashlib.sha1(key.encode()).hexdigest()[:24]
    return cache / f"{digest}.gt.npy", cache / f"{digest}.x{scale}.npy"


def _write_pair(
    name: str, gt: np.ndarray, lq: np.ndarray | None, scale: int, paths: tuple[Path, Path]
) -> None:
    """Checks an HR/LR pair (making LR if needed) and stores both in the cache."""
    if lq is None:
        if min(gt.shape[:2]) < scale:
            raise ValueError(f"training image {name} ({gt.shape[1]}x{gt.shape[0]}) is smaller "
                             f"than the scale {scale}")
        lq = resize.bicubic_downscale(gt, scale)
    elif gt.shape[0] < lq.shape[0] * scale or gt.shape[1] < lq.shape[1] * scale:
        raise ValueError(
            f"training image {name}: HR {gt.shape[:2]} is smaller than LR {lq.shape[:2]} "
            f"times the scale {scale}"
        )
    # Whole files only: a run stopped here, or another host, never finds half an entry.
    for path, image in zip(paths, (gt, lq)):
        array = np.ascontiguousarray(image)
        files.atomic_write(path, lambda tmp: np.save(tmp, array))


def _prepare_folder_sources(
    sources: list[_Source], scale: int, patch_size: int, cache: Path, workers: int
) -> list[tuple[str, str, tuple[Path, Path] | None]]:
    """Makes the cache entries that are missing; returns (name, key, paths or None if small)."""

    def prepare(source: _Source) -> tuple[Path, Path] | None:
        # Small images are cached too: a later run with smaller patches may use them, and
        # this run should not decode them again to find out that they are small.
        paths = _cache_paths(cache, source.key, scale)
        if not (paths[0].is_file() and paths[1].is_file()):
            _write_pair(source.name, source.read_gt(),
                        source.read_lq() if source.read_lq else None, scale, paths)
        lq_shape = np.load(paths[1], mmap_mode="r").shape
        return paths if min(lq_shape[:2]) >= patch_size else None

    missing = sum(not _cache_paths(cache, s.key, scale)[1].is_file() for s in sources)
    if missing:
        logging.info("preparing %d of %d training images at x%d into %s (done once)",
                     missing, len(sources), scale, cache)
    results, unreadable = [], []
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        for source, future in [(s, pool.submit(prepare, s)) for s in sources]:
            try:
                results.append((source.name, source.key, future.result()))
            except ValueError as e:  # ImageReadError included; every message names the file
                unreadable.append(str(e))
    if unreadable:
        raise ValueError(
            f"--config.train_data: {len(unreadable)} training image(s) cannot be used; remove "
            f"or replace them: {_some(unreadable)}"
        )
    return results


def _prepare_tfds(
    part: str, scale: int, patch_size: int, cache: Path, process_index: int, process_count: int
) -> list[tuple[str, str, tuple[Path, Path] | None]]:
    """Caches this host's shard of a TFDS super-resolution dataset (HR `hr`, LR `lr`)."""
    name, _, config = part[len(TFDS_PREFIX):].partition("/")
    if name != "div2k":
        raise ValueError(f"--config.train_data: {part!r} is not supported; use tfds:div2k")
    config = config or f"bicubic_x{scale}"
    if not config.endswith(f"_x{scale}"):
        raise ValueError(
            f"--config.train_data={part!r} holds x{config.rpartition('_x')[2]} LR images but "
            f"--config.scale={scale}; use tfds:div2k (picks bicubic_x{scale}) or a matching config"
        )
    manifest = cache / f"tfds-{name}-{config}-train-host{process_index}of{process_count}.json"
    if manifest.is_file():
        entries = json.loads(manifest.read_text())
    else:
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise ImportError(
                f"--config.train_data={part!r} needs tensorflow-datasets: "
                f"pip install tensorflow-datasets tensorflow-cpu"
            ) from None
        logging.info("preparing TFDS %s/%s (host %d of %d) into %s (done once)",
                     name, config, process_index, process_count, cache)
        entries = []
        dataset = tfds.load(f"{name}/{config}", split="train", shuffle_files=False)
        for index, example in enumerate(tfds.as_numpy(dataset)):
            if index % process_count != process_index:
                continue
            key = f"tfds:{name}/{config}:train:{index}"
            paths = _cache_paths(cache, key, scale)
            gt = image_io.to_rgb_uint8(np.asarray(example["hr"]))
            lq = image_io.to_rgb_uint8(np.asarray(example["lr"]))
            _write_pair(key, gt, lq, scale, paths)
            entries.append([key, str(paths[0]), str(paths[1]), list(lq.shape[:2])])
        files.write_json(manifest, entries, indent=None)
    return [
        (key, key, (Path(gt), Path(lq)) if min(size) >= patch_size else None)
        for key, gt, lq, size in entries
    ]


__all__ = [
    "DIV2K_HR",
    "DIV2K_LR",
    "TrainingPair",
    "TrainingSet",
    "check_training_data",
    "load_training_set",
]
