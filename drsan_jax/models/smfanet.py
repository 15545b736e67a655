"""SMFANet and SMFANet+ (Zheng et al., ECCV 2024), as the authors' released code.

`docs/networks/smfanet.md`. On [0, 1] inputs, C channels, N blocks, scale s:

    f0 = to_feat(x)                                   3x3, 3 -> C
    FMB:  h = SMFA(n(h)) + h;  h = PCFN(n(h)) + h     n: each pixel's C-vector over its L2 norm
    SMFA(z): [y, v] = linear_0(z)                     1x1, C -> 2C
             m = GELU(linear_1(alpha * dw_conv(maxpool_{H/8}(v)) + beta * var(v)))
             out = linear_2(v * nearest_up(m) + lde(y))
             lde: grouped 3x3 C -> 2C (groups C), 1x1 2C -> 2C, GELU, 1x1 2C -> C
    PCFN(z): u = GELU(conv_0(z)) (1x1, C -> 2C); u[:P] = GELU(conv_1(u[:P])) (3x3, P = C/2)
             out = conv_2(u) (1x1, 2C -> C)
    y = PixelShuffle_s(to_img(feats(f0) + f0))       3x3, C -> 3s^2

var is each channel's unbiased variance over the whole image, and the pooled grid follows the
image size (PyTorch's adaptive pooling, `models.resampling`): a padded batch cannot equal each
image alone, so this family runs each image at its own shape (`Family.padded_batches_exact`),
and tiling is approximate. GELU is the exact (erf) one. The input needs 8 LR pixels a side;
the authors' test code does not pad, and neither does this module.
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
from drsan_jax.models.resampling import adaptive_max_pool, nearest_resize

Dtype = Any
POOL = 8  # SMFA's pooled branch works at 1/8 of the size in each direction
NORM_EPS = 1e-12  # F.normalize's floor of the norm

VARIANTS: dict[str, dict[str, Any]] = {
    "smfanet": {"features": 36, "num_blocks": 8},
    "smfanet-plus": {"features": 48, "num_blocks": 12},
}


def l2_normalize(x: jax.Array) -> jax.Array:
    """`F.normalize(x, dim=channels)`: each pixel's feature vector over max(its norm, 1e-12)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
    return (x / jnp.maximum(norm, NORM_EPS).astype(x.dtype)).astype(x.dtype)


class SMFA(nn.Module):
    """Self-modulation feature aggregation: pooled and variance modulation plus a local mixer."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c = self.features
        conv = functools.partial(layers.conv, self, init="torch")
        yv = conv(2 * c, 1, "linear_0", in_features=c)(z)
        y, v = yv[..., :c], yv[..., c:]
        height, width = v.shape[1:3]
        pooled = adaptive_max_pool(v, POOL)
        pooled = conv(c, 3, "dw_conv", in_features=1, groups=c)(pooled)
        # Unbiased (HW - 1) variance of each channel over the image, in float32.
        variance = jnp.var(v.astype(jnp.float32), axis=(1, 2), ddof=1, keepdims=True)
        alpha = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)  # paper's alpha
        beta = self.param("variance_weight", nn.initializers.zeros, (c,), self.param_dtype)
        m = alpha * pooled + (beta * variance).astype(pooled.dtype)
        m = gelu(conv(c, 1, "linear_1", in_features=c)(m))
        v_l = v * nearest_resize(m, (height, width))
        t = conv(2 * c, 3, "lde_0", in_features=1, groups=c)(y)
        t = gelu(conv(2 * c, 1, "lde_1", in_features=2 * c)(t))
        t = conv(c, 1, "lde_2", in_features=2 * c)(t)
        return conv(c, 1, "linear_2", in_features=c)(v_l + t)


class PCFN(nn.Module):
    """Partial convolution feed-forward network: a 3x3 on a quarter of the hidden channels."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c = self.features
        p = 2 * c // 4
        conv = functools.partial(layers.conv, self, init="torch")
        u = gelu(conv(2 * c, 1, "conv_0", in_features=c)(z))
        part = gelu(conv(p, 3, "conv_1", in_features=p)(u[..., :p]))
        u = jnp.concatenate([part, u[..., p:]], axis=-1)
        return conv(c, 1, "conv_2", in_features=2 * c)(u)


class FMB(nn.Module):
    """Feature modulation block: SMFA then PCFN, each on the normalised features, residual."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        sub = {"features": self.features, "dtype": self.dtype,
               "param_dtype": self.param_dtype, "conv_impl": self.conv_impl}
        h = SMFA(**sub, name="smfa")(l2_normalize(h)) + h
        return PCFN(**sub, name="pcfn")(l2_normalize(h)) + h


class SMFANet(nn.Module):
    """Self-modulation feature aggregation network.

    Attributes:
      scale: upscaling factor, 2, 3 or 4.
      features: channels C (36; SMFANet+ 48).
      num_blocks: feature modulation blocks N (8; SMFANet+ 12).
      dtype: computation dtype; the output is float32.
      param_dtype: parameter dtype.
      conv_impl: "auto", "xla" or "im2col" (`drsan_jax.models.conv`).
    """

    scale: int = 4
    features: int = 36
    num_blocks: int = 8
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def scales(self) -> tuple[int, ...]:
        """The one scale these parameters serve."""
        return (self.scale,)

    @property
    def min_side(self) -> int:
        """The smallest LR side: the pooling factor."""
        return POOL

    def __post_init__(self):
        layers.check_model("SMFANet", self, SCALES, ("features", "num_blocks"))
        if self.features % 2:
            raise ValueError(f"SMFANet features must be even (PCFN convolves half of them), "
                             f"got {self.features}")
        super().__post_init__()

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Super-resolves a batch: (B, H, W, 3) in [0, 1] -> (B, sH, sW, 3) float32.

        Raises:
          ValueError: a mask (per-image statistics: run each image at its own shape), or a
            side shorter than 8 pixels.
        """
        layers.check_input("SMFANet", lq, mask)
        layers.check_unmasked("SMFANet", mask)
        layers.check_min_side("SMFANet", lq, POOL)
        c, s = self.features, self.scale
        sub = {"features": c, "dtype": self.dtype, "param_dtype": self.param_dtype,
               "conv_impl": self.conv_impl}
        f0 = layers.conv(self, c, 3, "to_feat", init="torch", in_features=3)(
            lq.astype(self.dtype))
        h = f0
        for i in range(self.num_blocks):
            h = FMB(**sub, name=f"feats_{i}")(h)
        y = layers.conv(self, 3 * s * s, 3, UPSAMPLER, init="torch", in_features=c)(h + f0)
        return layers.depth_to_space(y, s, "torch").astype(jnp.float32)


FAMILY = Family(
    name="smfanet",
    module=SMFANet,
    variants=VARIANTS,
    size_fields=("features", "num_blocks"),
    init="torch",
    padded_batches_exact=False,
    description="SMFANet / SMFANet+ (Zheng et al., ECCV 2024), released code",
)

__all__ = ["FAMILY", "FMB", "PCFN", "SMFA", "SMFANet", "VARIANTS"]
