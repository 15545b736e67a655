"""DRAN, the dynamic residual attention network (Park, Soh, Cho, ICPR 2020), DRSAN's predecessor.

As the authors' released TensorFlow code builds it (`docs/networks/dran.md`): one dynamic
residual module (DRM) for the whole network, computed from the LR image itself, predicts
M = K(K+1)/2 path weights per image; each of the K pre-activation residual blocks (DRBs) adds the
weighted sum of every preceding feature, its own input included:

    r = mean_HW(conv3x3(2p->4p)(PReLU(maxpool(conv3x3(p->2p)(PReLU(maxpool(conv3x3(3->p)(lq))))))))
    x_n = t_n + sum_{k<n} r(n, k) x_k,    t_n = conv3x3(PReLU(conv3x3(PReLU(x_{n-1}))))

then the body tail with the global residual, the ESPCN upsampler (TensorFlow's depth-to-space
order) and the output conv. No RSA gating, no fusion, c = 64. The residual block and the DRA sum
are DRSAN's own (`drsan.ResidualBlock`, `drsan.dynamic_residual`).

DRAN-s (c = 64, K = 8, DRM p = 9) has no released code; its sizes are inferred from the published
parameter counts and multiply-adds, which they reproduce exactly.

The path weights are sown into `intermediates` as `dra_coefficients` (B, M), as in DRSAN.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.models import layers
from drsan_jax.models.dra import ResidualBlock, dynamic_residual, num_paths, path_index
from drsan_jax.models.family import SCALES, Family
from drsan_jax.models.layers import PReLU, masked, pool_mask, upsample_mask

Dtype = Any

VARIANTS: dict[str, dict[str, int]] = {
    "dran": {"features": 64, "num_blocks": 16, "drm_width": 34},
    "dran-s": {"features": 64, "num_blocks": 8, "drm_width": 9},
}


class ImageDRM(nn.Module):
    """DRAN's DRM: K(K+1)/2 path weights per image from the LR image (no activation on r).

    conv, then a 2x2 'VALID' max-pool (floor, as TensorFlow's), then PReLU, twice; a third conv
    to `paths` channels and the spatial mean.
    """

    width: int
    paths: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        a = lq
        for i, width in enumerate((self.width, 2 * self.width)):
            a = layers.conv(self, width, 3, f"conv_{i}", init="glorot")(a)
            a = nn.max_pool(a, (2, 2), strides=(2, 2), padding="VALID")
            mask = pool_mask(mask)
            a = masked(PReLU(self.param_dtype, name=f"prelu_{i}")(a), mask)
        a = layers.conv(self, self.paths, 3, "conv_2", init="glorot")(a)
        return layers.masked_mean(a, mask)  # (B, paths)


class DRAN(nn.Module):
    """Dynamic residual attention network.

    Attributes:
      scale: upscaling factor, 2, 3 or 4.
      features: channels c (64).
      num_blocks: dynamic residual blocks K (16 for DRAN, 8 for DRAN-s).
      drm_width: p, the DRM's first width (34 for DRAN, 9 for DRAN-s); its output has 4p
        channels, of which the first K(K+1)/2 are the path weights (all of them when
        4p = K(K+1)/2, as in both published variants).
      dtype: computation dtype; the output is float32.
      param_dtype: parameter dtype.
      conv_impl: "auto", "xla" or "im2col" (`drsan_jax.models.conv`).
    """

    scale: int = 2
    features: int = 64
    num_blocks: int = 16
    drm_width: int = 34
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def scales(self) -> tuple[int, ...]:
        """The scales these parameters serve: DRAN is one network per scale."""
        return (self.scale,)

    def __post_init__(self):
        layers.check_model("DRAN", self, SCALES, ("features", "num_blocks", "drm_width"))
        if 4 * self.drm_width < num_paths(self.num_blocks):
            raise ValueError(f"DRAN drm_width {self.drm_width} gives {4 * self.drm_width} path "
                             f"weights; {self.num_blocks} blocks need "
                             f"{num_paths(self.num_blocks)}")
        super().__post_init__()

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Super-resolves a batch: (B, H, W, 3) in [0, 1] -> (B, sH, sW, 3) float32."""
        layers.check_input("DRAN", lq, mask)
        x = masked(lq.astype(self.dtype), mask)
        r = ImageDRM(self.drm_width, 4 * self.drm_width, self.dtype, self.param_dtype,
                     self.conv_impl, name="DRM")(x, mask)  # (B, 4p)
        r = r[:, :num_paths(self.num_blocks)]
        self.sow("intermediates", "dra_coefficients", r)
        x0 = masked(layers.conv(self, self.features, 3, "head", init="glorot")(x), mask)
        feats = [x0]
        for n in range(1, self.num_blocks + 1):
            t = ResidualBlock(self.features, self.dtype, self.param_dtype, self.conv_impl,
                              name=f"block_{n}")(feats[-1], mask)
            start = path_index(n, 0)
            r_n = jax.lax.slice_in_dim(r, start, start + n, axis=1)  # no gather: exportable
            feats.append(t + dynamic_residual(r_n, feats))
        tail = layers.conv(self, self.features, 3, "body_tail", init="glorot")
        y = masked(tail(feats[-1]), mask) + x0
        y = layers.Upsampler(self.features, self.scale, "tf", "glorot", self.dtype,
                             self.param_dtype, self.conv_impl, name="upsampler")(y, mask)
        out = layers.conv(self, 3, 3, "output", init="glorot")(y)
        out = masked(out, upsample_mask(mask, self.scale))
        return out.astype(jnp.float32)


FAMILY = Family(
    name="dran",
    module=DRAN,
    variants=VARIANTS,
    size_fields=("features", "num_blocks", "drm_width"),
    init="glorot",
    description="DRAN (Park, Soh, Cho, ICPR 2020); DRAN-s sizes inferred from its published counts",
)

__all__ = ["DRAN", "FAMILY", "ImageDRM", "VARIANTS"]
