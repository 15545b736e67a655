"""SPAN, the Swift Parameter-free Attention Network (Wan et al., CVPRW 2024), as its code.

`docs/networks/span.md`. On [0, 1] inputs, with C channels and scale s:

    x = (lq - mean) * 255                       mean: DIV2K's RGB mean, not in the weights
    f0 = conv_1(x)                              every conv_*/c*_r: a Conv3XC, 3x3 when folded
    SPAB: a1 = SiLU(c1_r(t)); a2 = SiLU(c2_r(a1)); o3 = c3_r(a2)
          out = (o3 + t) * (sigmoid(o3) - 0.5)
    b1 .. b6 = six SPABs in a row;  t6 = conv_2(b6)
    u = conv_cat([f0, t6, b1, a1 of block 6])   1x1, 4C -> C; a1 is the *activated* feature
    y = PixelShuffle_s(conv3x3(u))              the HR image in [0, 1]: no shift back

The fourth input of `conv_cat` is block 6's SiLU(c1_r(b5)): the authors' SiLU works in place
and overwrites the raw convolution output that their block returns. The mean shift stays
before the first convolution, whose zero padding sees the shifted, scaled tensor.

Each Conv3XC is, for training (`reparam=True`), the sum of a 1x1 skip and a 1x1 -> 3x3
('VALID', on the input zero-padded by one) -> 1x1 chain of doubled width; deployed, it is the
one 3x3 convolution those branches fold to (`fold_conv3xc`, `deploy`), which is what the
released files hold; inference and export fold a training-form model first. Every convolution
has a bias. No pooling or per-image statistic: a padded, masked batch is exact, and so is
tiling with 21 LR pixels of overlap.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from drsan_jax.models import layers
from drsan_jax.models.family import SCALES, UPSAMPLER, Family
from drsan_jax.models.layers import masked

Dtype = Any
NUM_BLOCKS = 6
# The authors' mean shift, (x - mean) * 255, as the float32 constants their code uses.
RGB_RANGE = 255.0

VARIANTS: dict[str, dict[str, Any]] = {
    "span": {"features": 28},  # the NTIRE 2024 ESR winner (team38 file)
    "span-tiny": {"features": 26},  # team39's "SPANtiny"
}


class Conv3XC(nn.Module):
    """SPAN's re-parameterisable 3x3 convolution (`docs/networks/span.md`, "Conv3XC").

    Parameters: deployed, `eval_conv` (a 3x3 conv); with `reparam`, `sk` (1x1), `conv_0`
    (1x1 to 2 cin), `conv_1` (3x3 'VALID', 2 cin -> 2 features) and `conv_2` (1x1 to features).
    """

    features: int
    reparam: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        cin = x.shape[-1]
        conv = functools.partial(layers.conv, self, init="torch")
        if not self.reparam:
            return masked(conv(self.features, 3, "eval_conv", in_features=cin)(x), mask)
        # The zero ring is added before conv_0, so conv_0 gives its bias there, as the folded
        # bias assumes. Outside a masked image the input is zero too: the same holds.
        t = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        t = conv(2 * cin, 1, "conv_0", in_features=cin)(t)
        t = conv(2 * self.features, 3, "conv_1", in_features=2 * cin, padding="VALID")(t)
        t = conv(self.features, 1, "conv_2", in_features=2 * self.features)(t)
        return masked(t + conv(self.features, 1, "sk", in_features=cin)(x), mask)


class SPAB(nn.Module):
    """One swift parameter-free attention block: (out, a1) with a1 the first activated feature."""

    features: int
    reparam: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, t: jax.Array, mask: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
        c3xc = functools.partial(Conv3XC, self.features, self.reparam, self.dtype,
                                 self.param_dtype, self.conv_impl)
        a1 = nn.silu(c3xc(name="c1_r")(t, mask))
        a2 = nn.silu(c3xc(name="c2_r")(a1, mask))
        o3 = c3xc(name="c3_r")(a2, mask)
        attention = nn.sigmoid(o3) - 0.5  # origin-symmetric: zero where o3 is (padding stays 0)
        return (o3 + t) * attention, a1


class SPAN(nn.Module):
    """Swift parameter-free attention network.

    Attributes:
      scale: upscaling factor, 2, 3 or 4.
      features: channels C (28 for the NTIRE 2024 entry, 26 for SPAN-tiny, 48 in the paper).
      reparam: the training form, every Conv3XC as its branches (`deploy` turns it and its
        parameters into the deployed model).
      dtype: computation dtype; the output is float32.
      param_dtype: parameter dtype.
      conv_impl: "auto", "xla" or "im2col" (`drsan_jax.models.conv`).
    """

    scale: int = 4
    features: int = 28
    reparam: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def scales(self) -> tuple[int, ...]:
        """The one scale these parameters serve."""
        return (self.scale,)

    def __post_init__(self):
        layers.check_model("SPAN", self, SCALES, ("features",))
        super().__post_init__()

    @nn.compact
    def __call__(self, lq: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Super-resolves a batch: (B, H, W, 3) in [0, 1] -> (B, sH, sW, 3) float32."""
        layers.check_input("SPAN", lq, mask)
        c, s = self.features, self.scale
        sub = {"features": c, "reparam": self.reparam, "dtype": self.dtype,
               "param_dtype": self.param_dtype, "conv_impl": self.conv_impl}
        x = lq.astype(self.dtype)
        x = masked((x - jnp.asarray(layers.DIV2K_RGB_MEAN, x.dtype)) * RGB_RANGE, mask)
        f0 = Conv3XC(**sub, name="conv_1")(x, mask)
        b, a1 = f0, None
        blocks = []
        for i in range(1, NUM_BLOCKS + 1):
            b, a1 = SPAB(**sub, name=f"block_{i}")(b, mask)
            blocks.append(b)
        t6 = Conv3XC(**sub, name="conv_2")(b, mask)
        cat = jnp.concatenate([f0, t6, blocks[0], a1], axis=-1)  # (B, H, W, 4C)
        u = masked(layers.conv(self, c, 1, "conv_cat", init="torch", in_features=4 * c)(cat),
                   mask)
        y = layers.conv(self, 3 * s * s, 3, UPSAMPLER, init="torch", in_features=c)(u)
        y = layers.depth_to_space(masked(y, mask), s, "torch")  # (B, sH, sW, 3)
        return masked(y, layers.upsample_mask(mask, s)).astype(jnp.float32)


def fold_conv3xc(branches: dict[str, Any]) -> dict[str, Any]:
    """The `eval_conv` {kernel, bias} that one training-form Conv3XC's branches compute.

    With w1, w3 the 1x1 kernels as (in, out) matrices and w2 the 3x3 kernel (HWIO):
        W[kh, kw] = w1 @ w2[kh, kw] @ w3, plus the skip's w_sk at the centre tap;
        b = (b2 + b1 @ sum_{kh, kw} w2[kh, kw]) @ w3 + b3 + b_sk.
    b1 reaches every tap because training pads before conv_0 (see `Conv3XC`): the fold is
    exact at the border too. Computed in float64, returned in the branches' dtype.
    """
    def f64(name, leaf):
        return np.asarray(branches[name][leaf], np.float64)

    w1 = f64("conv_0", "kernel")[0, 0]  # (in, 2 in)
    w2 = f64("conv_1", "kernel")  # (3, 3, 2 in, 2 out)
    w3 = f64("conv_2", "kernel")[0, 0]  # (2 out, out)
    kernel = np.einsum("in,hwnm,mo->hwio", w1, w2, w3)
    kernel[1, 1] += f64("sk", "kernel")[0, 0]
    inner = f64("conv_1", "bias") + np.einsum("n,hwnm->m", f64("conv_0", "bias"), w2)
    bias = inner @ w3 + f64("conv_2", "bias") + f64("sk", "bias")
    dtype = np.asarray(branches["sk"]["kernel"]).dtype
    return {"kernel": kernel.astype(dtype), "bias": bias.astype(dtype)}


def deploy(model: SPAN, params: dict[str, Any]) -> tuple[SPAN, dict[str, Any]]:
    """The deployed model and parameters of a training-form SPAN (itself if already deployed).

    Every Conv3XC's branches become its folded `eval_conv` (`fold_conv3xc`); the outputs agree
    to float32 rounding.
    """
    if not model.reparam:
        return model, params

    def fold(tree):
        if "sk" in tree:
            return {"eval_conv": fold_conv3xc(tree)}
        return {k: fold(v) if isinstance(v, dict) else v for k, v in tree.items()}

    return model.clone(reparam=False), fold(jax.tree.map(np.asarray, dict(params)))


FAMILY = Family(
    name="span",
    module=SPAN,
    variants=VARIANTS,
    size_fields=("features",),
    option_fields=("reparam",),
    init="torch",
    deploy=deploy,
    description="SPAN (Wan et al., CVPRW 2024), NTIRE 2024 files; reparam: training form",
)

__all__ = ["FAMILY", "SPAB", "SPAN", "VARIANTS", "Conv3XC", "deploy", "fold_conv3xc"]
