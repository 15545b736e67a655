"""Helpers shared by the upscaling tests (test_tiling, test_api, test_upscale): a tiny saved
checkpoint and real LR crops of the benchmark images."""

from pathlib import Path

import jax
import jax.flatten_util
import numpy as np

from drsan_jax.checkpoints import save_params_for_inference
from drsan_jax.image_io import read_image
from drsan_jax.models import DRSAN, init_params

TINY = {"features": 8, "num_blocks": 2, "num_groups": 1}


def save_tiny_checkpoint(path: Path, scale: int = 2, residual: str = "dynamic",
                         step: int = 7) -> Path:
    """Saves a tiny DRSAN whose every parameter (biases and PReLU slopes too) is random."""
    model = DRSAN(scale=scale, residual=residual, **TINY)
    flat, unravel = jax.flatten_util.ravel_pytree(init_params(model, jax.random.key(scale)))
    params = unravel(flat + 0.1 * jax.random.normal(jax.random.key(1), flat.shape))
    return save_params_for_inference(path, {"scale": scale, "residual": residual, **TINY},
                                     params, step=step)


def lr_crop(benchmark_dir: Path, name: str = "Set14/baboon.png", scale: int = 2,
            size: tuple[int, int] = (45, 61)) -> np.ndarray:
    """An odd-sized crop of a benchmark LR image (uint8, as stored)."""
    return read_image(benchmark_dir / f"x{scale}" / name)[: size[0], : size[1]]
