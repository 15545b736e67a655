"""Depthwise (grouped, one input channel per group) 'same' convolutions as shifted multiply-adds.

SMFANet and SAFMN use depthwise 3x3 convolutions (`feature_group_count` equal to the input
channels). On XLA:CPU their gradient is pathologically slow: for a batch of 16 48x48 patches of
36 channels with 2 outputs per channel (SMFANet's `lde_0`), XLA's grouped convolution takes
6.1 s for the forward and backward pass, where the same function written as nine shifted
multiply-adds takes 91 ms (`benchmarks/README.md`, "Depthwise convolutions"). A depthwise
convolution is exactly that sum,

    y[b, h, w, o] = sum_{i, j} k[i, j, 0, o] * x_pad[b, h + i, w + j, o // M],

with M = features / groups outputs per input channel (PyTorch's and Flax's channel rule), so the
"shifted" form builds it from slices, products and sums, whose gradients XLA fuses into a few
elementwise passes. Its forward values equal XLA's convolution's up to the order of the nine
additions (float32 rounding; tests/models/test_depthwise.py).

`DepthwiseConv` has `nn.Conv`'s parameters (`kernel` (kh, kw, 1, features), `bias`
(features,)), so checkpoints are interchangeable with the `nn.Conv(feature_group_count=...)` it
replaces. The implementation follows `conv_impl` (`drsan_jax.models.conv`): "im2col", the CPU
default, takes the shifted form; "xla" (the default on GPUs and TPUs, whose libraries have
depthwise kernels) keeps XLA's grouped convolution.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from drsan_jax.models import conv as conv_lib

Dtype = Any


def depthwise_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's grouped convolution with one input channel per group (stride 1, 'SAME')."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=x.shape[-1])


def depthwise_shifted(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The same convolution as sum_{i,j} k[i, j] * (shifted x): see the module docstring.

    Args:
      x: (B, H, W, C) input.
      kernel: (kh, kw, 1, C * M) kernel; output channel o reads input channel o // M.

    Returns:
      (B, H, W, C * M) output.
    """
    kh, kw, one, features = kernel.shape
    b, h, w, c = x.shape
    if one != 1 or features % c:
        raise ValueError(f"a depthwise kernel for {c} channels is (kh, kw, 1, a multiple of "
                         f"{c}), got {kernel.shape}")
    multiplier = features // c
    pad = conv_lib._same_padding  # lax's 'SAME' split, as the plain convolution pads
    xp = jnp.pad(x, ((0, 0), pad(kh), pad(kw), (0, 0)))[..., None]
    taps = kernel.reshape(kh, kw, c, multiplier)  # output c * M + m reads input channel c
    out = None
    for i in range(kh):
        for j in range(kw):
            term = xp[:, i:i + h, j:j + w] * taps[i, j]
            out = term if out is None else out + term
    return out.reshape(b, h, w, features)


class DepthwiseConv(nn.Module):
    """`nn.Conv(features, kernel_size, padding="SAME", feature_group_count=groups)` where each
    group has one input channel, with the implementation chosen by `impl`.

    Attributes:
      features: output channels (a multiple of the input channels).
      kernel_size: (kh, kw).
      groups: the group count, which must equal the input's channels.
      use_bias: add a bias.
      dtype: computation dtype (None: promoted from the input and parameters, as in nn.Conv).
      param_dtype: parameter dtype.
      kernel_init: initializer of the kernel.
      bias_init: initializer of the bias.
      impl: "auto", "xla" or "im2col" (`conv.resolve_impl`; "im2col" takes the shifted form).
    """

    features: int
    kernel_size: Sequence[int]
    groups: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., jax.Array] = nn.initializers.zeros
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.groups or self.features % self.groups:
            raise ValueError(f"{self.name}: a depthwise convolution of {self.groups} groups "
                             f"needs {self.groups} input channels and a multiple of "
                             f"{self.groups} outputs, got {x.shape[-1]} and {self.features}")
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, 1, self.features),
                            self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        impl = conv_lib.resolve_impl(self.impl)
        y = depthwise_shifted(x, kernel) if impl == "im2col" else depthwise_xla(x, kernel)
        return y if bias is None else y + bias


__all__ = ["DepthwiseConv", "depthwise_shifted", "depthwise_xla"]
