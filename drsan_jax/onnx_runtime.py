"""Exported models on ONNX Runtime: upscale pictures with a `.onnx` file, without JAX.

    from drsan_jax.onnx_runtime import OnnxUpscaler
    model = OnnxUpscaler("drsan-32s-x2.onnx")    # written by `python -m drsan_jax.export`
    sr = model.upscale(image)                     # as `drsan_jax.load(...).upscale(image)`

`OnnxUpscaler` and the JAX `api.Upscaler` extend the same `upscaling.pictures.PictureUpscaler`
(`upscale`, `upscale_rows`, `bicubic`, `resolve_tile`, `tile_count`), so they treat pictures
identically: the same image kinds, the same overlapping tiles and cross-fade
(`upscaling.tiling`), the same rounding to 8 or 16 bits. So
`python -m drsan_jax.upscale --ckpt model.onnx` and `drsan_jax.load("model.onnx")` run it too.
What it lacks is the self-ensemble and `inspect` (the exported graph returns the picture only).

This module, `drsan_jax.upscaling` and `data.resize.imresize` import neither JAX nor Flax, so a
deployment needs only NumPy, ONNX Runtime and this package's files. The model's scale, layout
(NHWC or NCHW) and memory use per pixel are read from the metadata the exporter writes into the
file; for other super-resolution `.onnx` files (one 4-D RGB input in [0, 1]) the layout comes
from the input's shape and the scale from one small probe run.

On the CPU provider the graph is opened with `onnx_graph.CPU_REWRITES` applied in memory
(PReLU as operators that stay in ONNX Runtime's blocked layout: the same values bit for bit,
9-37% less time per image on DRSAN-32s x2, benchmarks/README.md); the file itself is not
changed, and without the `onnx` package, or with `cpu_rewrites=False`, the graph runs as
written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from drsan_jax import onnx_graph
from drsan_jax.upscaling import memory, tiling
from drsan_jax.upscaling.pictures import PictureUpscaler

SUFFIX = ".onnx"
# Keys of the ONNX model's metadata_props that `drsan_jax.export` writes.
META_SCALE = "drsan_jax.scale"
META_LAYOUT = "drsan_jax.layout"
META_BYTES_PER_PIXEL = "drsan_jax.bytes_per_lr_pixel"
META_NAME = "drsan_jax.name"
META_STEP = "drsan_jax.step"
# "HxW" in a file exported with --input_size: it takes LR inputs of that size only.
META_INPUT_SIZE = "drsan_jax.input_size"
# "prelu:36,dra_sum:16": the graph rewrites of `drsan_jax.onnx_graph` applied at export, and how
# often each (empty: jax2onnx's graph as it was written).
META_REWRITES = "drsan_jax.onnx_rewrites"
LAYOUTS = ("nhwc", "nchw")
INSTALL_HINT = 'pip install -e ".[onnx]"'
# The probe that finds the scale of a file without metadata, in LR pixels per side.
_PROBE_SIDE = 16
# With only these providers the graph's operators run on the CPU provider (the Azure one adds
# remote calls only), so the CPU rewrites apply.
_CPU_PROVIDERS = ("CPUExecutionProvider", "AzureExecutionProvider")


def is_onnx_file(path: Any) -> bool:
    """Whether `path` names an ONNX model file (by its suffix; it need not exist)."""
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(SUFFIX)


def _cpu_graph(path: Path) -> tuple[str | bytes, dict[str, int]]:
    """The model to give ONNX Runtime's CPU provider: `onnx_graph.CPU_REWRITES` applied.

    Returns:
      (the serialized rewritten model, the rewrite counts), or (the path as a string, {}) when
      nothing was rewritten, the `onnx` package is missing or cannot read the file (ONNX
      Runtime then reports what is wrong with it).
    """
    try:
        import onnx
    except ImportError:
        return str(path), {}
    try:
        model = onnx.load(str(path))
    except Exception:  # protobuf's DecodeError, a missing external-data file, ...
        return str(path), {}
    counts = onnx_graph.optimize(model, onnx_graph.CPU_REWRITES)
    if not any(counts[name] for name in onnx_graph.CPU_REWRITES):
        return str(path), {}
    return model.SerializeToString(), counts


def _onnxruntime():
    """The onnxruntime module, or an ImportError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"running .onnx models needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


class OnnxUpscaler(PictureUpscaler):
    """An exported super-resolution model on ONNX Runtime: `upscale` and `bicubic` on pictures.

    Attributes:
      path: the .onnx file.
      scale: the upscaling factor.
      layout: "nhwc" or "nchw", the layout of the model's input and output.
      name: the model's name from its metadata ("32s-x2", ...), or None.
      step: the training step of its weights from its metadata, or None.
      input_size: (H, W) for a file that takes LR inputs of that size only (exported with
        --input_size), else None.
      session: the `onnxruntime.InferenceSession`.
      rewrites: the `onnx_graph.CPU_REWRITES` applied in memory and how often each, plus
        "removed" (nodes dropped); {} when the graph runs as the file has it.
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None,
                 threads: int | None = None, cpu_rewrites: bool = True):
        """Opens the model.

        Args:
          path: the .onnx file.
          providers: ONNX Runtime execution providers in order of preference; default: every
            one this onnxruntime build has (a GPU one first when installed).
          threads: threads per operator; default: ONNX Runtime's (one per physical core).
          cpu_rewrites: on the CPU provider, open the graph with `onnx_graph.CPU_REWRITES`
            applied (same values, faster); False runs the file's graph as it is.

        Raises:
          FileNotFoundError: no such file.
          ImportError: onnxruntime is not installed.
          ValueError: a file ONNX Runtime cannot load, or a model that does not take one 4-D
            RGB image batch.
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = providers or ort.get_available_providers()
        names = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
        model, self.rewrites = str(self.path), {}
        if cpu_rewrites and all(name in _CPU_PROVIDERS for name in names):
            model, self.rewrites = _cpu_graph(self.path)
        try:
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as e:  # onnxruntime's own exception types (Fail, InvalidProtobuf, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"ONNX Runtime cannot load {self.path}: {first}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{self.path} is not an image model: expected one 4-D input, got "
                             f"{[(i.name, i.shape) for i in inputs]}")
        self._input = inputs[0]
        self._dtype = np.float16 if self._input.type == "tensor(float16)" else np.float32
        meta = self.session.get_modelmeta().custom_metadata_map
        self.layout = meta.get(META_LAYOUT) or self._layout_from_shape(self._input.shape)
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.path} has layout {self.layout!r}; expected one of {LAYOUTS}")
        self.input_size = self._fixed_size(meta.get(META_INPUT_SIZE))  # before the probe
        self.scale = int(meta[META_SCALE]) if META_SCALE in meta else self._probe_scale()
        self.name = meta.get(META_NAME)
        self.step = int(meta[META_STEP]) if meta.get(META_STEP, "").isdigit() else None
        bytes_per_pixel = meta.get(META_BYTES_PER_PIXEL)
        self._bytes_per_pixel = float(bytes_per_pixel) if bytes_per_pixel else None

    def _layout_from_shape(self, shape: list[Any]) -> str:
        """NCHW when the second axis has 3 channels, NHWC when the last one has."""
        if shape[1] == 3:
            return "nchw"
        if shape[3] == 3:
            return "nhwc"
        raise ValueError(f"{self.path}: cannot tell the layout of input shape {shape}: neither "
                         f"axis 1 nor axis 3 is 3 (RGB)")

    def _fixed_size(self, recorded: str | None) -> tuple[int, int] | None:
        """The input's fixed (H, W) from the metadata, else from the graph's static dims."""
        if recorded:
            height, width = recorded.lower().split("x")
            return int(height), int(width)
        shape = self._input.shape
        dims = shape[2:] if self.layout == "nchw" else shape[1:3]
        return tuple(dims) if all(isinstance(d, int) for d in dims) else None

    def _probe_scale(self) -> int:
        """The scale of a model without metadata: the output side of a small input over its side."""
        height, width = self.input_size or (_PROBE_SIDE, _PROBE_SIDE)
        probe = np.zeros((height, width, 3), np.float32)
        return self.predict(probe, scale=None).shape[0] // height

    def __repr__(self) -> str:
        return (f"OnnxUpscaler({self.name or self.path.name} x{self.scale}, {self.layout}, "
                f"from {self.path})")

    def predict(self, lq: np.ndarray, scale: int | None = -1) -> np.ndarray:
        """Runs the network on one LR image (the `tiling.PredictFn` of this backend).

        Args:
          lq: (h, w, 3) float32 RGB in [0, 1].
          scale: checked against the output's size; -1 for `self.scale`, None not to check.

        Returns:
          (h * scale, w * scale, 3) float32, unclipped.

        Raises:
          ValueError: a file with a fixed input size and an input of another size.
        """
        if self.input_size and tuple(lq.shape[:2]) != self.input_size:
            height, width = self.input_size
            raise ValueError(f"{self.path} takes {height}x{width} LR inputs only (it was exported "
                             f"with --input_size {height}x{width}); got {lq.shape[0]}x"
                             f"{lq.shape[1]}: export it again with --input_size "
                             f"{lq.shape[0]}x{lq.shape[1]}, or run the JAX model")
        x = lq[None].astype(self._dtype)  # (1, h, w, 3)
        if self.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        (y,) = self.session.run(None, {self._input.name: np.ascontiguousarray(x)})
        if self.layout == "nchw":
            y = y.transpose(0, 2, 3, 1)
        y = y[0].astype(np.float32, copy=False)
        scale = self.scale if scale == -1 else scale
        if scale is not None and y.shape != (lq.shape[0] * scale, lq.shape[1] * scale, 3):
            raise ValueError(f"{self.path} turned a {lq.shape} input into {y.shape}, not a "
                             f"x{scale} RGB image")
        return y

    def _predictor(self, self_ensemble: bool) -> tiling.BatchPredictFn:
        """One tile after another (ONNX Runtime already spreads each operator over the cores)."""
        return lambda tiles: [self.predict(x) for x in tiles]

    def _check_options(self, self_ensemble: bool) -> None:
        if self_ensemble:
            raise ValueError("the self-ensemble is not available for ONNX models; use the JAX "
                             "checkpoint for it")

    def _fits_whole(self, height: int, width: int, self_ensemble: bool) -> bool:
        """With the exporter's measure of the network's memory per LR pixel (XLA's, a close
        stand-in for ONNX Runtime's buffers), whether the picture fits in
        `memory.host_memory_budget()`; a file without that measure runs pictures of up to
        `DEFAULT_TILE` squared pixels whole. A fixed-size file runs every picture whole (its
        one size, or `predict`'s error)."""
        if self.input_size:
            return True
        if self._bytes_per_pixel is None:
            return height * width <= tiling.DEFAULT_TILE**2
        needed = memory.whole_image_bytes(self._bytes_per_pixel, self.scale, height, width)
        return needed <= memory.host_memory_budget()


def load(path: str | os.PathLike, providers: list[str] | None = None) -> OnnxUpscaler:
    """Opens an exported `.onnx` model for upscaling (see `OnnxUpscaler`)."""
    return OnnxUpscaler(path, providers)


__all__ = ["OnnxUpscaler", "SUFFIX", "is_onnx_file", "load"]
