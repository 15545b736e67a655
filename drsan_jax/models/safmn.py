"""SAFMN (Sun et al., ICCV 2023) and its NTIRE 2023 challenge variant, as the authors' code.

`docs/networks/safmn.md`. The ICCV network, on [0, 1] inputs, C channels, N blocks, scale s:

    f0 = to_feat(x)                                   3x3, 3 -> C
    block: h = SAFM(LN1(h)) + h;  h = CCM(LN2(h)) + h  LN: over channels, biased, eps 1e-6
    SAFM(z): z split in 4 chunks of C/4; chunk 0 through a depthwise 3x3, chunk i = 1..3
             max-pooled to 1/2^i of the size, depthwise 3x3, nearest back up;
             out = GELU(aggr(concat)) * z           aggr: 1x1, C -> C
    CCM(z):  1x1(GELU(3x3(z)))                        C -> 2C -> C
    y = PixelShuffle_s(to_img(feats(f0) + f0))       3x3, C -> 3s^2

The NTIRE 2023 variant (`ntire2023=True`, the only SAFMN weights released in a repository)
differs: a GRN right after `to_feat` (h + gamma * h * Nx + beta, Nx each channel's L2 norm over
the image divided by the channels' mean norm), no LayerNorms, pooling one octave coarser (1/4,
1/8, 1/16), no biases in SAFM and CCM, no feature residual around the blocks, and a bilinear
upscaling of the input added to the output.

The pooling grid follows the image size (PyTorch's adaptive pooling, `models.resampling`), and
the variant's GRN is a per-image statistic: a padded batch cannot equal each image alone, so
the family runs each image at its own shape (`Family.padded_batches_exact`); tiling is
approximate. GELU is the exact (erf) one. Inputs need 8 LR pixels a side (16 for the NTIRE
variant); the authors' test code does not pad, and neither does this module.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.models import layers
from drsan_jax.models.family import SCALES, UPSAMPLER, Family
from drsan_jax.models.layers import gelu
from drsan_jax.models.resampling import (
    adaptive_max_pool,
    bilinear_upscale,
    nearest_resize,
)

Dtype = Any
LEVELS = 4  # SAFM's chunks: full resolution and three pooled levels
FFN_SCALE = 2  # CCM's hidden width, in multiples of C
LN_EPS = 1e-6
GRN_EPS = 1e-6

VARIANTS: dict[str, dict[str, Any]] = {
    "safmn": {"features": 36, "num_blocks": 8, "ntire2023": False},
    "safmn-ntire": {"features": 36, "num_blocks": 8, "ntire2023": True},
}


class ChannelLayerNorm(nn.Module):
    """LayerNorm over each pixel's channels, biased variance (the authors' "channels_first")."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        weight = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) / jnp.sqrt(var + LN_EPS) * weight + bias
        return y.astype(x.dtype)


class GRN(nn.Module):
    """Global response normalisation over the whole image (the NTIRE variant's `norm`)."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        c = h.shape[-1]
        gamma = self.param("gamma", nn.initializers.zeros, (c,), self.param_dtype)
        beta = self.param("beta", nn.initializers.zeros, (c,), self.param_dtype)
        h32 = h.astype(jnp.float32)
        gx = jnp.sqrt(jnp.sum(jnp.square(h32), axis=(1, 2), keepdims=True))  # (B, 1, 1, C)
        nx = gx / (jnp.mean(gx, axis=-1, keepdims=True) + GRN_EPS)
        return (gamma * (h32 * nx) + beta + h32).astype(h.dtype)


class SAFM(nn.Module):
    """Spatially-adaptive feature modulation: multi-scale depthwise features gate the input."""

    features: int
    ntire2023: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c, part = self.features, self.features // LEVELS
        bias = not self.ntire2023
        height, width = z.shape[1:3]
        levels = []
        for i in range(LEVELS):
            t = z[..., i * part:(i + 1) * part]
            factor = 2 ** (i + 1) if self.ntire2023 else 2 ** i
            if i:
                t = adaptive_max_pool(t, factor)
            t = layers.conv(self, part, 3, f"mfr_{i}", init="torch", in_features=1,
                            groups=part, use_bias=bias)(t)
            levels.append(nearest_resize(t, (height, width)) if i else t)
        a = layers.conv(self, c, 1, "aggr", init="torch", in_features=c, use_bias=bias)(
            jnp.concatenate(levels, axis=-1))
        return gelu(a) * z


class CCM(nn.Module):
    """Convolutional channel mixer: 3x3 to FFN_SCALE * C, GELU, 1x1 back."""

    features: int
    ntire2023: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c, hidden = self.features, FFN_SCALE * self.features
        conv = functools.partial(layers.conv, self, init="torch", use_bias=not self.ntire2023)
        return conv(c, 1, "conv_2", in_features=hidden)(
            gelu(conv(hidden, 3, "conv_0", in_features=c)(z)))


class AttBlock(nn.Module):
    """SAFM then CCM, each residual; on layer-normalised features except in the NTIRE variant."""

    features: int
    ntire2023: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        sub = {"features": self.features, "ntire2023": self.ntire2023, "dtype": self.dtype,
               "param_dtype": self.param_dtype, "conv_impl": self.conv_impl}

        def norm(name, x):
            return x if self.ntire2023 else ChannelLayerNorm(self.param_dtype, name=name)(x)

        h = SAFM(**sub, name="safm")(norm("norm1", h)) + h
        return CCM(**sub, name="ccm")(norm("norm2", h)) + h


class SAFMN(nn.Module):
    """Spatially-adaptive feature modulation network.

    Attributes:
      scale: upscaling factor, 2, 3 or 4.
      features: channels C (36), a multiple of 4.
      num_blocks: attention blocks N (8).
      ntire2023: the NTIRE 2023 challenge variant instead of the ICCV network.
      dtype: computation dtype; the output is float32.
      param_dtype: parameter dtype.
      conv_impl: "auto", "xla" or "im2col" (`drsan_jax.models.conv`).
    """

    scale: int = 4
    features: int = 36
    num_blocks: int = 8
    ntire2023: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def scales(self) -> tuple[int, ...]:
        """The one scale these parameters serve."""
        return (self.scale,)

    @property
    def min_side(self) -> int:
        """The smallest LR side: the coarsest pooling factor."""
        return 2 ** LEVELS if self.ntire2023 else 2 ** (LEVELS - 1)

    def __post_init__(self):
        layers.check_model("SAFMN", self, SCALES, ("features", "num_blocks"))
        if self.features % LEVELS:
            raise ValueError(f"SAFMN features must be a multiple of {LEVELS} (SAFM splits them "
                             f"in {LEVELS}), got {self.features}")
        super().__post_init__()

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Super-resolves a batch: (B, H, W, 3) in [0, 1] -> (B, sH, sW, 3) float32.

        Raises:
          ValueError: a mask (the pooling grid and the GRN follow the image size: run each
            image at its own shape), or a side shorter than `min_side`.
        """
        layers.check_input("SAFMN", lq, mask)
        layers.check_unmasked("SAFMN", mask)
        layers.check_min_side("SAFMN", lq, self.min_side)
        c, s = self.features, self.scale
        x = lq.astype(self.dtype)
        f0 = layers.conv(self, c, 3, "to_feat", init="torch", in_features=3)(x)
        h = GRN(self.param_dtype, name="norm")(f0) if self.ntire2023 else f0
        for i in range(self.num_blocks):
            h = AttBlock(c, self.ntire2023, self.dtype, self.param_dtype, self.conv_impl,
                         name=f"feats_{i}")(h)
        if not self.ntire2023:
            h = h + f0
        y = layers.conv(self, 3 * s * s, 3, UPSAMPLER, init="torch", in_features=c)(h)
        y = layers.depth_to_space(y, s, "torch").astype(jnp.float32)
        return y + bilinear_upscale(lq.astype(jnp.float32), s) if self.ntire2023 else y


FAMILY = Family(
    name="safmn",
    module=SAFMN,
    variants=VARIANTS,
    size_fields=("features", "num_blocks", "ntire2023"),
    init="torch",
    padded_batches_exact=False,
    description="SAFMN (Sun et al., ICCV 2023) and its NTIRE 2023 variant, released code",
)

__all__ = ["FAMILY", "GRN", "SAFM", "SAFMN", "VARIANTS", "AttBlock", "CCM",
           "ChannelLayerNorm"]
