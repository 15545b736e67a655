"""The shipped models: a name ("32s-x2") -> its verified weights file and manifest entry.

Each shipped model is one compact `.npz` file (`weights.compact`) in `weights/pretrained/`
holding the parameters under their flat names, stored as float16 or float32, and one entry of
`weights/pretrained/manifest.json`:

    {"format": "drsan-jax pretrained 1",
     "models": {"32s-x2": {
        "file": "32s-x2.npz", "sha256": "...", "storage_dtype": "float16",
        "model": <the model configuration, see drsan_jax.models.schema>,
        "training": {"data", "steps", "command", "config", "notes", "source", "weights",
                     "curve": {"<set>": [[step, validation PSNR], ...]}},
        "verification": {"input", "max_abs_output_difference"},
        "evaluation": {"<protocol>": {"plain" | "self_ensemble": {"<dataset>": {"psnr", "ssim"}}}},
        "storage_cost": <PSNR of the float32 checkpoint minus the stored weights', per set>}}}

A shipped name is "<model>-x<scale>", the model being any name of `drsan_jax.models` (the DRSAN
short names included). This module only finds and verifies; `weights.loading` loads, and the
maintainers' tool `python -m drsan_jax.pretrained` writes the files and the manifest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from drsan_jax.weights.errors import WeightsError

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
MANIFEST_NAME = "manifest.json"
FORMAT = "drsan-jax pretrained 1"


class PretrainedError(WeightsError):
    """A shipped model that is unknown, missing or damaged; the message says which and why."""


def is_model_name(text: str | os.PathLike) -> bool:
    """Whether `text` has the form of a shipped model's name ("32s-x2"), shipped or not."""
    return isinstance(text, str) and name_pattern().match(text) is not None


@functools.cache
def name_pattern() -> re.Pattern[str]:
    """A shipped model's name: a model name (or DRSAN short name) and the scale, e.g. "32s-x2".

    Built on first use, from the model zoo's names, so that importing this module (the
    commands' argument checks) does not import the zoo and JAX.
    """
    from drsan_jax.models import MODEL_NAMES, VARIANTS

    return re.compile(
        r"^(" + "|".join(re.escape(n) for n in (*MODEL_NAMES, *VARIANTS)) + r")-x([234])$")


def read_manifest(directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of the shipped models (an empty one when none is shipped yet)."""
    path = Path(directory or PRETRAINED_DIR) / MANIFEST_NAME
    if not path.exists():
        return {"format": FORMAT, "models": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PretrainedError(f"{path} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("models"), dict):
        raise PretrainedError(f"{path} is not a drsan-jax manifest (expected format {FORMAT!r})")
    return manifest


def available(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the shipped models."""
    return sorted(read_manifest(directory)["models"])


def default_for_scale(scale: int, directory: str | os.PathLike | None = None) -> str:
    """The shipped model `python -m drsan_jax.upscale` uses at `scale` without --ckpt.

    The smallest variant is preferred (the order of `models.VARIANTS`).

    Raises:
      PretrainedError: no model for that scale ships.
    """
    from drsan_jax.models import VARIANTS

    shipped = available(directory)
    names = [f"{v}-x{scale}" for v in VARIANTS if f"{v}-x{scale}" in shipped]
    if not names:
        raise PretrainedError(f"no shipped model upscales x{scale} (shipped: "
                              f"{', '.join(shipped) or 'none'}); pass a checkpoint with --ckpt")
    return names[0]


def sha256_of_file(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_file(name: str, directory: str | os.PathLike | None = None
                  ) -> tuple[Path, dict[str, Any]]:
    """A shipped model's weights file, checked against its manifest entry, and the entry.

    Args:
      name: a shipped model's name, e.g. "32s-x2" (see `available`).
      directory: where the weights and manifest are; default: the package's.

    Raises:
      PretrainedError: an unknown name, or a missing or damaged file (its SHA-256 differs from
        the manifest's).
    """
    directory = Path(directory or PRETRAINED_DIR)
    models = read_manifest(directory)["models"]
    if name not in models:
        raise PretrainedError(f"no shipped model is named {name!r}; shipped: "
                              f"{', '.join(sorted(models)) or 'none'}")
    entry = models[name]
    path = directory / entry["file"]
    if not path.is_file():
        raise PretrainedError(f"the weights of {name} ({path}) are missing from the installation")
    if sha256_of_file(path) != entry["sha256"]:
        raise PretrainedError(f"the weights of {name} ({path}) are damaged: their SHA-256 "
                              f"differs from the manifest's; reinstall drsan-jax")
    return path, entry


__all__ = ["FORMAT", "MANIFEST_NAME", "name_pattern", "PRETRAINED_DIR", "PretrainedError",
           "available", "default_for_scale", "is_model_name", "read_manifest", "sha256_of_file",
           "verified_file"]
