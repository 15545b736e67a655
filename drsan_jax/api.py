"""A trained DRSAN for notebooks and scripts: load it, upscale pictures, look inside.

    import drsan_jax
    model = drsan_jax.load("runs/32s_x2")     # a training workdir, a step folder, or "32s-x2"
                                               # (or "model.onnx": ONNX Runtime, no JAX)
    sr = model.upscale(image)                  # same dtype and channels as `image`, scale x larger
    baseline = model.bicubic(image)            # MATLAB bicubic, the baseline of SR tables
    info = model.inspect(image, blocks=[(0, 1)])
    info.dra_coefficients                      # (K, M): the r of every DRAG (paper Eq. 5)
    info.rsa_maps[0, 1]                        # (H, W, c): sigmoid(t) of DRAG_0, block 1

Images are NumPy arrays as `drsan_jax.data.read_image` returns them: HxW or HxWxC with C in
1, 3, 4, uint8 or uint16. Colour goes through DRSAN at the input's full precision (16-bit
inputs are not reduced to 8 bits), grey images as three equal channels averaged back to one,
and alpha is upscaled with bicubic. Everything JAX does (jit, padding to a few compiled shapes,
tiling large images so memory stays bounded, mirroring pictures smaller than
`upscaling.shapes.MIN_SIDE` so that they keep their brightness) happens behind these calls.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from drsan_jax import device_memory, onnx_runtime
from drsan_jax.data.image_io import quantize, to_model_input
from drsan_jax.inference import Predictor, default_split_rows, pad_batch
from drsan_jax.upscaling import tiling
from drsan_jax.upscaling.pictures import PictureUpscaler, check_image
from drsan_jax.upscaling.shapes import bucket_shape
from drsan_jax.weights.loaded import InferenceModel
from drsan_jax.weights.loading import load_model

# The tile defaults live with the tiling (backends without JAX share them); named here too.
DEFAULT_TILE = tiling.DEFAULT_TILE
DEFAULT_OVERLAP = tiling.DEFAULT_OVERLAP
# Most scratch memory the tiles of one call may need together (see `Upscaler._tile_batch`): a
# DRSAN-32s runs two 512-pixel tiles at once at x2, and one at a time, split over the devices,
# at x3 and x4, whose larger tiles compete for memory bandwidth (benchmarks/README.md, "Tiled
# against whole-image pixel rate", has the speeds that chose this).
TILE_CALL_BYTES = 2**30


def load(checkpoint: str | os.PathLike, which: str = "latest", scale: int | None = None
         ) -> Upscaler | onnx_runtime.OnnxUpscaler:
    """Loads a trained model of any family for upscaling and inspection.

    Args:
      checkpoint: a training workdir, its `checkpoints/` folder, one step folder, a weights
        file, or the name of a shipped model (e.g. "32s-x2"): anything
        `drsan_jax.weights.loading.load_model` accepts. Or an exported `.onnx` file
        (`python -m drsan_jax.export`), which runs on ONNX Runtime.
      which: for a workdir, "latest" or "best" (the highest validation PSNR).
      scale: for a multi-scale model (MDSR, LESRCNN-S), the scale to upscale by; None: the
        scale it was saved with.

    Returns:
      The model, ready to use: an `Upscaler`, or an `onnx_runtime.OnnxUpscaler` for a `.onnx`
      file (the same `upscale`, `upscale_rows`, `bicubic`, `resolve_tile` and `tile_count`;
      no `inspect`).
    """
    if onnx_runtime.is_onnx_file(checkpoint):
        upscaler = onnx_runtime.OnnxUpscaler(checkpoint)
        if scale is not None and scale != upscaler.scale:
            raise ValueError(f"{checkpoint} is a x{upscaler.scale} model; it cannot run at "
                             f"x{scale}")
        return upscaler
    return Upscaler(load_model(checkpoint, which, scale))


@dataclasses.dataclass(frozen=True)
class Inspection:
    """What DRSAN computed inside for one image (see `Upscaler.inspect`).

    Attributes:
      sr: (H * scale, W * scale, 3) uint8 super-resolved RGB.
      dra_coefficients: (K, M) float32, row k the path weights r of DRAG_k, M = N(N+1)/2 in the
        order r(1,0), r(2,0), r(2,1), r(3,0), ...; for DRAN one row (its single DRM); None for
        a model without DRM (the other families, or residual other than 'dynamic').
      rsa_maps: (k, n) -> (H, W, c) float32 residual self-attention sigmoid(t) of block n
        (1..N) of DRAG_k (0..K-1), for the blocks asked for (DRSAN only).
    """

    sr: np.ndarray
    dra_coefficients: np.ndarray | None
    rsa_maps: dict[tuple[int, int], np.ndarray]

    def dra_matrix(self, group: int) -> np.ndarray:
        """The r of one DRAG as an (N, N) lower-triangular matrix: row n-1, column k is r(n, k).

        Entries above the diagonal (no such path) are NaN, so plots leave them blank.
        """
        if self.dra_coefficients is None:
            raise ValueError("this model has no DRM (residual is not 'dynamic'), so no r")
        r = self.dra_coefficients[group]
        blocks = int(round((np.sqrt(8 * r.size + 1) - 1) / 2))
        matrix = np.full((blocks, blocks), np.nan, np.float32)
        matrix[np.tril_indices(blocks)] = r  # row-major lower triangle is r's order
        return matrix


class Upscaler(PictureUpscaler):
    """A loaded model: `upscale`, `bicubic` and `inspect` on NumPy images.

    `upscale`, `upscale_rows`, `bicubic`, `resolve_tile` and `tile_count` are
    `upscaling.pictures.PictureUpscaler`'s, shared with the ONNX backend; this class supplies
    the jitted network (`inference.Predictor`, with the self-ensemble) and XLA's measure of its
    memory (`device_memory`).

    Attributes:
      inference_model: the checkpoint it came from (model, params, step, config, path).
      scale: the upscaling factor.
      name: the model's name ("drsan-32s", "edsr-baseline", ...; see `models.model_name`).
      variant: the published variant ("32s", "edsr-baseline", ...), or None for a custom size.
      step: the training step of the weights, if known.
    """

    def __init__(self, inference_model: InferenceModel):
        """Wraps a model from `drsan_jax.weights.loading.load_model` (see `load`)."""
        self.inference_model = inference_model
        self.scale = inference_model.scale
        self.name = inference_model.name
        self.variant = inference_model.variant
        self.step = inference_model.step
        # On a CPU split into devices, tiles run one per device (`_tile_batch`).
        self._devices = jax.local_device_count() if default_split_rows() else 1
        self._predictors = {
            ensemble: Predictor(inference_model.model, inference_model.params,
                                self_ensemble=ensemble, batch_size=self._devices)
            for ensemble in (False, True)
        }

    def __repr__(self) -> str:
        return (f"Upscaler({self.name} x{self.scale}, step {self.step}, "
                f"from {self.inference_model.path})")

    def _predictor(self, self_ensemble: bool) -> tiling.BatchPredictFn:
        return self._predictors[self_ensemble].predict

    def _fits_whole(self, height: int, width: int, self_ensemble: bool) -> bool:
        whole = device_memory.inference_bytes(self.inference_model.model, height, width,
                                              self_ensemble)
        return whole <= device_memory.memory_budget()

    def _tile_batch(self, tile: int | None) -> int:
        """Tiles per call: one per device, while their scratch stays within `TILE_CALL_BYTES`.

        Whole tiles on each device beat one tile split by rows over them (no border rows to
        exchange, no waiting on the slowest core), but hold one tile's scratch per device.
        """
        if tile is None or self._devices == 1:
            return 1
        model = self.inference_model.model
        per_tile = device_memory.bytes_per_pixel(model) * math.prod(bucket_shape(tile, tile))
        fits = int(min(TILE_CALL_BYTES, device_memory.memory_budget()) // per_tile)
        return max(1, min(self._devices, fits))

    @property
    def rsa_blocks(self) -> list[tuple[int, int]]:
        """The (DRAG k, block n) pairs `inspect` has RSA maps for; empty but for DRSAN."""
        return _rsa_blocks(self.inference_model.model)

    def inspect(self, image: np.ndarray,
                blocks: Iterable[tuple[int, int]] | None = None) -> Inspection:
        """Runs the whole image once and returns the DRA coefficients and RSA maps, if any.

        Args:
          image: HxW or HxWxC (C in 1, 3, 4) uint8 or uint16 (grey as three equal channels,
            alpha ignored). Whole-image inference: keep it small (the maps hold H x W x c floats
            per block).
          blocks: the (DRAG index k from 0, block n from 1) pairs whose RSA maps to return;
            None for every block.

        Returns:
          The `Inspection`.
        """
        image = check_image(image)
        model = self.inference_model.model
        available = self.rsa_blocks
        blocks = tuple((int(k), int(n)) for k, n in (available if blocks is None else blocks))
        for k, n in blocks:
            if not available:
                raise ValueError(f"{self.name} has no residual self-attention maps (only DRSAN "
                                 f"with use_rsa=True has them)")
            if (k, n) not in available:
                raise ValueError(f"no block ({k}, {n}): DRAGs are 0..{model.num_groups - 1}, "
                                 f"blocks 1..{model.num_blocks}")
        height, width = image.shape[:2]
        lq, mask = pad_batch([to_model_input(image)], bucket_shape(height, width))
        sr, r, maps = _inspect(model, self.inference_model.params, lq, mask, blocks)
        s = self.scale
        return Inspection(
            sr=quantize(np.asarray(sr)[: height * s, : width * s]),
            dra_coefficients=None if r is None else np.asarray(r),
            rsa_maps={key: np.asarray(maps[f"{key[0]}/{key[1]}"])[:height, :width]
                      for key in blocks},
        )


@functools.partial(jax.jit, static_argnames=("model", "blocks"))
def _inspect(model: nn.Module, params: Any, lq: jax.Array, mask: jax.Array,
             blocks: tuple[tuple[int, int], ...]) -> tuple[jax.Array, jax.Array | None, dict]:
    """One image's SR, the stacked DRA coefficients and the chosen RSA maps."""
    with jax.default_matmul_precision("highest"):
        sr, state = model.apply({"params": params}, lq, mask,
                                mutable=["intermediates", "attention"])
    # Every DRM's path weights, in the order the DRMs ran (DRAG_0, DRAG_1, ...; DRAN's one).
    sown = traverse_util.flatten_dict(state.get("intermediates", {}))
    rows = [v[0][0] for path, v in sown.items() if path[-1] == "dra_coefficients"]
    r = jax.numpy.stack(rows) if rows else None  # (K, M)
    maps = {f"{k}/{n}": state["attention"][f"DRAG_{k}"][f"rsa_block_{n}"][0][0]
            for k, n in blocks}  # each (H_padded, W_padded, c)
    return sr[0], r, maps


def _rsa_blocks(model: nn.Module) -> list[tuple[int, int]]:
    """The (DRAG k, block n) pairs with an RSA map: DRSAN's with use_rsa, else none."""
    if not getattr(model, "use_rsa", False):
        return []
    return [(k, n) for k in range(model.num_groups) for n in range(1, model.num_blocks + 1)]


__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "Inspection", "Upscaler", "load"]
