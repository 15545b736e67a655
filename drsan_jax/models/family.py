"""What the rest of the package needs to know about a model family, declared by the family.

Each family file (`drsan.py`, `dran.py`, `edsr.py`, `mdsr.py`, `lesrcnn.py`, `smfanet.py`,
`span.py`, `safmn.py`) ends with one
`FAMILY = Family(...)`; `drsan_jax.models.registry` collects them. Nothing outside `models/`
imports a family file: training, evaluation, checkpoints, upscaling and the summary work from
the `Family` record alone.

Conventions every family module follows, so that this record is all the pipeline needs:
- a Flax Linen module with a property `scales`, the scales its parameters serve (`(scale,)` for
  a single-scale network), and attributes `scale`, the fields named in `size_fields` and
  `option_fields`, `dtype`, `param_dtype` and `conv_impl`, called as `module(lq, mask=None)` on
  an NHWC RGB batch in [0, 1], returning float32 RGB in [0, 1] at `scale` times the size, with
  an optional validity mask that makes a padded batch equal each image run alone;
- single-scale families keep their scale-dependent layers under the top-level name
  `upsampler`; multi-scale families (one network for every scale in `scales`, the branch picked
  by the `scale` attribute) name each scale's own layers with the suffix `_x<s>`, and build all
  branches at initialisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

# The upscaling factors of the zoo; a family serves some or all of them (`Family.scales`).
SCALES = (2, 3, 4)
# The top-level name of a single-scale model's scale-dependent layers.
UPSAMPLER = "upsampler"


def branch_name(name: str, scale: int) -> str:
    """The top-level name of a multi-scale model's layers for one scale: "upsampler_x3"."""
    return f"{name}_x{scale}"


def branch_scale(name: str) -> int | None:
    """The scale a top-level name's branch serves ("pre_x3" -> 3), or None for shared layers."""
    for scale in SCALES:
        if name.endswith(f"_x{scale}"):
            return scale
    return None


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family and its published variants.

    Attributes:
      name: the family's name ("drsan", "dran", "edsr", "mdsr", "lesrcnn").
      module: the Flax module class.
      variants: variant -> the values of `size_fields` that define it. A variant's public
        model name is `model_name(variant)`.
      size_fields: the constructor fields a variant sets.
      option_fields: other constructor fields stored with a checkpoint (ablation switches and
        the like); their defaults are the module's.
      init: "glorot" (TensorFlow's default) or "torch" (PyTorch's `nn.Conv2d` default).
      scales: the scales the family is built for.
      padded_batches_exact: whether a padded batch with its validity mask computes exactly
        what each image computes alone. False for families whose output depends on the
        image's size as a whole (SMFANet's per-image variance, SAFMN's pooling grid and GRN):
        their modules refuse a mask, inference runs each image at its own shape
        (`inference.Predictor` switches to exact shapes), and tiled upscaling is approximate.
      deploy: (model, params) -> (model, params) of the inference form, for a family with a
        training form that differs (SPAN's re-parameterised branches, folded); None: the
        trained model is the deployed one. `models.deploy` applies it.
      description: one line for tables and logs.
    """

    name: str
    module: type[nn.Module]
    variants: Mapping[str, Mapping[str, Any]]
    size_fields: tuple[str, ...]
    option_fields: tuple[str, ...] = ()
    init: str = "glorot"
    scales: tuple[int, ...] = SCALES
    padded_batches_exact: bool = True
    deploy: Callable[[nn.Module, Any], tuple[nn.Module, Any]] | None = None
    description: str = ""

    def model_name(self, variant: str) -> str:
        """The public name of a variant: "drsan-32s", "edsr-baseline", "lesrcnn-s", ..."""
        return variant if variant.startswith(self.name) else f"{self.name}-{variant}"

    def fields(self) -> tuple[str, ...]:
        """Every constructor field a model configuration stores besides family and variant."""
        return ("scale", *self.size_fields, *self.option_fields, "dtype")


__all__ = ["SCALES", "UPSAMPLER", "Family", "branch_name", "branch_scale"]
