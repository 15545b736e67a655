"""A training config checked before anything expensive starts: every error names its flag.

`check_config` is what `train_and_evaluate` runs first; `config_field_hint` is what
`cli.absl_flags_parser` adds when a `--config.model.<field>` belongs to another family.
configs/default.py documents every field.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from drsan_jax import data
from drsan_jax.models import (
    DTYPES,
    FAMILIES,
    build_model_from_config,
    get_family,
    normalize_model_config,
)
from drsan_jax.training.optim import SCHEDULES
from drsan_jax.upscaling.shapes import MIN_SIDE
from drsan_jax.weights import loading

LOSSES = ("l1", "mse", "l1_fft")
# The smallest LR patch side training accepts. A crop this small is mostly border (the pixels
# whose 3x3 neighbourhoods reach the convolutions' zero padding): the shipped DRSAN-32s x2
# upscales a 4x4 crop 15 dB worse alone than in its picture, an 8x8 one 10 dB worse
# (benchmarks/README.md, "Small pictures"), so a network trained on them learns the border.
# Below `MIN_SIDE` (32) training warns (`small_patch_warning`); the recipes use 48 (LESRCNN 64).
MIN_PATCH = 8


def small_patch_warning(config: ml_collections.ConfigDict) -> str | None:
    """What to tell a user whose LR patches are under `MIN_SIDE` pixels, else None."""
    if config.patch_size >= MIN_SIDE:
        return None
    return (f"--config.patch_size={config.patch_size}: LR patches under {MIN_SIDE} pixels are "
            f"mostly border (zero padding) and train worse than the recipes' 48")


def model_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The full model configuration (as stored in checkpoints) of a training config."""
    return normalize_model_config({**config.model.to_dict(), "scale": config.scale})


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a ValueError naming the flag of the first invalid field, before any work starts."""

    def require(ok: bool, flag: str, expected: str) -> None:
        if not ok:
            value = config
            for part in flag.split("."):
                value = value[part]
            raise ValueError(f"--config.{flag}={value!r}: expected {expected}")

    try:
        family = get_family(config.model.family)
    except ValueError as e:
        raise ValueError(f"--config.model.family={config.model.family!r}: {e}") from None
    require(config.scale in family.scales, "scale", f"one of {family.scales}")
    for name in ("patch_size", "batch_size", "num_train_steps", "lr_decay_steps",
                 "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                 "data_workers", "prefetch_batches"):
        require(isinstance(config[name], int) and config[name] >= 1, name, "a positive integer")
    require(config.patch_size >= MIN_PATCH, "patch_size",
            f"at least {MIN_PATCH} LR pixels (the recipes use 48): a smaller patch is nearly "
            f"all border, where the network sees its convolutions' zero padding")
    require(config.keep_checkpoints >= 1, "keep_checkpoints", "at least 1")
    require(config.keep_best_checkpoints >= 0, "keep_best_checkpoints", "0 or more")
    require(config.learning_rate > 0, "learning_rate", "a positive number")
    require(0 < config.lr_decay_rate <= 1, "lr_decay_rate", "a factor in (0, 1]")
    require(config.loss in LOSSES, "loss", f"one of {LOSSES}")
    require(config.grad_clip_norm is None or config.grad_clip_norm > 0, "grad_clip_norm",
            "a positive number, or None for no clipping")
    require(config.model.dtype in DTYPES, "model.dtype", f"one of {DTYPES}")
    require(config.lr_schedule in SCHEDULES, "lr_schedule", f"one of {SCHEDULES}")
    require(isinstance(config.warmup_steps, int) and 0 <= config.warmup_steps
            < config.num_train_steps, "warmup_steps",
            "an integer from 0 to --config.num_train_steps - 1")
    require(0 <= config.lr_end_factor <= 1, "lr_end_factor", "a factor in [0, 1]")
    require(config.ema_decay is None or 0 < config.ema_decay < 1, "ema_decay",
            "a decay in (0, 1) such as 0.999, or None for no weight average")
    try:
        cfg = model_config(config)
        build_model_from_config(cfg)
    except ValueError as e:
        raise ValueError(f"--config.model.*: {e}") from None
    data.check_training_data(config.train_data)
    if config.init_from:
        try:
            loading.check_source(config.init_from)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"--config.init_from={config.init_from!r}: {e}") from None
    if config.teacher:
        require(len(train_scales(config)) == 1, "teacher",
                "no teacher for a multi-scale model (its outputs are computed at one scale)")
        try:
            loading.check_source(config.teacher)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"--config.teacher={config.teacher!r}: {e}") from None
    require(isinstance(config.teacher_weight, (int, float)) and 0 < config.teacher_weight <= 1,
            "teacher_weight", "a weight in (0, 1] (1: the teacher's outputs alone)")
    for name, scale in itertools.product(val_datasets(config), train_scales(config)):
        try:
            data.pair_images(config.val_data, name, scale)
        except ValueError as e:
            raise ValueError(
                f"--config.val_data={config.val_data!r}, --config.val_datasets="
                f"{config.val_datasets!r}: {e} (--config.val_datasets='' turns validation off)"
            ) from None


def config_field_hint(config: ml_collections.ConfigDict, key: str) -> str | None:
    """Why a `--config.model.<field>` the config lacks may belong to another model family.

    For `cli.absl_flags_parser`: `--config.model.use_rsa=False` with configs/edsr_baseline.py
    names the families that have the field, and this config's.
    """
    field = key.removeprefix("model.")
    if field == key or "." in field:
        return None
    owners = [name for name, family in FAMILIES.items()
              if field in (*family.size_fields, *family.option_fields)]
    trains = config.model.get("family")
    if not owners or trains in owners:
        return None
    return (f"{field} is a field of the {', '.join(owners)} model famil"
            f"{'ies' if len(owners) > 1 else 'y'}; this config trains {trains}")


def train_scales(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The scales a run trains: all of a multi-scale model's, else `config.scale`."""
    return tuple(build_model_from_config(model_config(config)).scales)


def val_datasets(config: ml_collections.ConfigDict) -> list[str]:
    """The validation sets named by `config.val_datasets` ("" for none)."""
    return [name.strip() for name in config.val_datasets.split(",") if name.strip()]


__all__ = ["LOSSES", "MIN_PATCH", "check_config", "config_field_hint", "model_config",
           "small_patch_warning", "train_scales",
           "val_datasets"]
