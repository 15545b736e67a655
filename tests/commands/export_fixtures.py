"""Helpers shared by the export tests (test_export, test_export_tflite): the models exported, real
benchmark inputs, the JAX reference and the comparison every format must pass."""

from pathlib import Path

import jax
import numpy as np
import pytest

from drsan_jax.data import read_image

# Every model the export tests cover, by anything `loading.load_model` accepts; "shared:" paths
# are inside the shared data folder. Another family is one more line here.
MODELS = [
    pytest.param("32s-x2", id="drsan-32s-x2"),
    pytest.param("shared:weights/lesrcnn/lesrcnn_x2.pth", id="lesrcnn-x2"),
    pytest.param("shared:weights/span/team38_span_ch28_slim.pth", id="span-x4"),
]


def load_exported_model(spec: str):
    """The model a `MODELS` entry names."""
    from conftest import shared_data_dir

    from drsan_jax.weights.loading import load_model

    if spec.startswith("shared:"):
        spec = str(shared_data_dir() / spec.removeprefix("shared:"))
    return load_model(spec)

# Largest |exported - JAX| on outputs in [0, 1].
TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3}
# float16 files: (largest |exported - JAX|, most 8-bit levels apart). SPAN's trunk works on the
# (x - mean) * 255 scale, features in the hundreds, where float16's step is 0.25 to 0.5: on
# these crops its float16 ONNX file differs by up to 2.8e-3 (1 level) and its float16 StableHLO
# on XLA:CPU by up to 1.1e-2 (3 levels), measured; docs/networks/span.md advises float32.
FP16_TOLERANCE = {"span": (2e-2, 3)}
# Share of 8-bit output values that must equal the JAX model's (float32 exports).
SAME_8BIT = 0.999

# LR crops of real benchmark images: three sizes (odd ones among them) and a batch of two.
_CROPS = {
    "45x61": [("Set14/baboon.png", 45, 61)],
    "32x48": [("Set5/butterfly.png", 32, 48)],
    "17x23": [("B100/101085.png", 17, 23)],
    "2x24x31": [("Set5/bird.png", 24, 31), ("Set14/zebra.png", 24, 31)],
}


def lq_batches(benchmark_dir: Path, scale: int) -> dict[str, np.ndarray]:
    """Name -> (B, H, W, 3) float32 RGB in [0, 1], cut from the released x`scale` LR images."""
    batches = {}
    for name, crops in _CROPS.items():
        images = [read_image(benchmark_dir / f"x{scale}" / path)[:h, :w] for path, h, w in crops]
        batches[name] = np.stack(images).astype(np.float32) / np.float32(255)
    return batches


def jax_reference(inference_model, lq: np.ndarray) -> np.ndarray:
    """The loaded model's own output (NHWC float32), as training and evaluation compute it."""
    model, params = inference_model.model, inference_model.params
    with jax.default_matmul_precision("highest"):
        return np.asarray(jax.jit(lambda x: model.apply({"params": params}, x))(lq))


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """NHWC -> the export's layout."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "nchw" else x


def from_layout(y: np.ndarray, layout: str) -> np.ndarray:
    """The export's layout -> NHWC."""
    return y.transpose(0, 2, 3, 1) if layout == "nchw" else y


def to_8bit(x: np.ndarray) -> np.ndarray:
    """Clipped and rounded like every saved picture (inference.to_uint8)."""
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.int16)


def assert_matches_jax(got: np.ndarray, expected: np.ndarray, precision: str,
                       family: str | None = None) -> dict[str, float]:
    """The comparison every exported file passes; returns the numbers for the record.

    float32 exports: within 1e-5 and 99.9% of 8-bit values equal. float16: within 2e-3 and no
    8-bit value more than one level away (or the family's `FP16_TOLERANCE`).
    """
    assert got.shape == expected.shape and got.dtype == np.float32
    diff = float(np.abs(got - expected).max())
    levels = np.abs(to_8bit(got) - to_8bit(expected))
    same = float((levels == 0).mean())
    tolerance, most_levels = (FP16_TOLERANCE.get(family, (TOLERANCE["fp16"], 1))
                              if precision == "fp16" else (TOLERANCE[precision], 0))
    assert diff <= tolerance, f"max abs diff {diff}"
    if precision == "fp32":
        assert same >= SAME_8BIT, f"only {same:.5f} of 8-bit values equal"
    else:
        assert levels.max() <= most_levels, f"8-bit values {levels.max()} levels apart"
    return {"max_abs_diff": diff, "same_8bit": same}
