"""The model configuration stored with every checkpoint, and the model it rebuilds.

A model configuration is a JSON dict that rebuilds the network without any config file:

    {"family": "drsan", "variant": "32s", "scale": 2, <the family's size and option fields>,
     "dtype": "float32"}

`variant` is None when the sizes are not a published variant's. For a multi-scale model
(MDSR, LESRCNN-S) `scale` is the scale whose branch runs by default; the parameters hold every
scale's branch. Checkpoints written before the model zoo have no "family": they are DRSAN's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from drsan_jax.models.registry import family_of, get_family

DTYPES = ("float32", "bfloat16")
# Checkpoints without a "family" key predate the model zoo: DRSAN was the only family then.
LEGACY_FAMILY = "drsan"


def normalize_model_config(model_config: dict[str, Any]) -> dict[str, Any]:
    """Completes a model configuration: sizes from the variant, defaults for the rest.

    Args:
      model_config: "scale", "family" (default "drsan") and either "variant" or all of the
        family's size fields (sizes given next to a variant override it). The family's option
        fields and "dtype" are optional; None means the published default.

    Returns:
      A dict with "family", "variant" and every field of `Family.fields()`, JSON-serialisable.

    Raises:
      ValueError: unknown keys (naming the family's valid ones), an unknown family, variant,
        scale or dtype, or missing sizes.
    """
    family = get_family(model_config.get("family") or LEGACY_FAMILY)
    config = {k: v for k, v in model_config.items() if v is not None and k != "family"}
    valid = ("variant", *family.fields())
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a field of the {family.name} family; expected "
                         f"some of {list(valid)}")
    variant = config.get("variant")
    if variant is not None:
        if variant not in family.variants:
            names = [family.model_name(v) for v in family.variants]
            raise ValueError(f"unknown {family.name} variant {variant!r}; expected one of "
                             f"{list(family.variants)} ({', '.join(names)})")
        for name, size in family.variants[variant].items():
            config.setdefault(name, size)
    missing = [k for k in ("scale", *family.size_fields) if k not in config]
    if missing:
        raise ValueError(f"model configuration {model_config} lacks {missing} (and no variant)")
    if config["scale"] not in family.scales:
        raise ValueError(f"scale {config['scale']!r}: a {family.name} model has scales "
                         f"{list(family.scales)}")
    defaults = {f.name: f.default for f in dataclasses.fields(family.module)}
    full = {"family": family.name, "variant": variant}
    for name in family.fields():
        full[name] = _like(config.get(name, defaults.get(name)), defaults.get(name))
    if variant is not None and any(full[k] != v for k, v in family.variants[variant].items()):
        full["variant"] = None  # a custom size is no longer the published variant
    full["dtype"] = jnp.dtype(full["dtype"]).name
    if full["dtype"] not in DTYPES:
        raise ValueError(f"model dtype must be one of {DTYPES}, got {full['dtype']!r}")
    return full


def config_of(model: nn.Module) -> dict[str, Any]:
    """The model configuration of a module, its variant recognised from its sizes."""
    family = family_of(model)
    config = {"family": family.name, **{k: getattr(model, k) for k in family.fields()}}
    config["dtype"] = jnp.dtype(config["dtype"]).name
    sizes = {k: config[k] for k in family.size_fields}
    config["variant"] = next((v for v, s in family.variants.items() if dict(s) == sizes), None)
    return normalize_model_config(config)


def _like(value: Any, default: Any) -> Any:
    """`value` in the type of the field's default (JSON and flags give ints for floats, ...)."""
    for kind in (bool, int, float):  # bool first: it is an int too
        if isinstance(default, kind):
            return kind(value)
    return value


def build_model_from_config(model_config: dict[str, Any], **runtime: Any) -> nn.Module:
    """The module a (possibly partial) model configuration names.

    Args:
      model_config: see `normalize_model_config`.
      **runtime: attributes that are not part of the stored configuration, e.g. `conv_impl`.
    """
    config = normalize_model_config(model_config)
    family = get_family(config["family"])
    kwargs = {k: config[k] for k in family.fields()}
    # The scalar type (jnp.float32), not jnp.dtype("float32"): the two compare equal but hash
    # differently, and a loaded model must share compiled programs with build_model's.
    kwargs["dtype"] = getattr(jnp, kwargs["dtype"])
    return family.module(**kwargs, **runtime)


def model_name(model_config: dict[str, Any]) -> str:
    """A readable name: "drsan-32s", "edsr-baseline", or the family and sizes of a custom one."""
    config = normalize_model_config(model_config)
    family = get_family(config["family"])
    if config["variant"] is not None:
        return family.model_name(config["variant"])
    sizes = " ".join(f"{k}={config[k]}" for k in family.size_fields)
    return f"{family.name} ({sizes})"


__all__ = ["DTYPES", "build_model_from_config", "config_of", "model_name",
           "normalize_model_config"]
