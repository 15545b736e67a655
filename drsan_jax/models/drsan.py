"""The DRSAN network (Park, Soh, Cho, IEEE TMM; arXiv 2112.04488) as Flax Linen modules.

Layout is NHWC throughout. The input is an LR RGB batch in [0, 1]; the output is the HR batch in
the same range (not clipped). Module and parameter names follow the paper's vocabulary: a DRSAN is
a head convolution, K dynamic residual attention groups (`DRAG`), a body tail with the global
residual, an ESPCN upsampler and an output convolution. Inside a DRAG, the dynamic residual module
(`DRM`) predicts per-image path weights r, and each residual block is followed by a DRSA step
(dynamic residual attention `d = sum_k r(n,k) f_k`, then residual self-attention gating).

Analysis hooks cost nothing unless asked for: the DRA coefficients of every DRAG are sown into the
`intermediates` collection and the RSA attention maps into the `attention` collection, so

    y, state = model.apply(variables, x, mutable=["intermediates", "attention"])

returns them, and a plain `model.apply(variables, x)` drops them at trace time.

Every module also takes an optional validity `mask` (1 on real pixels, 0 on padding). With it, a
batch padded to a common size gives exactly the output of each image run alone: every convolution
output is re-zeroed outside the image, so the next 'same' convolution sees the zeros it would see
at the true border, and each DRM averages over the real pixels only. This is what lets evaluation
compile one program per size bucket instead of one per image.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.models import layers
from drsan_jax.models.dra import ResidualBlock, dynamic_residual, num_paths, path_index
from drsan_jax.models.family import SCALES, Family
from drsan_jax.models.layers import PReLU, upsample_mask
from drsan_jax.models.layers import masked as _masked

Dtype = Any

DRM_ACTIVATIONS = ("none", "tanh", "sigmoid")
RESIDUAL_MODES = ("dynamic", "plain", "ones")

# Paper section IV-C: variant -> channels c, residual blocks per DRAG N, DRAGs K.
VARIANTS: dict[str, dict[str, int]] = {
    "32s": {"features": 32, "num_blocks": 4, "num_groups": 4},
    "32m": {"features": 32, "num_blocks": 4, "num_groups": 8},
    "32l": {"features": 32, "num_blocks": 4, "num_groups": 10},
    "48s": {"features": 48, "num_blocks": 3, "num_groups": 4},
    "48m": {"features": 48, "num_blocks": 3, "num_groups": 8},
}


class DRM(nn.Module):
    """Dynamic residual module: M = N(N+1)/2 path weights per image from the DRAG input.

    r = mean_HW(conv1x1(16 -> M)(PReLU(conv1x1(c -> 16)(f0)))), optionally squashed by the
    activation of the paper's Table VI ablation (the published model uses none).
    """

    num_blocks: int
    activation: str = "none"
    hidden: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, f0: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        h = layers.conv(self, self.hidden, 1, "conv_in", init="glorot")(f0)
        h = PReLU(self.param_dtype, name="prelu")(h)
        h = layers.conv(self, num_paths(self.num_blocks), 1, "conv_out", init="glorot")(h)
        r = layers.masked_mean(h, mask)  # (B, M)
        if self.activation == "tanh":
            r = jnp.tanh(r)
        elif self.activation == "sigmoid":
            r = jax.nn.sigmoid(r)
        return r


class DRAG(nn.Module):
    """Dynamic residual attention group: DRM, N residual blocks with DRSA steps, 1x1 fusion."""

    features: int
    num_blocks: int
    drm_activation: str = "none"
    use_rsa: bool = True
    residual: str = "dynamic"
    use_fusion: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, f0: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        if self.residual == "dynamic":
            r = DRM(self.num_blocks, self.drm_activation, dtype=self.dtype,
                    param_dtype=self.param_dtype, conv_impl=self.conv_impl,
                    name="DRM")(f0, mask)  # (B, M)
            self.sow("intermediates", "dra_coefficients", r)
        feats = [f0]
        for n in range(1, self.num_blocks + 1):
            t = ResidualBlock(self.features, self.dtype, self.param_dtype, self.conv_impl,
                              name=f"block_{n}")(feats[-1], mask)
            if self.residual == "dynamic":
                start = path_index(n, 0)
                # A slice op, not NumPy indexing: under a symbolic batch size (jax.export,
                # jax2tf) indexing becomes a gather, which TFLite's converter cannot take.
                d = dynamic_residual(jax.lax.slice_in_dim(r, start, start + n, axis=1), feats)
            elif self.residual == "plain":
                d = feats[-1]  # SRResNet-style identity skip.
            else:  # "ones": every preceding feature with weight 1.
                d = dynamic_residual(jnp.ones((t.shape[0], n), t.dtype), feats)
            if self.use_rsa:
                # Residual self-attention (Eq. 7): a parameter-free 3-D attention map.
                attention = jax.nn.sigmoid(t)
                self.sow("attention", f"rsa_block_{n}", attention)
                f = (t + d) * attention
            else:
                f = t + d
            feats.append(f)
        if not self.use_fusion:
            return feats[-1]
        fused = jnp.concatenate(feats, axis=-1)  # (B, H, W, (N+1)c)
        fusion = layers.conv(self, self.features, 1, "fusion", init="glorot")
        return _masked(fusion(fused), mask)


class DRSAN(nn.Module):
    """Dynamic Residual Self-Attention Network.

    Attributes:
      scale: upscaling factor, 2, 3 or 4.
      features: channels c.
      num_blocks: residual blocks N per DRAG.
      num_groups: DRAGs K.
      drm_activation: "none" (published), "tanh" or "sigmoid" on the DRA coefficients.
      use_rsa: residual self-attention gating (published: True).
      residual: "dynamic" (published, DRM weights), "plain" (f_n = t + f_{n-1}) or "ones"
        (all preceding features with weight 1).
      use_fusion: concatenate f_0..f_N and fuse with a 1x1 conv (published: True); off returns f_N.
      dtype: computation dtype (e.g. jnp.bfloat16 on accelerators); the output is float32.
      param_dtype: parameter dtype.
      conv_impl: how convolution kernel gradients are computed, "auto" (per backend), "xla" or
        "im2col" (`drsan_jax.models.conv`); the same parameters and values either way.
    """

    scale: int = 2
    features: int = 32
    num_blocks: int = 4
    num_groups: int = 4
    drm_activation: str = "none"
    use_rsa: bool = True
    residual: str = "dynamic"
    use_fusion: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def scales(self) -> tuple[int, ...]:
        """The scales these parameters serve: DRSAN is one network per scale."""
        return (self.scale,)

    def __post_init__(self):
        layers.check_choice("DRSAN", "drm_activation", self.drm_activation, DRM_ACTIVATIONS)
        layers.check_choice("DRSAN", "residual", self.residual, RESIDUAL_MODES)
        layers.check_model("DRSAN", self, SCALES, ("features", "num_blocks", "num_groups"))
        super().__post_init__()

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Super-resolves a batch.

        Args:
          lq: (B, H, W, 3) low-quality RGB in [0, 1].
          mask: optional (B, H, W, 1) validity mask, 1 on each image's pixels and 0 on the
            padding that brings the batch to a common size (see the module docstring).

        Returns:
          (B, H*scale, W*scale, 3) float32 RGB, unclipped; zero on the padding when masked.
        """
        layers.check_input("DRSAN", lq, mask)
        x = _masked(lq.astype(self.dtype), mask)
        x0 = _masked(layers.conv(self, self.features, 3, "head", init="glorot")(x), mask)
        x = x0
        for k in range(self.num_groups):
            x = DRAG(self.features, self.num_blocks, self.drm_activation, self.use_rsa,
                     self.residual, self.use_fusion, self.dtype, self.param_dtype,
                     self.conv_impl, name=f"DRAG_{k}")(x, mask)
        x = layers.conv(self, self.features, 3, "body_tail", init="glorot")(x)
        x = _masked(x, mask) + x0
        x = layers.Upsampler(self.features, self.scale, "tf", "glorot", self.dtype,
                             self.param_dtype, self.conv_impl, name="upsampler")(x, mask)
        y = _masked(layers.conv(self, 3, 3, "output", init="glorot")(x),
                    upsample_mask(mask, self.scale))
        return y.astype(jnp.float32)


FAMILY = Family(
    name="drsan",
    module=DRSAN,
    variants=VARIANTS,
    size_fields=("features", "num_blocks", "num_groups"),
    option_fields=("drm_activation", "use_rsa", "residual", "use_fusion"),
    init="glorot",
    description="DRSAN (Park, Soh, Cho, IEEE TMM 2021)",
)

__all__ = [
    "DRAG",
    "DRM",
    "DRSAN",
    "DRM_ACTIVATIONS",
    "FAMILY",
    "RESIDUAL_MODES",
    "VARIANTS",
]
