"""Warm starts (`--config.init_from`): a trained model's weights copied into a new run's."""

from __future__ import annotations

from typing import Any

import jax

from drsan_jax.models import flatten, is_scale_dependent, model_name, unflatten
from drsan_jax.weights import loading


def params_from_checkpoint(path: str, model_cfg: dict[str, Any], params: Any
                           ) -> tuple[Any, list[str], list[str]]:
    """The `init_from` rule: copies a checkpoint's parameters into freshly initialised ones.

    Every parameter whose name and shape match is copied, as the EDSR authors start x3/x4 from
    x2. Parameters outside the scale-dependent layers (the upsampler, a multi-scale model's
    `_x<s>` branches) must all match: the source must be the same family and size with the same
    ablation switches. Scale-dependent ones that do not match keep their fresh initialisation
    (at x2 -> x4 the first upsampler conv has the same shape and is copied; at x2 -> x3 none
    is). The output convolution (c -> 3) does not depend on the scale and is copied.

    Args:
      path: anything `loading.load_model` accepts (a workdir, a shipped name, a weights file).
      model_cfg: the model configuration being trained.
      params: its fresh parameters.

    Returns:
      (params, names of copied parameters, names of re-initialised ones).
    """
    source = loading.load_model(path)
    if source.config["family"] != model_cfg["family"]:
        raise ValueError(f"--config.init_from={path!r} is a {source.name} checkpoint; it cannot "
                         f"start a {model_name(model_cfg)} model")
    src = flatten(jax.device_get(source.params))
    dst = flatten(jax.device_get(params))
    copied, fresh, mismatched = [], [], []
    for name, value in dst.items():
        if name in src and src[name].shape == value.shape:
            dst[name] = src[name]
            copied.append(name)
        elif is_scale_dependent(name):
            fresh.append(name)
        else:
            mismatched.append(f"{name} {value.shape} vs {getattr(src.get(name), 'shape', None)}")
    if mismatched:
        raise ValueError(
            f"--config.init_from={path!r} is a different network ({source.config}) from the "
            f"one being trained ({model_cfg}); these parameters do not match: "
            + ", ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else ""))
    return unflatten(dst), copied, fresh


__all__ = ["params_from_checkpoint"]
