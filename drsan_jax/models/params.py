"""Parameter trees of any model: shapes, counts, flat names, per-scale parts, a fast init.

Flat names join a parameter's path with "/" ("DRAG_0/DRM/conv_in/kernel"): the names of the
compact weights files, of checkpoints' error messages and of the PyTorch importer's tables.
Which top-level names depend on the scale is the convention of `drsan_jax.models.family`:
`upsampler` in a single-scale model, and `<name>_x<s>` branches in a multi-scale one.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from drsan_jax.models.family import UPSAMPLER, branch_scale
from drsan_jax.models.registry import family_of

SEPARATOR = "/"
# Leaves of this name start at one (Flax's name for a norm's multiplier); others at zero.
ONE_INIT = "scale"


def flatten(params: Any) -> dict[str, Any]:
    """{"DRAG_0/DRM/conv_in/kernel": leaf, ...} from a nested parameter dict."""
    return traverse_util.flatten_dict(params, sep=SEPARATOR)


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten`."""
    return traverse_util.unflatten_dict(flat, sep=SEPARATOR)


def is_scale_dependent(flat_name: str) -> bool:
    """Whether a flat parameter name lies in a layer whose shape or use depends on the scale."""
    top = flat_name.split(SEPARATOR, 1)[0]
    return top == UPSAMPLER or branch_scale(top) is not None


def param_shapes(model: nn.Module, in_channels: int = 3) -> Any:
    """Parameter shapes (`jax.ShapeDtypeStruct`s) of `model`, without computing anything.

    Args:
      model: a model, or one of its submodules.
      in_channels: channels of the module's input (3 for a whole model).
    """
    # 16 pixels: the smallest input of every family (SAFMN's NTIRE variant pools by 16).
    x = jax.ShapeDtypeStruct((1, 16, 16, in_channels), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x)["params"]


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


def scale_path(params: Any, scale: int) -> Any:
    """The part of a multi-scale model's parameters that runs at `scale`.

    Branches of other scales are the top-level entries named `..._x<t>`, t != scale (the
    convention of `drsan_jax.models.family`); a single-scale model's tree comes back whole.
    """
    return {k: v for k, v in params.items() if branch_scale(k) in (None, scale)}


def init_params(model: nn.Module, rng: jax.Array, family_init: str | None = None,
                in_channels: int = 3) -> Any:
    """Initialises `model`'s parameters the way its family's authors did, quickly.

    "glorot" families (DRSAN, DRAN): Glorot-uniform kernels, zero biases. "torch" families
    (EDSR, MDSR, LESRCNN): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases, fan_in
    = kh*kw*cin of the convolution. PReLU slopes are zero in both, and so is every other leaf
    (norms' biases, SAFMN's GRN), except those named `scale` (`ONE_INIT`: LayerNorm weights,
    SMFANet's alpha), which start at one. These are the distributions
    `model.init` draws from too; here every value comes from one uniform draw, because
    compiling Flax's init (one random-number program per kernel) takes seconds on a CPU while
    this takes milliseconds.

    Args:
      model: the model (or any of its submodules: then give `family_init` and `in_channels`).
      rng: a `jax.random.key`.
      family_init: "glorot" or "torch"; default: the family of `model`.
      in_channels: channels of the module's input (3 for a whole model).

    Returns:
      The parameter tree, float32 (or `model.param_dtype`).
    """
    init = family_init or family_of(model).init
    # Sorted paths: the order of jax's tree flattening, which earlier releases drew in.
    flat = dict(sorted(traverse_util.flatten_dict(param_shapes(model, in_channels)).items()))

    def bound(path: tuple[str, ...], shape: tuple[int, ...]) -> float:
        """Half-width of the uniform draw of one leaf; 0 for the leaves that start at zero."""
        leaf = path[-1]
        if leaf == "kernel":
            *receptive, fan_in, fan_out = shape
            if init == "glorot":
                return math.sqrt(6.0 / (math.prod(receptive) * (fan_in + fan_out)))
            return 1.0 / math.sqrt(math.prod(shape[:-1]))
        if leaf == "bias" and init == "torch" and (*path[:-1], "kernel") in flat:
            kernel = flat[(*path[:-1], "kernel")].shape
            return 1.0 / math.sqrt(math.prod(kernel[:-1]))
        return 0.0

    bounds = {path: bound(path, s.shape) for path, s in flat.items()}

    @jax.jit
    def draw(key):
        total = sum(s.size for path, s in flat.items() if bounds[path])
        u = jax.random.uniform(key, (total,), jnp.float32, -1.0, 1.0)
        leaves, offset = {}, 0
        for path, s in flat.items():
            if not bounds[path]:
                fill = jnp.ones if path[-1] == ONE_INIT else jnp.zeros
                leaves[path] = fill(s.shape, s.dtype)
                continue
            leaves[path] = (bounds[path] * u[offset:offset + s.size]).reshape(s.shape).astype(
                s.dtype)
            offset += s.size
        return traverse_util.unflatten_dict(leaves)

    return draw(rng)


__all__ = ["SEPARATOR", "count_params", "flatten", "init_params", "is_scale_dependent",
           "param_shapes", "scale_path", "unflatten"]
