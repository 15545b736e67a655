"""Layers shared by every model family: convolutions, PReLU, pixel shuffle, upsampler, masks.

Every family builds its convolutions with `conv(...)`, which fixes what the families agree on
(stride 1, 'same' zero padding, a bias unless asked otherwise, the implementation choice of
`drsan_jax.models.conv`) and takes the family's initialisation by name:

- "glorot": Glorot-uniform kernels, zero biases (TensorFlow's `tf.layers` default; DRSAN, DRAN);
- "torch": PyTorch's default for `nn.Conv2d`, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and
  biases alike, fan_in = kh * kw * cin (EDSR, MDSR, LESRCNN).

`drsan_jax.models.init_params` draws from the same distributions without Flax's per-kernel
random programs; `model.init` stays correct too.

Validity masks (B, H, W, 1), 1 on an image's pixels and 0 on the padding that brings a batch to
a common size, let a padded batch compute exactly what each image computes alone: re-zeroing a
convolution's output outside the image makes the next 'same' convolution see the zeros it would
see at the true border. `masked`, `upsample_mask` and `pool_mask` carry the mask through the
layers that change the grid.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.models import conv as conv_lib
from drsan_jax.models import depthwise

Dtype = Any

INITS = ("glorot", "torch")
SHUFFLE_ORDERS = ("tf", "torch")
# DIV2K's RGB mean on the [0, 1] scale: the frozen MeanShift of EDSR, MDSR and LESRCNN.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _torch_uniform(key: jax.Array, shape: tuple[int, ...], dtype: Dtype, fan_in: int
                   ) -> jax.Array:
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def initializers(init: str, kernel_size: int, in_features: int | None = None
                 ) -> tuple[Callable, Callable]:
    """(kernel_init, bias_init) of a family's initialisation (see the module docstring)."""
    if init == "glorot":
        return nn.initializers.glorot_uniform(), nn.initializers.zeros
    if init != "torch":
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")

    def kernel_init(key, shape, dtype=jnp.float32):
        return _torch_uniform(key, shape, dtype, math.prod(shape[:-1]))

    def bias_init(key, shape, dtype=jnp.float32):
        if in_features is None:
            raise ValueError("a PyTorch-initialised bias needs the convolution's input channels")
        return _torch_uniform(key, shape, dtype, kernel_size * kernel_size * in_features)

    return kernel_init, bias_init


def conv(module: nn.Module, features: int, kernel: int, name: str, *, init: str,
         in_features: int | None = None, use_bias: bool = True, groups: int = 1,
         padding: str = "SAME") -> conv_lib.Conv | nn.Conv:
    """A stride-1 'same' convolution with the family's initialisation, in `module`'s dtypes.

    The one convolution factory of every family. Its parameters are those of `nn.Conv`
    (`kernel` (k, k, cin / groups, features), `bias` (features,)); `module.conv_impl` only
    chooses how the kernel gradient is computed (`drsan_jax.models.conv`). Depthwise
    convolutions (groups with one input channel each, `in_features=1`: SMFANet's and SAFMN's)
    are `depthwise.DepthwiseConv`, whose `conv_impl` picks shifted multiply-adds on CPU; other
    grouped and 'VALID' convolutions (SPAN's training-form branches) are Flax's own `nn.Conv`.
    Both read output channel o from group o // (features / groups): PyTorch's rule, so the
    authors' grouped kernels need only the usual transpose.

    Args:
      module: the module building the convolution; its `dtype` (computation), `param_dtype`
        and `conv_impl` ("auto", "xla" or "im2col") are used.
      features: output channels.
      kernel: kernel side k.
      name: the parameter scope.
      init: "glorot" (TensorFlow's default) or "torch" (`nn.Conv2d`'s default).
      in_features: input channels, needed for the "torch" bias bound.
      use_bias: add a bias.
      groups: `feature_group_count`; in_features (for the "torch" bias bound) is then the
        channels of one group.
      padding: "SAME", or "VALID" for no padding.
    """
    kernel_init, bias_init = initializers(init, kernel, in_features)
    if groups != 1 and in_features == 1 and padding == "SAME":
        return depthwise.DepthwiseConv(features, (kernel, kernel), groups, use_bias=use_bias,
                                       kernel_init=kernel_init, bias_init=bias_init,
                                       dtype=module.dtype, param_dtype=module.param_dtype,
                                       impl=module.conv_impl, name=name)
    if groups != 1 or padding != "SAME":
        return nn.Conv(features, (kernel, kernel), padding=padding, feature_group_count=groups,
                       use_bias=use_bias, kernel_init=kernel_init, bias_init=bias_init,
                       dtype=module.dtype, param_dtype=module.param_dtype, name=name)
    return conv_lib.Conv(features, (kernel, kernel), use_bias=use_bias, kernel_init=kernel_init,
                         bias_init=bias_init, dtype=module.dtype,
                         param_dtype=module.param_dtype, impl=module.conv_impl, name=name)


class PReLU(nn.Module):
    """Per-channel PReLU with slopes initialised to 0 (it starts as a ReLU)."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
        alpha = alpha.astype(x.dtype)
        return jnp.where(x >= 0, x, alpha * x)


def depth_to_space(x: jax.Array, s: int, order: str = "tf") -> jax.Array:
    """Pixel shuffle: (B, H, W, s*s*C) -> (B, H*s, W*s, C).

    Output pixel (h*s+i, w*s+j), channel ch comes from input channel
    - order "tf" (TensorFlow's `depth_to_space`; DRSAN, DRAN): (i*s + j)*C + ch;
    - order "torch" (PyTorch's `PixelShuffle`; EDSR, MDSR, LESRCNN): ch*s*s + i*s + j.
    Each family uses its authors' order, so their weights need no channel permutation.
    """
    b, h, w, cin = x.shape
    c = cin // (s * s)
    if order == "tf":
        x = x.reshape(b, h, w, s, s, c)  # (B, H, W, i, j, C)
        x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H, i, W, j, C)
    elif order == "torch":
        x = x.reshape(b, h, w, c, s, s)  # (B, H, W, C, i, j)
        x = x.transpose(0, 1, 4, 2, 5, 3)  # (B, H, i, W, j, C)
    else:
        raise ValueError(f"pixel shuffle order must be one of {list(SHUFFLE_ORDERS)}, got "
                         f"{order!r}")
    return x.reshape(b, h * s, w * s, c)


def masked(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Zeroes x outside the valid region (a no-op without a mask)."""
    return x if mask is None else x * mask.astype(x.dtype)


def upsample_mask(mask: jax.Array | None, s: int) -> jax.Array | None:
    """Nearest-neighbour upsampling of a (B, H, W, 1) validity mask by s."""
    if mask is None:
        return None
    return jnp.repeat(jnp.repeat(mask, s, axis=1), s, axis=2)


def pool_mask(mask: jax.Array | None, size: int = 2) -> jax.Array | None:
    """The mask after a `size` x `size`, stride-`size`, 'VALID' max-pool of the features.

    A pooled pixel is valid when its whole window is: with images aligned at the top-left
    corner, that is the floor(H/size) x floor(W/size) grid the image alone would pool to.
    """
    if mask is None:
        return None
    return -nn.max_pool(-mask, (size, size), strides=(size, size), padding="VALID")


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over H and W of (B, H, W, C) features, in float32, over the valid pixels only."""
    x = x.astype(jnp.float32)  # H*W summands: float32 even under bfloat16 compute
    if mask is None:
        return jnp.mean(x, axis=(1, 2))
    valid = mask.astype(jnp.float32)
    return jnp.sum(x * valid, axis=(1, 2)) / jnp.sum(valid, axis=(1, 2))


class Upsampler(nn.Module):
    """ESPCN upsampler: conv3x3 to c*s*s then pixel shuffle; x4 as two x2 stages.

    No activation, as in every family here. Parameters `conv_0` (and `conv_1` at x4).
    """

    features: int
    scale: int
    order: str = "tf"
    init: str = "glorot"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        stages = [2, 2] if self.scale == 4 else [self.scale]
        for i, s in enumerate(stages):
            x = conv(self, self.features * s * s, 3, f"conv_{i}", init=self.init,
                     in_features=self.features)(x)
            x = depth_to_space(masked(x, mask), s, self.order)
            mask = upsample_mask(mask, s)
        return x


def gelu(x: jax.Array) -> jax.Array:
    """PyTorch's `nn.GELU()`: the exact erf form, not Flax's tanh default."""
    return nn.gelu(x, approximate=False)


def mean_shift(x: jax.Array, sign: float) -> jax.Array:
    """Adds sign * the DIV2K RGB mean: the authors' frozen MeanShift layers."""
    return x + sign * jnp.asarray(DIV2K_RGB_MEAN, x.dtype)


class ResBlock(nn.Module):
    """EDSR's residual block without batch norm: h + res_scale * conv(ReLU(conv(h))).

    Used by EDSR and MDSR.
    """

    features: int
    kernel: int = 3
    res_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        t = conv(self, self.features, self.kernel, "conv1", init="torch",
                 in_features=self.features)(h)
        t = masked(nn.relu(t), mask)
        t = masked(conv(self, self.features, self.kernel, "conv2", init="torch",
                        in_features=self.features)(t), mask)
        return h + t * self.res_scale if self.res_scale != 1 else h + t


def check_choice(owner: str, name: str, value: Any, choices: Any) -> None:
    """Raises a ValueError naming `owner`'s attribute unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{owner} {name} must be one of {list(choices)}, got {value!r}")


def check_positive(owner: str, module: nn.Module, names: tuple[str, ...]) -> None:
    """Raises a ValueError unless each named attribute of `module` is a positive integer."""
    for name in names:
        value = getattr(module, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner} {name} must be a positive integer, got {value!r}")


def check_model(owner: str, module: nn.Module, scales: tuple[int, ...],
                positive: tuple[str, ...]) -> None:
    """A model's constructor checks: its scale, `conv_impl`, and positive integer sizes."""
    check_choice(owner, "scale", module.scale, scales)
    check_choice(owner, "conv_impl", module.conv_impl, conv_lib.IMPLS)
    check_positive(owner, module, positive)


def check_input(family: str, lq: jax.Array, mask: jax.Array | None) -> None:
    """Raises a ValueError unless lq is an NHWC RGB batch and mask fits it."""
    if lq.ndim != 4 or lq.shape[-1] != 3:
        raise ValueError(f"{family} expects an NHWC RGB batch (B, H, W, 3), got shape {lq.shape}")
    if mask is not None and mask.shape != (*lq.shape[:3], 1):
        raise ValueError(f"{family} mask must have shape {(*lq.shape[:3], 1)}, got {mask.shape}")


def check_unmasked(family: str, mask: jax.Array | None) -> None:
    """Refuses a validity mask: the family's output depends on the whole image's size."""
    if mask is not None:
        raise ValueError(f"{family} takes no validity mask: its per-image statistics and pooling "
                         f"grid follow the image size, so run each image alone at its own shape")


def check_min_side(family: str, lq: jax.Array, side: int) -> None:
    """Raises a ValueError naming the size unless both sides are at least `side` pixels."""
    # Symbolic sizes (a shape-polymorphic export) are checked by the export's constraints.
    if all(isinstance(d, int) for d in lq.shape[1:3]) and min(lq.shape[1:3]) < side:
        raise ValueError(f"{family} needs at least {side}x{side} LR pixels (its pooled branch "
                         f"works at 1/{side} of the size), got {lq.shape[1]}x{lq.shape[2]}")


__all__ = [
    "DIV2K_RGB_MEAN",
    "INITS",
    "PReLU",
    "ResBlock",
    "SHUFFLE_ORDERS",
    "Upsampler",
    "check_choice",
    "check_input",
    "check_min_side",
    "check_model",
    "check_positive",
    "check_unmasked",
    "conv",
    "depth_to_space",
    "gelu",
    "initializers",
    "masked",
    "masked_mean",
    "mean_shift",
    "pool_mask",
    "upsample_mask",
]
