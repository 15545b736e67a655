"""MDSR and MDSR-baseline: EDSR's multi-scale network, one model for x2, x3 and x4.

`docs/networks/edsr_mdsr.md`, as the official PyTorch code builds it:

    x = lq - mean;  h = conv3x3(3->64)(x)                          shared head
    p = pre_x<s>(h): two 5x5 EDSR residual blocks                  per scale
    res = conv3x3(body(p)) + p: B 3x3 residual blocks + a conv     shared body; skip from p
    out = conv3x3(64->3)(upsampler_x<s>(res)) + mean               own upsampler, shared output

The `scale` attribute picks the branch that runs; all three branches exist in the parameters
(they are all built at initialisation). MDSR-baseline: B = 16; MDSR: B = 80.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.models import layers
from drsan_jax.models.family import SCALES, Family, branch_name
from drsan_jax.models.layers import ResBlock, masked, mean_shift, upsample_mask

Dtype = Any

VARIANTS: dict[str, dict[str, int]] = {
    "mdsr-baseline": {"features": 64, "num_blocks": 16},
    "mdsr": {"features": 64, "num_blocks": 80},
}


class PreProcess(nn.Module):
    """A scale's pre-processing: two EDSR residual blocks with 5x5 kernels."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        for i in range(2):
            h = ResBlock(self.features, 5, 1.0, self.dtype, self.param_dtype, self.conv_impl,
                         name=f"block_{i}")(h, mask)
        return h


class MDSR(nn.Module):
    """Multi-scale deep super-resolution network.

    Attributes:
      scale: the scale whose pre-processing and upsampler run, 2, 3 or 4.
      features: channels F (64).
      num_blocks: shared residual blocks B (16 for MDSR-baseline, 80 for MDSR).
      dtype: computation dtype; the output is float32.
      param_dtype: parameter dtype.
      conv_impl: "auto", "xla" or "im2col" (`drsan_jax.models.conv`).
    """

    scale: int = 2
    features: int = 64
    num_blocks: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def scales(self) -> tuple[int, ...]:
        """The scales these parameters serve: all of them."""
        return SCALES

    def __post_init__(self):
        layers.check_model("MDSR", self, SCALES, ("features", "num_blocks"))
        super().__post_init__()

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Super-resolves a batch at `scale`: (B, H, W, 3) in [0, 1] -> (B, sH, sW, 3)."""
        layers.check_input("MDSR", lq, mask)
        # Initialisation builds every scale's branch; a forward pass runs one.
        branches = SCALES if self.is_initializing() else (self.scale,)
        pre = {s: PreProcess(self.features, self.dtype, self.param_dtype, self.conv_impl,
                             name=branch_name("pre", s)) for s in branches}
        upsamplers = {s: layers.Upsampler(self.features, s, "torch", "torch", self.dtype,
                                          self.param_dtype, self.conv_impl,
                                          name=branch_name("upsampler", s)) for s in branches}
        conv = functools.partial(layers.conv, self, init="torch")
        x = masked(mean_shift(lq.astype(self.dtype), -1.0), mask)
        h = masked(conv(self.features, 3, "head", in_features=3)(x), mask)
        p = {s: pre[s](h, mask) for s in branches}[self.scale]
        res = p
        for b in range(self.num_blocks):
            res = ResBlock(self.features, 3, 1.0, self.dtype, self.param_dtype, self.conv_impl,
                           name=f"block_{b}")(res, mask)
        res = masked(conv(self.features, 3, "body_tail", in_features=self.features)(res),
                     mask) + p
        output = conv(3, 3, "output", in_features=self.features)
        out = {s: output(upsamplers[s](res, mask)) for s in branches}[self.scale]
        out = mean_shift(out, 1.0)
        return masked(out, upsample_mask(mask, self.scale)).astype(jnp.float32)


FAMILY = Family(
    name="mdsr",
    module=MDSR,
    variants=VARIANTS,
    size_fields=("features", "num_blocks"),
    init="torch",
    description="MDSR (Lim et al., CVPRW 2017): one network for x2/x3/x4",
)

__all__ = ["FAMILY", "MDSR", "PreProcess", "VARIANTS"]
