"""Shared test fixtures: where the real benchmark and training images live, small copies of
them for training runs, and the configs/ folder."""

import os
import sys
from pathlib import Path

import jax
import pytest

from drsan_jax import image_io

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """The shared data folder: $DRSAN_DATA_DIR, else ../shared/data beside the checkout.

    Missing data skips the tests that need it on a developer's machine, but fails them under CI
    (CI=true), where a skip would hide that nothing was checked.
    """
    path = Path(os.environ.get("DRSAN_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "benchmark").is_dir():
        message = f"shared data not found at {path} (set DRSAN_DATA_DIR)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (see `shared_data_dir`)."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def benchmark_dir(shared_data: Path) -> Path:
    """`<shared data>/benchmark`: HR/<name>/ and x<s>/<name>/ for Set5, Set14, B100."""
    return shared_data / "benchmark"


CACHE_OPTIONS = {"jax_compilation_cache_dir": None, "jax_persistent_cache_min_compile_time_secs": 0,
                 "jax_persistent_cache_min_entry_size_bytes": 0}


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """JAX's persistent compilation cache, for the module that asks for it only.

    A module whose every run builds a fresh train state traces its train step again each time;
    the cache turns the recompilation of an identical program (also in the train.py subprocess, through
    JAX_COMPILATION_CACHE_DIR) into a lookup. Nothing else changes: the same code runs.
    """
    options = {**CACHE_OPTIONS, "jax_compilation_cache_dir": str(tmp_path_factory.mktemp("xla"))}
    saved = {name: getattr(jax.config, name) for name in options}
    for name, value in options.items():
        jax.config.update(name, value)
    yield options["jax_compilation_cache_dir"]
    for name, value in saved.items():
        jax.config.update(name, value)


@pytest.fixture(scope="session")
def configs_module():
    """The configs/ folder importable as `configs`, as it is for train.py at the repo root."""
    sys.path.insert(0, str(REPO))
    from configs import default

    yield default
    sys.path.remove(str(REPO))


@pytest.fixture(scope="session")
def train_images(shared_data, tmp_path_factory):
    """Four real T91 images in a folder of their own, and a shared LR cache folder."""
    root = tmp_path_factory.mktemp("train")
    for path in sorted((shared_data / "train" / "T91").glob("*.bmp"))[:4]:
        (root / "hr").mkdir(exist_ok=True)
        (root / "hr" / path.name).symlink_to(path)
    return root


@pytest.fixture(scope="session")
def benchmark(benchmark_dir, tmp_path_factory):
    """A Set5 of 48x48 crops of the real Set5: one image size, so validation compiles once.

    Without x2/ the LR images are made by the evaluation code's MATLAB-compatible bicubic.
    """
    root = tmp_path_factory.mktemp("benchmark")
    for path in sorted((benchmark_dir / "HR" / "Set5").glob("*.png")):
        image = image_io.read_image(path)
        image_io.write_image(root / "HR" / "Set5" / path.name, image[100:148, 100:148])
    return root
