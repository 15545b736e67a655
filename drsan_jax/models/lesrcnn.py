"""LESRCNN and LESRCNN-S (Tian et al., Knowledge-Based Systems 2020), as the released code.

`docs/networks/lesrcnn.md`. The authors' PyTorch code (its in-place ReLUs read with
care) computes, on [0, 1] inputs with the frozen DIV2K mean shift:

    x = lq - mean;  g = ReLU(conv1(x))                                  conv1: 3x3, 3 -> 64
    IEEB: h_0 = g;  h_i = ReLU(h_{i-1} + conv1x1(ReLU(conv3x3(h_{i-1}))))   i = 1..8
    RB:   u = ReLU(up(h_8) + up(g))         one sub-pixel upsampler, shared by both branches
    IRB:  four conv3x3 + ReLU at HR, then conv3x3 -> 3;  out = ... + mean

Only the upsampler's convolutions have biases. The parameter names are the authors' (`conv1`;
`conv2` ... `conv17`, alternately 3x3 and 1x1; `conv17_1` ... `conv17_4`; `conv18`), so their
weights map one to one. LESRCNN-S (the `lesrcnn_b` code) is the same network with one upsampler
per scale (`upsampler_x2`, `_x3`, `_x4`), the `scale` attribute picking the one that runs.

The paper's complexity table says 516K parameters; the released checkpoints, which produced the
published scores, have 626,304 at x2 (docs/networks/lesrcnn.md explains the gap). This is the released model.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.models import layers
from drsan_jax.models.family import SCALES, Family, branch_name
from drsan_jax.models.layers import masked, mean_shift, upsample_mask

Dtype = Any
IEEB_STEPS = 8
IRB_CONVS = 4

VARIANTS: dict[str, dict[str, Any]] = {
    "lesrcnn": {"features": 64, "multi_scale": False},
    "lesrcnn-s": {"features": 64, "multi_scale": True},
}


class LESRCNN(nn.Module):
    """Lightweight enhanced super-resolution CNN.

    Attributes:
      scale: upscaling factor, 2, 3 or 4 (for LESRCNN-S, the upsampler that runs).
      features: channels (64).
      multi_scale: one upsampler per scale (LESRCNN-S) instead of one for `scale`.
      dtype: computation dtype; the output is float32.
      param_dtype: parameter dtype.
      conv_impl: "auto", "xla" or "im2col" (`drsan_jax.models.conv`).
    """

    scale: int = 2
    features: int = 64
    multi_scale: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def scales(self) -> tuple[int, ...]:
        """The scales these parameters serve: all three for LESRCNN-S."""
        return SCALES if self.multi_scale else (self.scale,)

    def __post_init__(self):
        layers.check_model("LESRCNN", self, SCALES, ("features",))
        super().__post_init__()

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Super-resolves a batch: (B, H, W, 3) in [0, 1] -> (B, sH, sW, 3) float32."""
        layers.check_input("LESRCNN", lq, mask)
        c = self.features
        conv = functools.partial(layers.conv, self, init="torch", use_bias=False)
        x = masked(mean_shift(lq.astype(self.dtype), -1.0), mask)
        g = nn.relu(masked(conv(c, 3, "conv1", in_features=3)(x), mask))
        h = g
        for i in range(IEEB_STEPS):
            t = nn.relu(masked(conv(c, 3, f"conv{2 + 2 * i}", in_features=c)(h), mask))
            h = nn.relu(h + masked(conv(c, 1, f"conv{3 + 2 * i}", in_features=c)(t), mask))
        if self.multi_scale:
            # Initialisation builds every scale's upsampler; a forward pass runs one.
            branches = SCALES if self.is_initializing() else (self.scale,)
            names = {s: branch_name("upsampler", s) for s in branches}
        else:
            branches, names = (self.scale,), {self.scale: "upsampler"}
        up = {s: layers.Upsampler(c, s, "torch", "torch", self.dtype, self.param_dtype,
                                  self.conv_impl, name=names[s]) for s in branches}
        u = {s: nn.relu(up[s](h, mask) + up[s](g, mask)) for s in branches}[self.scale]
        hr_mask = upsample_mask(mask, self.scale)
        for j in range(1, IRB_CONVS + 1):
            u = nn.relu(masked(conv(c, 3, f"conv17_{j}", in_features=c)(u), hr_mask))
        out = mean_shift(conv(3, 3, "conv18", in_features=c)(u), 1.0)
        return masked(out, hr_mask).astype(jnp.float32)


FAMILY = Family(
    name="lesrcnn",
    module=LESRCNN,
    variants=VARIANTS,
    size_fields=("features", "multi_scale"),
    init="torch",
    description="LESRCNN (Tian et al., KBS 2020), released code; -s: one model for x2/x3/x4",
)

__all__ = ["FAMILY", "LESRCNN", "VARIANTS"]
