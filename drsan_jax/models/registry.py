"""The model registry: every family, every published variant, by name.

    build_model("32s", scale=2)            # DRSAN-32s (the short DRSAN names keep working)
    build_model("drsan-48m", scale=4)
    build_model("edsr-baseline", scale=3)
    build_model("mdsr", scale=4)           # multi-scale: scale picks the branch that runs

Model names are the families' variants as `Family.model_name` spells them: `drsan-32s` ...
`drsan-48m`, `dran`, `dran-s`, `edsr-baseline`, `edsr`, `mdsr-baseline`, `mdsr`, `lesrcnn`,
`lesrcnn-s`, `smfanet`, `smfanet-plus`, `span`, `span-tiny`, `safmn`, `safmn-ntire`;
`MODEL_NAMES` lists them in that order.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import flax.linen as nn

from drsan_jax.models import dran, drsan, edsr, lesrcnn, mdsr, safmn, smfanet, span
from drsan_jax.models.family import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (
    drsan.FAMILY, dran.FAMILY, edsr.FAMILY, mdsr.FAMILY, lesrcnn.FAMILY, smfanet.FAMILY,
    span.FAMILY, safmn.FAMILY)}

# Public model name -> (family, variant).
_NAMES: dict[str, tuple[Family, str]] = {
    family.model_name(variant): (family, variant)
    for family in FAMILIES.values() for variant in family.variants}
MODEL_NAMES: tuple[str, ...] = tuple(_NAMES)
# The DRSAN variants' short names ("32s"), as the paper and earlier releases spell them.
_ALIASES = {variant: drsan.FAMILY.model_name(variant) for variant in drsan.VARIANTS}


def resolve(name: str) -> tuple[Family, str]:
    """(family, variant) of a model name ("drsan-32s", "32s", "edsr", ...).

    Raises:
      ValueError: an unknown name; the message lists the valid ones and the nearest.
    """
    key = _ALIASES.get(name, name)
    if key not in _NAMES:
        near = difflib.get_close_matches(str(name), [*MODEL_NAMES, *_ALIASES], n=2)
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
        raise ValueError(f"unknown model {name!r}{hint}; expected one of {list(MODEL_NAMES)}")
    return _NAMES[key]


def get_family(name: str) -> Family:
    """The family of that name ("drsan", "edsr", ...)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of {list(FAMILIES)}")
    return FAMILIES[name]


def family_of(model: nn.Module) -> Family:
    """The family a model module belongs to."""
    for family in FAMILIES.values():
        if isinstance(model, family.module):
            return family
    raise ValueError(f"{type(model).__name__} is not a model of a registered family")


def padded_batches_exact(model: nn.Module) -> bool:
    """Whether `model`'s family computes a padded, masked batch exactly (`Family`); True for a
    module outside the registry, which the caller vouches for."""
    try:
        return family_of(model).padded_batches_exact
    except ValueError:
        return True


def deploy(model: nn.Module, params: Any) -> tuple[nn.Module, Any]:
    """`model` and `params` in their family's inference form (`Family.deploy`): a training-form
    SPAN folded; any other model as it is."""
    try:
        family = family_of(model)
    except ValueError:
        return model, params
    return (model, params) if family.deploy is None else family.deploy(model, params)


def build_model(name: str = "32s", scale: int = 2, **overrides: Any) -> nn.Module:
    """Builds a published model.

    Args:
      name: a model name (`MODEL_NAMES`, or a DRSAN short name such as "32s").
      scale: 2, 3 or 4; for a multi-scale model, the scale whose branch runs.
      **overrides: any other attribute of the family's module (ablation switches, dtype, ...).

    Returns:
      The (uninitialised) Flax module.
    """
    family, variant = resolve(name)
    if scale not in family.scales:
        raise ValueError(f"{family.model_name(variant)} has no scale {scale!r}; expected one of "
                         f"{list(family.scales)}")
    fields = {f.name for f in dataclasses.fields(family.module)} - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {family.model_name(variant)} option(s) {unknown}; expected "
                         f"some of {sorted(fields - {'scale'})}")
    return family.module(scale=scale, **{**family.variants[variant], **overrides})


__all__ = ["FAMILIES", "MODEL_NAMES", "build_model", "deploy", "family_of", "get_family",
           "padded_batches_exact", "resolve"]
