"""Benchmark pairs: which datasets a benchmark folder holds, their HR/LR pairs, read and cached.

A benchmark folder holds `HR/<name>/` (ground truth) and `x<s>/<name>/` (the MATLAB-bicubic LR
images at scale s); LR files pair with HR files by name (`baby.png` or `babyx2.png` for
`baby.png`). When `x<s>/<name>/` is missing, the LR images are made from HR with the project's
MATLAB-compatible `bicubic_downscale`, which reproduces the released LR files bit for bit.

`load_pair` returns images as they are scored (uint8, grey kept grey) and keeps them in a
memory-bounded cache keyed by each file's path, size and modification time, so repeated
evaluations (training validates often) decode nothing twice, and a changed file is read again.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from drsan_jax.data.image_io import list_images, read_image, to_rgb_uint8
from drsan_jax.data.resize import bicubic_downscale
from drsan_jax.files import file_key

BENCHMARK_DIR_ENV = "DRSAN_BENCHMARK_DIR"
# The order of the published tables; other datasets follow alphabetically.
TABLE_ORDER = ("Set5", "Set14", "B100", "BSD100", "Urban100", "Manga109", "DIV2K")
# Decoded images kept between calls; the standard benchmarks at one scale need well under this.
CACHE_BYTES = 1 << 30


class BenchmarkError(ValueError):
    """A benchmark folder that is missing or not laid out as expected; the message says where."""


@dataclasses.dataclass(frozen=True)
class ImagePair:
    """One ground-truth image and its low-quality input.

    Attributes:
      stem: the HR file name without extension; the key of the per-image results.
      gt_path: the HR image.
      lq_path: the LR image, or None when it is made from HR by `bicubic_downscale`.
    """

    stem: str
    gt_path: Path
    lq_path: Path | None


def default_data_dir(repo_root: str | os.PathLike) -> Path:
    """The benchmark folder to use when none is given.

    Args:
      repo_root: the checkout, beside which `shared/data/benchmark` may sit.

    Returns:
      $DRSAN_BENCHMARK_DIR if set, else `<repo_root>/../shared/data/benchmark` if it exists.

    Raises:
      BenchmarkError: neither exists.
    """
    if os.environ.get(BENCHMARK_DIR_ENV):
        path = Path(os.environ[BENCHMARK_DIR_ENV])
        if not path.is_dir():
            raise BenchmarkError(f"${BENCHMARK_DIR_ENV} is {path}, which is not a folder")
        return path
    path = Path(repo_root).resolve().parent / "shared" / "data" / "benchmark"
    if not path.is_dir():
        raise BenchmarkError(
            f"no benchmark folder given and none found at {path}: pass --data_dir DIR (a folder "
            f"holding HR/<name>/ and x<scale>/<name>/) or set ${BENCHMARK_DIR_ENV}"
        )
    return path


def find_datasets(data_dir: str | os.PathLike) -> list[str]:
    """The dataset names under `data_dir/HR`, in the order of the published tables."""
    hr_root = Path(data_dir) / "HR"
    if not hr_root.is_dir():
        raise BenchmarkError(
            f"{data_dir} is not a benchmark folder: it has no HR/ subfolder (expected "
            f"HR/<name>/ and x<scale>/<name>/, e.g. HR/Set5/ and x2/Set5/)"
        )
    names = [p.name for p in hr_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    rank = {name: i for i, name in enumerate(TABLE_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def pair_images(data_dir: str | os.PathLike, name: str, scale: int) -> list[ImagePair]:
    """Pairs the HR images of a dataset with their LR partners at `scale`.

    Args:
      data_dir: the benchmark folder.
      name: the dataset, a folder under `data_dir/HR`.
      scale: the SR factor; LR images come from `data_dir/x<scale>/<name>`, or are made from HR
        when that folder does not exist.

    Returns:
      The pairs, sorted by HR file name.

    Raises:
      BenchmarkError: the dataset is not there (the message lists those that are), or an
        image has no partner.
    """
    found = find_datasets(data_dir)
    if name not in found:
        raise BenchmarkError(
            f"dataset {name!r} not found in {Path(data_dir) / 'HR'}; found: "
            f"{', '.join(found) or 'nothing'}"
        )
    hr_dir = Path(data_dir) / "HR" / name
    lq_dir = Path(data_dir) / f"x{scale}" / name
    gt_paths = _by_stem(list_images(hr_dir))
    if not lq_dir.is_dir():
        return [ImagePair(stem, path, None) for stem, path in gt_paths.items()]
    lq_paths = _by_stem(list_images(lq_dir))
    pairs, used, missing_lq = [], set(), []
    for stem, gt_path in gt_paths.items():
        partner = next((s for s in (stem, f"{stem}x{scale}") if s in lq_paths), None)
        if partner is None:
            missing_lq.append(gt_path.name)
        else:
            pairs.append(ImagePair(stem, gt_path, lq_paths[partner]))
            used.add(partner)
    if missing_lq:
        raise BenchmarkError(
            f"{lq_dir} has no LR partner for {_some(missing_lq)} of {hr_dir} (an LR image pairs "
            f"with HR <stem>.<ext> when it is named <stem> or <stem>x{scale})"
        )
    missing_gt = [path.name for stem, path in lq_paths.items() if stem not in used]
    if missing_gt:
        raise BenchmarkError(f"{hr_dir} has no HR partner for {_some(missing_gt)} of {lq_dir}")
    return pairs


def _by_stem(paths: list[Path]) -> dict[str, Path]:
    """Image paths by file stem; two files with one stem (baby.png, baby.bmp) are an error."""
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise BenchmarkError(f"{stems[path.stem]} and {path} have the same name; keep one")
        stems[path.stem] = path
    return stems


def _some(names: list[str], limit: int = 5) -> str:
    """'a.png, b.png' or 'a.png, ... (12 images)': a short list for an error message."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} images)"


class _ImageCache:
    """Decoded images, least recently used dropped first once they exceed `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._bytes = 0

    def get(self, key: tuple, load: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        value.setflags(write=False)  # shared between calls: nobody may change it
        self._items[key] = value
        self._bytes += value.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.nbytes
        return value


_CACHE = _ImageCache(CACHE_BYTES)


def _read_scored(path: Path) -> np.ndarray:
    """An image as scored: uint8, HxW if stored grey, else HxWx3 (16-bit scaled, alpha dropped)."""
    return _CACHE.get(("image", file_key(path)), lambda: _scored_layout(read_image(path)))


def _scored_layout(image: np.ndarray) -> np.ndarray:
    rgb = to_rgb_uint8(image)
    return rgb[..., 0].copy() if image.ndim == 2 or image.shape[2] == 1 else rgb


def load_pair(pair: ImagePair, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Reads (lq, gt) of a pair as uint8 (HxW grey or HxWx3), both read-only and cached.

    Raises:
      ImageReadError: a file cannot be read (the message names it).
      BenchmarkError: the LR size is not the HR size divided by `scale` (rounded down).
    """
    gt = _read_scored(pair.gt_path)
    if pair.lq_path is None:
        lq = _CACHE.get(("x", scale, file_key(pair.gt_path)),
                        lambda: bicubic_downscale(gt, scale))
        return lq, gt
    lq = _read_scored(pair.lq_path)
    expected = (gt.shape[0] // scale, gt.shape[1] // scale)
    if lq.shape[:2] != expected:
        raise BenchmarkError(
            f"{pair.lq_path} is {lq.shape[1]}x{lq.shape[0]} but its HR image {pair.gt_path} is "
            f"{gt.shape[1]}x{gt.shape[0]}, whose x{scale} LR is {expected[1]}x{expected[0]}: "
            f"is this the x{scale} folder?"
        )
    return lq, gt


__all__ = [
    "BENCHMARK_DIR_ENV",
    "CACHE_BYTES",
    "BenchmarkError",
    "ImagePair",
    "TABLE_ORDER",
    "default_data_dir",
    "find_datasets",
    "load_pair",
    "pair_images",
]
