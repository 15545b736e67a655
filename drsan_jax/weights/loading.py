"""The one loader: a shipped model's name, a checkpoint folder or a weights file -> a model.

    load_model("32s-x2")                       # shipped with the package (weights.shipped)
    load_model("runs/drsan32s_x2")             # a training workdir, checkpoints/ or a step folder
    load_model("weights/mdsr.npz", scale=3)    # a compact weights file (weights.compact)
    load_model("lesrcnn_x2.pth")               # published PyTorch weights (weights.torch_import)

Every entry point that takes `--ckpt` (eval.py, upscale, export, `--config.init_from`) and
`drsan_jax.load` goes through `load_model`, so each accepts all of these. Resolution runs in one
direction: a name is looked up only when no file or folder of that name exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from drsan_jax.weights import checkpoints, compact, shipped, torch_import
from drsan_jax.weights.loaded import InferenceModel, WeightsError, assemble

ACCEPTED = ("a shipped model's name (python -m drsan_jax.pretrained list), a training workdir, "
            "its checkpoints/ folder, a step folder, a drsan-jax .npz weights file, or PyTorch "
            "weights (.pth, .pt, .safetensors) of LESRCNN, EDSR or MDSR")


def load_model(spec: str | os.PathLike, which: str = "latest", scale: int | None = None,
               model: str | None = None, ema: bool = True) -> InferenceModel:
    """Loads a model for inference from whatever names it.

    Args:
      spec: a shipped name ("32s-x2"), a checkpoint folder, or a weights file.
      which: for a training workdir, "latest" or "best" (see `checkpoints.find_step_dir`).
      scale: the scale to run at; needed only to pick a multi-scale model's branch (None: the
        scale the model was saved with). A single-scale model refuses another scale.
      model: for a PyTorch weights file, the family or model name to read it as ("lesrcnn",
        "edsr", "mdsr", ...); default: recognised from its keys. Ignored for the other sources.
      ema: of a training checkpoint with a weight average (`config.ema_decay`), load the
        average (default: what validation scored) or, False, the trained weights.

    Returns:
      The model and its parameters, on the first local device.

    Raises:
      FileNotFoundError: nothing of that name exists.
      ValueError: a damaged or foreign file (a `WeightsError`), an unknown shipped name, or a
        scale the model does not have; the message names the file and what was expected.
    """
    path = Path(spec)
    if path.is_dir():
        loaded = checkpoints.load(path, which, ema)
    elif path.is_file():
        if torch_import.is_weight_file(path):
            loaded = torch_import.import_weights(path, model)
        elif path.suffix == compact.SUFFIX:
            loaded = load_compact(path)
        else:
            raise WeightsError(f"{path}: not a model file drsan-jax reads; expected {ACCEPTED}")
    elif shipped.is_model_name(str(spec)):
        loaded = load_shipped(str(spec))
    else:
        raise FileNotFoundError(f"{spec}: no such file or folder; expected {ACCEPTED}")
    return loaded.at_scale(scale)


def check_source(spec: str | os.PathLike, which: str = "latest") -> None:
    """Raises what `load_model` would for a missing or unreadable source, without loading it.

    For checking flags (`--config.init_from`) before anything expensive starts.
    """
    path = Path(spec)
    if path.is_dir():
        checkpoints.find_step_dir(path, which)
    elif path.is_file():
        if path.suffix != compact.SUFFIX and not torch_import.is_weight_file(path):
            raise WeightsError(f"{path}: not a model file drsan-jax reads; expected {ACCEPTED}")
    elif not shipped.is_model_name(str(spec)):
        raise FileNotFoundError(f"{spec}: no such file or folder; expected {ACCEPTED}")
    elif str(spec) not in shipped.available():
        raise shipped.PretrainedError(f"no shipped model is named {spec!r}; shipped: "
                                      f"{', '.join(shipped.available()) or 'none'}")


def load_compact(path: str | os.PathLike) -> InferenceModel:
    """Loads a self-describing compact weights file (`compact.write`)."""
    flat, meta = compact.read(path)
    if not isinstance(meta, dict) or "model" not in meta:
        raise WeightsError(f"{path}: holds no model description (a shipped model's file "
                           f"is loaded by its name instead)")
    return assemble(meta["model"], flat, str(path), step=meta.get("step"),
                    extra=meta.get("extra"))


def load_shipped(name: str, directory: str | os.PathLike | None = None) -> InferenceModel:
    """Loads a shipped model by name (float32 parameters), its file verified first.

    Raises:
      shipped.PretrainedError: an unknown name, or a missing or damaged file.
      WeightsError: weights that do not fit the manifest's model.
    """
    path, entry = shipped.verified_file(name, directory)
    flat, _ = compact.read(path)
    training = entry.get("training", {})
    return assemble(entry["model"], flat, f"{path} ({name})", path=f"{name} ({path})",
                    step=training.get("steps"), training_config=training.get("config"),
                    extra={"pretrained": name, "storage_dtype": entry.get("storage_dtype")})


__all__ = ["ACCEPTED", "check_source", "load_compact", "load_model", "load_shipped"]
