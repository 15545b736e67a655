"""The project's compact weights format: one `.npz` of flattened parameters, safe to read.

    weights.npz
      "head/kernel", "DRAG_0/DRM/conv_in/kernel", ...   the parameters under their flattened
                                                          Flax paths, float16 or float32
      "__meta__"                                         uint8 bytes of a JSON object:
          {"format": "drsan-jax weights 1", "model": <model configuration>,
           "step": ..., "extra": {...}}

The shipped models (`weights.shipped`) are such files whose metadata lives in the package
manifest instead; `python -m drsan_jax.convert` writes them from any checkpoint or PyTorch file.
Reading never unpickles (`allow_pickle=False`), so a file from anywhere runs no code.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from drsan_jax import files
from drsan_jax.weights.errors import WeightsError

FORMAT = "drsan-jax weights 1"
META_KEY = "__meta__"
STORAGE_DTYPES = ("float16", "float32")
SUFFIX = ".npz"


def encode(params: Any, storage_dtype: str = "float16", meta: dict[str, Any] | None = None
           ) -> bytes:
    """The bytes of a compact file holding `params` (and `meta`, if given)."""
    if storage_dtype not in STORAGE_DTYPES:
        raise WeightsError(f"storage dtype {storage_dtype!r}: expected one of {STORAGE_DTYPES}")
    from drsan_jax.models import flatten  # the model zoo (and JAX) only when writing

    arrays = {k: np.asarray(v).astype(storage_dtype) for k, v in flatten(params).items()}
    if meta is not None:
        arrays[META_KEY] = np.frombuffer(json.dumps({"format": FORMAT, **meta}).encode(),
                                         np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write(path: str | os.PathLike, params: Any, model_config: dict[str, Any], *,
          storage_dtype: str = "float16", step: int | None = None,
          extra: dict[str, Any] | None = None) -> Path:
    """Writes a self-describing compact file (atomically: all of it or nothing).

    Args:
      path: the `.npz` file to write.
      params: the parameter tree.
      model_config: its model configuration (`drsan_jax.models.normalize_model_config`).
      storage_dtype: "float16" (half the size; costs under 0.001 dB on the shipped models) or
        "float32" (exact).
      step: the training step the parameters come from, if known.
      extra: JSON-serialisable notes (where they were converted from, ...).
    """
    data = encode(params, storage_dtype,
                  {"model": model_config, "step": step, "extra": extra or {}})
    return files.atomic_write_bytes(path, data)


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Reads a compact file: (flattened parameters as stored, its metadata or None).

    Raises:
      WeightsError: the file is missing, not an `.npz`, or damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with np.load(path, allow_pickle=False) as stored:
            flat = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise WeightsError(f"{path}: not a readable drsan-jax weights file ({e})") from None
    meta = None
    if META_KEY in flat:
        try:
            meta = json.loads(flat.pop(META_KEY).tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsError(f"{path}: damaged metadata ({e})") from None
    return flat, meta


__all__ = ["FORMAT", "STORAGE_DTYPES", "SUFFIX", "encode", "read", "write"]
