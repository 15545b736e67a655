"""Shared test fixtures and helpers: where the real images live, small copies of them for
training runs, the configs/ folder, and a tiny DRSAN to run.

Fixtures hold what is set up once and shared (the data folders, a saved tiny checkpoint);
helpers that take arguments are plain functions, imported as `from conftest import ...`.
"""

import os
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from drsan_jax.data import read_image, to_rgb_uint8, write_image
from drsan_jax.models import DRSAN, init_params
from drsan_jax.weights.checkpoints import save_params_for_inference

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The tiny DRSAN of the inference, evaluation and upscaling tests: small enough to compile in
# seconds, with every part (DRM, RSA, fusion) present.
TINY = {"features": 8, "num_blocks": 2, "num_groups": 1}


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


def tiny_model(scale: int, **overrides) -> DRSAN:
    """The tiny DRSAN (`TINY`) at a scale; equal instances share compiled programs."""
    return DRSAN(scale=scale, **{**TINY, **overrides})


def random_params(model: nn.Module, seed: int = 0):
    """Parameters with every bias and PReLU slope random too, so every parameter matters."""
    flat, unravel = jax.flatten_util.ravel_pytree(init_params(model, jax.random.key(seed)))
    return unravel(flat + 0.1 * jax.random.normal(jax.random.key(seed + 1), flat.shape))


class NearestUpsampler(nn.Module):
    """Pixel replication: commutes with every flip and quarter turn, unlike DRSAN."""

    scale: int

    def __call__(self, lq, mask=None):
        return jnp.repeat(jnp.repeat(lq, self.scale, axis=1), self.scale, axis=2)


def save_tiny_checkpoint(path: Path, scale: int = 2, residual: str = "dynamic",
                         step: int = 7) -> Path:
    """Saves the tiny DRSAN with `random_params` as an inference checkpoint at `path`."""
    params = random_params(tiny_model(scale, residual=residual))
    return save_params_for_inference(path, {"scale": scale, "residual": residual, **TINY},
                                     params, step=step)


def lr_crop(benchmark_dir: Path, name: str = "Set14/baboon.png", scale: int = 2,
            size: tuple[int, int] = (45, 61)) -> np.ndarray:
    """An odd-sized crop of a benchmark LR image (uint8, as stored)."""
    return read_image(benchmark_dir / f"x{scale}" / name)[: size[0], : size[1]]


def make_benchmark(root: Path, hr: dict, lq: dict | None = None) -> Path:
    """Writes a benchmark folder: hr {dataset: {file name: image}}, lq {scale: {dataset: ...}}."""
    for name, images in hr.items():
        for file_name, image in images.items():
            write_image(root / "HR" / name / file_name, image)
    for scale, datasets in (lq or {}).items():
        for name, images in datasets.items():
            for file_name, image in images.items():
                write_image(root / f"x{scale}" / name / file_name, image)
    return root


def nearest(image: np.ndarray, scale: int) -> np.ndarray:
    """Pixel replication of an (H, W, ...) image: an HR image whose LR is known exactly."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


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
    the cache turns the recompilation of an identical program (also in the train.py subprocess,
    through JAX_COMPILATION_CACHE_DIR) into a lookup. Nothing else changes: the same code runs.
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
        image = read_image(path)
        write_image(root / "HR" / "Set5" / path.name, image[100:148, 100:148])
    return root


@pytest.fixture(scope="session")
def photos(shared_data: Path) -> dict[str, np.ndarray]:
    """Real training images as 8-bit RGB: three T91 BMPs and one BSD200 PNG, by file name."""
    paths = sorted((shared_data / "train" / "T91").glob("*.bmp"))[:3]
    paths += sorted((shared_data / "train" / "BSD200").glob("*.png"))[:1]
    return {p.name: to_rgb_uint8(read_image(p)) for p in paths}


@pytest.fixture(scope="session")
def lq_rgb() -> np.ndarray:
    """A random (16, 13, 3) uint8 LR image away from the ends of the range."""
    return np.random.default_rng(0).integers(10, 240, (16, 13, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny x2 DRSAN saved once as a checkpoint (step 7), shared by every test using it."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def no_runtime_side_effects(monkeypatch):
    """For code that calls `runtime.configure()` (the upscale CLI): no persistent compilation
    cache written from tests, and one CPU device."""
    monkeypatch.setenv("DRSAN_JAX_CACHE_DIR", "none")
    monkeypatch.setenv("DRSAN_JAX_CPU_DEVICES", "1")


# The tiny training runs (tests/training, tests/benchmarks).
TINY_MODEL = {"features": 8, "num_blocks": 1, "num_groups": 2}
STEPS = 6  # of the reference run


def tiny_training_config(configs_module, train_images, benchmark, **overrides):
    """A locked training config of the tiny `TINY_MODEL` on tiny data, for a run of seconds."""
    config = configs_module.get_config()
    config.model.update(TINY_MODEL)
    config.update(
        train_data=str(train_images / "hr"), cache_dir=str(train_images / "cache"),
        val_data=str(benchmark), val_datasets="", patch_size=8, batch_size=4,
        num_train_steps=STEPS, log_every_steps=2, eval_every_steps=3, checkpoint_every_steps=2,
        data_workers=1, prefetch_batches=2)
    config.update(overrides)
    config.lock()
    return config


def assert_trees_equal(a, b):
    """Every leaf of two trees bit-identical."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# `pytest -m quick`: the developer's check of about a minute on 2 cores (90 s on a busy one).
# These modules test the code that needs no network compiled beyond a few small programs
# (images, resize, metrics, tiling, weights files, configs, the command-line plumbing); their
# slow tests stay out. The full suite is unchanged.
QUICK_MODULES = frozenset({
    "tests/test_metrics.py", "tests/test_events.py", "tests/test_files.py",
    "tests/test_runtime.py", "tests/upscaling/test_tiling.py", "tests/data/test_benchmark.py",
    "tests/data/test_decode.py", "tests/data/test_image_io.py", "tests/data/test_resize.py",
    "tests/data/test_sampler.py", "tests/data/test_training_set.py",
    "tests/data/test_transforms.py", "tests/models/test_schema.py",
    "tests/weights/test_torch_io.py", "tests/training/test_optim.py",
    "tests/training/test_workdir.py", "tests/commands/test_cli.py",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(item.fspath).relative_to(REPO).as_posix()
        if (path in QUICK_MODULES and item.get_closest_marker("slow") is None
                and item.get_closest_marker("long") is None):
            item.add_marker(pytest.mark.quick)
