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

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax import conv

Dtype = Any

DRM_ACTIVATIONS = ("none", "tanh", "sigmoid")
RESIDUAL_MODES = ("dynamic", "plain", "ones")
SCALES = (2, 3, 4)

# Paper section IV-C: name -> (channels c, residual blocks per DRAG N, DRAGs K).
VARIANTS: dict[str, tuple[int, int, int]] = {
    "32s": (32, 4, 4),
    "32m": (32, 4, 8),
    "32l": (32, 4, 10),
    "48s": (48, 3, 4),
    "48m": (48, 3, 8),
}

# The authors' code initialises kernels with Glorot-uniform and biases with zeros.
_KERNEL_INIT = nn.initializers.glorot_uniform()


def num_paths(num_blocks: int) -> int:
    """Number of DRA coefficients M = N(N+1)/2 for a DRAG of `num_blocks` residual blocks."""
    return num_blocks * (num_blocks + 1) // 2


def path_index(n: int, k: int) -> int:
    """Index of r(n, k), the weight of feature f_k in block n (1 <= n, 0 <= k < n), in r."""
    return n * (n - 1) // 2 + k


def depth_to_space(x: jax.Array, s: int) -> jax.Array:
    """Pixel shuffle with TensorFlow's channel order.

    Output pixel (h*s+i, w*s+j), channel ch comes from input channel (i*s + j)*C + ch.

    Args:
      x: (B, H, W, s*s*C) features.
      s: block size.

    Returns:
      (B, H*s, W*s, C) features.
    """
    b, h, w, cin = x.shape
    c = cin // (s * s)
    x = x.reshape(b, h, w, s, s, c)  # (B, H, W, i, j, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H, i, W, j, C)
    return x.reshape(b, h * s, w * s, c)


class PReLU(nn.Module):
    """Per-channel PReLU with slopes initialised to 0 (it starts as a ReLU)."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
        alpha = alpha.astype(x.dtype)
        return jnp.where(x >= 0, x, alpha * x)


def _masked(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Zeroes x outside the valid region (a no-op without a mask)."""
    return x if mask is None else x * mask.astype(x.dtype)


def upsample_mask(mask: jax.Array | None, s: int) -> jax.Array | None:
    """Nearest-neighbour upsampling of a (B, H, W, 1) validity mask by s."""
    if mask is None:
        return None
    return jnp.repeat(jnp.repeat(mask, s, axis=1), s, axis=2)


def _conv(features: int, kernel: int, name: str, dtype: Dtype, param_dtype: Dtype,
          impl: str) -> conv.Conv:
    """A stride-1 'same' convolution with bias, initialised like the authors' code.

    Its parameters are those of `nn.Conv`; `impl` only chooses how the kernel gradient is
    computed (`drsan_jax.conv`).
    """
    return conv.Conv(
        features,
        (kernel, kernel),
        kernel_init=_KERNEL_INIT,
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=param_dtype,
        impl=impl,
        name=name,
    )


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
        h = _conv(self.hidden, 1, "conv_in", self.dtype, self.param_dtype, self.conv_impl)(f0)
        h = PReLU(self.param_dtype, name="prelu")(h)
        h = _conv(num_paths(self.num_blocks), 1, "conv_out", self.dtype, self.param_dtype,
                  self.conv_impl)(h)
        # The global mean runs in float32 even under bfloat16 compute: it sums H*W values.
        h = h.astype(jnp.float32)
        if mask is None:
            r = jnp.mean(h, axis=(1, 2))  # (B, M)
        else:
            valid = mask.astype(jnp.float32)
            r = jnp.sum(h * valid, axis=(1, 2)) / jnp.sum(valid, axis=(1, 2))
        if self.activation == "tanh":
            r = jnp.tanh(r)
        elif self.activation == "sigmoid":
            r = jax.nn.sigmoid(r)
        return r


class ResidualBlock(nn.Module):
    """Pre-activation residual branch t = conv3x3(PReLU(conv3x3(PReLU(f))))."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, f: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        t = PReLU(self.param_dtype, name="prelu1")(f)
        t = _masked(_conv(self.features, 3, "conv1", self.dtype, self.param_dtype,
                          self.conv_impl)(t), mask)
        t = PReLU(self.param_dtype, name="prelu2")(t)
        return _masked(_conv(self.features, 3, "conv2", self.dtype, self.param_dtype,
                             self.conv_impl)(t), mask)


def dynamic_residual(r_n: jax.Array, features: Sequence[jax.Array]) -> jax.Array:
    """Dynamic residual attention of block n: d = sum_{k<n} r(n,k) f_k (paper Eq. 6).

    Args:
      r_n: (B, n) weights r(n, 0..n-1) of one block, per image.
      features: the n preceding features f_0..f_{n-1} of the DRAG, each (B, H, W, C).

    Returns:
      (B, H, W, C) weighted sum, one einsum over the stacked features.
    """
    stacked = jnp.stack(features, axis=1)  # (B, n, H, W, C)
    return jnp.einsum("bk,bkhwc->bhwc", r_n.astype(stacked.dtype), stacked)


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
        fusion = _conv(self.features, 1, "fusion", self.dtype, self.param_dtype, self.conv_impl)
        return _masked(fusion(fused), mask)


class Upsampler(nn.Module):
    """ESPCN upsampler: conv3x3 to c*s*s then depth-to-space; x4 as two x2 stages."""

    features: int
    scale: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        stages = [2, 2] if self.scale == 4 else [self.scale]
        for i, s in enumerate(stages):
            x = _conv(self.features * s * s, 3, f"conv_{i}", self.dtype, self.param_dtype,
                      self.conv_impl)(x)
            x = depth_to_space(_masked(x, mask), s)
            mask = upsample_mask(mask, s)
        return x


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
        "im2col" (`drsan_jax.conv`); the same parameters and values either way.
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

    def __post_init__(self):
        _check_choice("scale", self.scale, SCALES)
        _check_choice("conv_impl", self.conv_impl, conv.IMPLS)
        _check_choice("drm_activation", self.drm_activation, DRM_ACTIVATIONS)
        _check_choice("residual", self.residual, RESIDUAL_MODES)
        for field in ("features", "num_blocks", "num_groups"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DRSAN {field} must be a positive integer, got {value!r}")
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
        if lq.ndim != 4 or lq.shape[-1] != 3:
            raise ValueError(f"DRSAN expects an NHWC RGB batch (B, H, W, 3), got shape {lq.shape}")
        if mask is not None and mask.shape != (*lq.shape[:3], 1):
            raise ValueError(f"DRSAN mask must have shape {(*lq.shape[:3], 1)}, got {mask.shape}")
        x = _masked(lq.astype(self.dtype), mask)
        x0 = _masked(_conv(self.features, 3, "head", self.dtype, self.param_dtype,
                           self.conv_impl)(x), mask)
        x = x0
        for k in range(self.num_groups):
            x = DRAG(self.features, self.num_blocks, self.drm_activation, self.use_rsa,
                     self.residual, self.use_fusion, self.dtype, self.param_dtype,
                     self.conv_impl, name=f"DRAG_{k}")(x, mask)
        x = _conv(self.features, 3, "body_tail", self.dtype, self.param_dtype, self.conv_impl)(x)
        x = _masked(x, mask) + x0
        x = Upsampler(self.features, self.scale, self.dtype, self.param_dtype, self.conv_impl,
                      name="upsampler")(x, mask)
        y = _masked(_conv(3, 3, "output", self.dtype, self.param_dtype, self.conv_impl)(x),
                    upsample_mask(mask, self.scale))
        return y.astype(jnp.float32)


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"DRSAN {name} must be one of {list(choices)}, got {value!r}")


def build_model(variant: str = "32s", scale: int = 2, **overrides: Any) -> DRSAN:
    """Builds a published DRSAN variant.

    Args:
      variant: one of VARIANTS ("32s", "32m", "32l", "48s", "48m").
      scale: 2, 3 or 4.
      **overrides: any other DRSAN attribute (ablation switches, dtype, ...).

    Returns:
      The (uninitialised) DRSAN module.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown DRSAN variant {variant!r}; expected one of {list(VARIANTS)}")
    c, n, k = VARIANTS[variant]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DRSAN)}
    unknown -= {"parent", "name"}
    if unknown:
        raise ValueError(f"unknown DRSAN option(s) {sorted(unknown)}")
    return DRSAN(scale=scale, features=c, num_blocks=n, num_groups=k, **overrides)


def init_params(model: nn.Module, rng: jax.Array) -> Any:
    """Initialises the parameters of `model` like the authors' code, quickly.

    Kernels are Glorot-uniform, biases and PReLU slopes zero: the distribution `model.init`
    draws from too. All kernels come from one uniform draw, because compiling Flax's init (one
    random-number program per kernel) takes seconds on a CPU while this takes milliseconds.

    Args:
      model: the DRSAN (or any of its submodules) to initialise.
      rng: a `jax.random.key`.

    Returns:
      The parameter tree, float32 (or `model.param_dtype`).
    """
    shapes = param_shapes(model)
    paths_and_leaves, treedef = jax.tree.flatten_with_path(shapes)

    @jax.jit
    def draw(key):
        kernels = [s for path, s in paths_and_leaves if path[-1].key == "kernel"]
        u = jax.random.uniform(key, (sum(math.prod(s.shape) for s in kernels),), jnp.float32,
                               -1.0, 1.0)
        leaves, offset = [], 0
        for path, s in paths_and_leaves:
            if path[-1].key != "kernel":
                leaves.append(jnp.zeros(s.shape, s.dtype))
                continue
            *receptive, fan_in, fan_out = s.shape
            limit = math.sqrt(6.0 / (math.prod(receptive) * (fan_in + fan_out)))
            size = math.prod(s.shape)
            leaves.append((limit * u[offset:offset + size]).reshape(s.shape).astype(s.dtype))
            offset += size
        return jax.tree.unflatten(treedef, leaves)

    return draw(rng)


def param_shapes(model: nn.Module) -> Any:
    """Parameter shapes of `model` without allocating or computing anything."""
    channels = model.features if isinstance(model, DRAG) else 3
    x = jax.ShapeDtypeStruct((1, 8, 8, channels), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x)["params"]


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


__all__ = [
    "DRAG",
    "DRM",
    "DRSAN",
    "DRM_ACTIVATIONS",
    "PReLU",
    "RESIDUAL_MODES",
    "ResidualBlock",
    "SCALES",
    "Upsampler",
    "VARIANTS",
    "build_model",
    "count_params",
    "depth_to_space",
    "dynamic_residual",
    "init_params",
    "num_paths",
    "param_shapes",
    "path_index",
    "upsample_mask",
]
