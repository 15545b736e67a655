"""Shared test fixtures and helpers: where the real images live, and a tiny DRSAN to run.

Fixtures hold what is set up once and shared (the data folders, a saved tiny checkpoint);
helpers that take arguments are plain functions, imported as `from conftest import ...`.
"""

import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from drsan_jax.checkpoints import save_params_for_inference
from drsan_jax.data import read_image, to_rgb_uint8, write_image
from drsan_jax.models import DRSAN, init_params

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
