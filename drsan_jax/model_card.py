"""The JSON model card written beside every exported model file (`<output>.json`).

Field names follow OpenModelDB's model JSON where one fits (`name`, `author`, `license`,
`description`, `date`, `architecture`, `size`, `scale`, `inputChannels`, `outputChannels`,
`resources` with `platform`, `type`, `size`, `sha256` and `urls`, `trainingIterations`,
`trainingBatchSize`, `trainingHRSize`, `dataset`, `pretrainedModelG`), so a card can seed an
entry there; OpenModelDB's platforms are pytorch, onnx and ncnn, so a TFLite or StableHLO file's
`platform` is its format's name. The rest is this project's: `family`, `variant`,
`parameters`, `teacher` (the distillation teacher and its loss weight, `--config.teacher`),
`input` / `output` (name, layout, shape, dtype, value range), `format` (opset or
serialisation version, producer), `precision`, `evaluation` (the shipped manifest's PSNR /
SSIM) and `source` (the checkpoint and its step).

What is not known is null: a checkpoint trained elsewhere has no licence or evaluation here.
The shipped weights (`drsan_jax.pretrained`) carry everything, from their manifest.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

import drsan_jax
from drsan_jax.models import count_params
from drsan_jax.weights import shipped

# The shipped weights are trained by this project and distributed under its licence.
SHIPPED_AUTHOR = "drsan-jax"
SHIPPED_LICENSE = "Apache-2.0"


def sha256_of(data: bytes) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    return hashlib.sha256(data).hexdigest()


def _manifest_entry(inference_model: Any) -> dict[str, Any] | None:
    """The shipped manifest's entry of a model loaded by its shipped name, else None."""
    name = (getattr(inference_model, "extra", None) or {}).get("pretrained")
    return shipped.read_manifest()["models"].get(name) if name else None


def model_name(inference_model: Any) -> str:
    """A short name for files and metadata: "drsan-32s-x2", "lesrcnn-x2", "edsr-custom-x4"."""
    family = inference_model.family
    variant = inference_model.config.get("variant")
    name = family.model_name(variant) if variant else f"{family.name}-custom"
    return f"{name}-x{inference_model.scale}"


def build_card(
    inference_model: Any,
    *,
    data: bytes,
    fmt: str,
    format_info: dict[str, Any],
    layout: str,
    precision: dict[str, str],
    input_size: tuple[int, int] | None = None,
    batch: int | None = None,
) -> dict[str, Any]:
    """The model card of one exported file.

    Args:
      inference_model: what was exported: `.model`, `.params`, `.scale`, `.config` (with
        "variant", and "family" once there are several), and where present `.step`, `.path`,
        `.training_config`, `.extra` (`.extra["pretrained"]`: the shipped name it was loaded by).
      data: the exported file's bytes.
      fmt: "onnx", "tflite" or "stablehlo".
      format_info: the format's version and producer (e.g. {"opset": 18, "producer": ...}).
      layout: "nhwc" or "nchw".
      precision: {"name": "fp32" | "fp16", "weights", "compute", "io"}.
      input_size: (H, W) of a file that takes LR inputs of that size only; None for any size.
      batch: the batch size of a file with a fixed batch; None for any batch.

    Returns:
      A JSON-serialisable dict (see the module docstring).
    """
    config = dict(inference_model.config)
    scale = int(inference_model.scale)
    entry = _manifest_entry(inference_model)
    training = (entry or {}).get("training") or {}
    train_config = training.get("config") or getattr(inference_model, "training_config", None) or {}
    step = getattr(inference_model, "step", None)
    patch = train_config.get("patch_size")
    variant = config.get("variant")
    family = inference_model.family.name
    batch_dim = "batch" if batch is None else batch
    if input_size:
        symbolic = [batch_dim, *input_size]
        hr = [batch_dim, scale * input_size[0], scale * input_size[1]]
    else:
        symbolic = ["batch", "height", "width"]
        hr = ["batch", f"{scale}*height", f"{scale}*width"]
    in_shape = [symbolic[0], 3, *symbolic[1:]] if layout == "nchw" else [*symbolic, 3]
    out_shape = [hr[0], 3, *hr[1:]] if layout == "nchw" else [*hr, 3]
    return {
        "name": model_name(inference_model),
        "author": SHIPPED_AUTHOR if entry else None,
        "license": SHIPPED_LICENSE if entry else None,
        "description": (f"{family.upper()}-{variant or 'custom'} x{scale} single-image "
                        f"super-resolution, exported by drsan-jax {drsan_jax.__version__}."
                        + (f" {training['notes']}" if training.get("notes") else "")),
        "date": datetime.date.today().isoformat(),
        "architecture": family,
        "size": [variant] if variant else None,
        "scale": scale,
        "inputChannels": 3,
        "outputChannels": 3,
        "resources": [{
            "platform": fmt,
            "type": fmt,
            "size": len(data),
            "sha256": sha256_of(data),
            "urls": [],
        }],
        "trainingIterations": step,
        "trainingBatchSize": train_config.get("batch_size"),
        "trainingHRSize": patch * scale if patch else None,
        "dataset": training.get("data") or train_config.get("train_data"),
        "pretrainedModelG": train_config.get("init_from"),
        "teacher": ({"model": train_config["teacher"],
                     "weight": train_config.get("teacher_weight")}
                    if train_config.get("teacher") else None),
        "family": family,
        "variant": variant,
        "parameters": count_params(inference_model.params),
        "input": {"name": "input", "layout": layout.upper(), "shape": in_shape,
                  "dtype": precision["io"], "range": [0.0, 1.0], "color": "RGB",
                  **({"note": f"fixed size: {input_size[0]}x{input_size[1]} LR pixels only "
                              f"(exported with --input_size)"
                              + (f", batch {batch}" if batch is not None else "")}
                     if input_size else {})},
        "output": {"name": "output", "layout": layout.upper(), "shape": out_shape,
                   "dtype": precision["io"], "range": [0.0, 1.0], "color": "RGB",
                   "note": "not clipped: clip to [0, 1] before quantising"},
        "format": {"name": fmt, **format_info},
        "precision": precision,
        "evaluation": (entry or {}).get("evaluation") or None,
        "source": {"checkpoint": str(getattr(inference_model, "path", "")) or None,
                   "step": step, "model": config},
    }


def card_path(output: str | Path) -> Path:
    """Where the card of an exported file goes: `<output>.json`."""
    output = Path(output)
    return output.with_name(output.name + ".json")


__all__ = ["build_card", "card_path", "model_name", "sha256_of"]
