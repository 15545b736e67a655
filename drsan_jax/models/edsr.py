"""EDSR and EDSR-baseline (Lim, Son, Kim, Nah, Lee, CVPRW 2017), as the official PyTorch code.

`docs/networks/edsr_mdsr.md`. On [0, 1] inputs (the project's one convention; the authors' code
runs at [0, 255], and converting their weights divides every bias by 255):

    x = lq - mean;  h = conv3x3(3->F)(x)
    h_b = h_{b-1} + res_scale * conv3x3(ReLU(conv3x3(h_{b-1})))      b = 1..B
    res = conv3x3(h_B) + h
    out = conv3x3(F->3)(upsampler(res)) + mean

with the frozen DIV2K RGB mean (not a parameter), PyTorch's pixel-shuffle channel order and
PyTorch's default initialisation. EDSR-baseline: B = 16, F = 64, res_scale 1; EDSR: B = 32,
F = 256, res_scale 0.1. One network per scale.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.models import layers
from drsan_jax.models.family import SCALES, Family
from drsan_jax.models.layers import ResBlock, masked, mean_shift, upsample_mask

Dtype = Any

VARIANTS: dict[str, dict[str, Any]] = {
    "edsr-baseline": {"features": 64, "num_blocks": 16, "res_scale": 1.0},
    "edsr": {"features": 256, "num_blocks": 32, "res_scale": 0.1},
}


class EDSR(nn.Module):
    """Enhanced deep residual network for single-image super-resolution.

    Attributes:
      scale: upscaling factor, 2, 3 or 4.
      features: channels F.
      num_blocks: residual blocks B.
      res_scale: residual scaling of each block's branch.
      dtype: computation dtype; the output is float32.
      param_dtype: parameter dtype.
      conv_impl: "auto", "xla" or "im2col" (`drsan_jax.models.conv`).
    """

    scale: int = 2
    features: int = 64
    num_blocks: int = 16
    res_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def scales(self) -> tuple[int, ...]:
        """The scales these parameters serve: EDSR is one network per scale."""
        return (self.scale,)

    def __post_init__(self):
        layers.check_model("EDSR", self, SCALES, ("features", "num_blocks"))
        super().__post_init__()

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Super-resolves a batch: (B, H, W, 3) in [0, 1] -> (B, sH, sW, 3) float32."""
        layers.check_input("EDSR", lq, mask)
        conv = functools.partial(layers.conv, self, init="torch")
        x = masked(mean_shift(lq.astype(self.dtype), -1.0), mask)
        h = masked(conv(self.features, 3, "head", in_features=3)(x), mask)
        res = h
        for b in range(self.num_blocks):
            res = ResBlock(self.features, 3, self.res_scale, self.dtype, self.param_dtype,
                           self.conv_impl, name=f"block_{b}")(res, mask)
        res = masked(conv(self.features, 3, "body_tail", in_features=self.features)(res),
                     mask) + h
        up = layers.Upsampler(self.features, self.scale, "torch", "torch", self.dtype,
                              self.param_dtype, self.conv_impl, name="upsampler")(res, mask)
        out = mean_shift(conv(3, 3, "output", in_features=self.features)(up), 1.0)
        return masked(out, upsample_mask(mask, self.scale)).astype(jnp.float32)


FAMILY = Family(
    name="edsr",
    module=EDSR,
    variants=VARIANTS,
    size_fields=("features", "num_blocks", "res_scale"),
    init="torch",
    description="EDSR (Lim et al., CVPRW 2017), official PyTorch code",
)

__all__ = ["EDSR", "FAMILY", "VARIANTS"]
