"""Stride-1 'same' convolutions whose weight gradient can be computed as patch matmuls.

On XLA:CPU the three convolutions of a training step are not equally fast. For DRSAN's small
3x3 convolutions (32 or 48 channels, 48x48 patches) the forward and input-gradient convolutions
run two to four times faster than the weight gradient, which XLA emits as a convolution whose
window is the whole image, preceded by transposes of both operands; the weight gradient of the
1x1 fusion convolution (160 -> 32 channels) is five times slower than a matmul. Mathematically
the weight gradient of a k x k convolution is one matrix product,

    dK[i, j, c, o] = sum_{b, h, w} x_pad[b, h + i, w + j, c] * g[b, h, w, o],

i.e. G^T @ P with P the image patches ("im2col", one row of k*k*C values per pixel). The
"im2col" implementation here computes it that way, in chunks of a few rows so that a chunk's
patches stay in the caches (all of a batch's patches, k*k times the activations, would go
through main memory), with one running sum per image so that a batch split over devices needs
no communication until the gradients' all-reduce. The forward and input-gradient convolutions
stay XLA's own: patch matmuls were measured slower there.

`Conv` is a drop-in replacement for `flax.linen.Conv` restricted to what DRSAN uses (stride 1,
'SAME' padding, no dilation or groups): it has the same parameters, `kernel` (kh, kw, cin, cout)
and `bias` (cout,), so checkpoints are interchangeable and the implementation is a run-time
choice. `impl="auto"` picks per backend (`default_impl`): "im2col" on CPU, where it was measured
to be faster (benchmarks/README.md), and XLA's own convolution elsewhere (cuDNN on GPUs).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

Dtype = Any

IMPLS = ("auto", "xla", "im2col")

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Bytes of patches per image and chunk of rows. On a 2-core EPYC (512 KiB L2 per core) 16 KiB
# to 256 KiB gave the same train step time, 1 MiB 15% and 4 MiB 45% more.
_CHUNK_BYTES = 256 * 1024


def default_impl(backend: str | None = None) -> str:
    """The convolution implementation `impl="auto"` stands for on a backend.

    Args:
      backend: "cpu", "gpu", "tpu", ...; default: `jax.default_backend()`.

    Returns:
      "im2col" on CPU, "xla" elsewhere (GPUs have cuDNN's weight-gradient kernels).
    """
    backend = jax.default_backend() if backend is None else backend
    return "im2col" if backend == "cpu" else "xla"


def resolve_impl(impl: str) -> str:
    """Checks `impl` and replaces "auto" by the default of the default backend."""
    if impl not in IMPLS:
        raise ValueError(f"conv_impl must be one of {list(IMPLS)}, got {impl!r}")
    return default_impl() if impl == "auto" else impl


def _same_padding(kernel_size: int) -> tuple[int, int]:
    """lax's 'SAME' padding at stride 1; an even kernel's extra pixel goes last."""
    low = (kernel_size - 1) // 2
    return low, kernel_size - 1 - low


def _conv_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                    dimension_numbers=_DIMENSION_NUMBERS)


def _windows(xp: jax.Array, height: int, width: int, kh: int, kw: int) -> jax.Array:
    """Patches of an already padded (B, height+kh-1, width+kw-1, C) array.

    Returns:
      (B, height, width, kh*kw*C), entry (i*kw + j)*C + c of pixel (h, w) being
      xp[h + i, w + j, c]: the order of a flattened HWIO kernel's first three axes.
    """
    return jnp.concatenate(
        [xp[:, i:i + height, j:j + width, :] for i in range(kh) for j in range(kw)], axis=-1)


def weight_grad_im2col(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, int]
                       ) -> jax.Array:
    """Weight gradient of a stride-1 'same' convolution as patch matmuls.

    Args:
      x: (B, H, W, C) convolution input.
      g: (B, H, W, O) cotangent of the convolution output.
      kernel_shape: (kh, kw).

    Returns:
      (kh, kw, C, O) float32 gradient of the kernel: the sum over pixels of the outer product
      of the pixel's patch and its cotangent.
    """
    kh, kw = kernel_shape
    b, h, w, c = x.shape
    o = g.shape[-1]
    f32 = jnp.float32
    if kh == kw == 1:
        # One matmul, O x (B*H*W) times (B*H*W) x C: no patches to build.
        grad = jnp.matmul(g.reshape(-1, o).T, x.reshape(-1, c), preferred_element_type=f32)
        return grad.T.reshape(1, 1, c, o)

    k = kh * kw * c
    rows = max(1, min(h, _CHUNK_BYTES // (w * k * x.dtype.itemsize)))
    chunks = -(-h // rows)
    extra = chunks * rows - h  # zero rows of g at the bottom contribute nothing
    (top, bottom), (left, right) = _same_padding(kh), _same_padding(kw)
    xp = jnp.pad(x, ((0, 0), (top, bottom + extra), (left, right), (0, 0)))
    gp = jnp.pad(g, ((0, 0), (0, extra), (0, 0), (0, 0)))

    def accumulate(acc, row):
        xs = lax.dynamic_slice_in_dim(xp, row, rows + kh - 1, axis=1)  # (B, R+kh-1, W+kw-1, C)
        gs = lax.dynamic_slice_in_dim(gp, row, rows, axis=1)  # (B, R, W, O)
        p = _windows(xs, rows, w, kh, kw)  # (B, R, W, kh*kw*C)
        # One running sum per image: a batch split over devices stays local until the end.
        acc = acc + jnp.einsum("bno,bnk->bok", gs.reshape(b, rows * w, o),
                               p.reshape(b, rows * w, k), preferred_element_type=f32)
        return acc, None

    acc, _ = lax.scan(accumulate, jnp.zeros((b, o, k), f32), jnp.arange(chunks) * rows)
    return acc.sum(axis=0).T.reshape(kh, kw, c, o)  # (O, kh*kw*C) -> HWIO


@jax.custom_vjp
def _conv_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _conv_xla(x, kernel)


def _conv_im2col_fwd(x, kernel):
    return _conv_xla(x, kernel), (x, kernel)


def _conv_im2col_bwd(residuals, g):
    x, kernel = residuals
    _, input_grad = jax.vjp(lambda x_: _conv_xla(x_, kernel), x)
    (dx,) = input_grad(g)
    dk = weight_grad_im2col(x, g, kernel.shape[:2]).astype(kernel.dtype)
    return dx, dk


_conv_im2col.defvjp(_conv_im2col_fwd, _conv_im2col_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, impl: str = "auto") -> jax.Array:
    """A stride-1 'same' convolution, NHWC x HWIO -> NHWC, without bias.

    Every implementation computes the same function and the same input gradient; they differ
    in how the kernel gradient is computed (see the module docstring).

    Args:
      x: (B, H, W, C) input.
      kernel: (kh, kw, C, O) kernel, same dtype as x.
      impl: "xla", "im2col" or "auto" (`default_impl` of the default backend).

    Returns:
      (B, H, W, O) output.
    """
    impl = resolve_impl(impl)
    if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != x.shape[-1]:
        raise ValueError(f"conv2d expects x (B, H, W, C) and kernel (kh, kw, C, O), got "
                         f"{x.shape} and {kernel.shape}")
    return _conv_im2col(x, kernel) if impl == "im2col" else _conv_xla(x, kernel)


class Conv(nn.Module):
    """`flax.linen.Conv` for stride 1 and 'SAME' padding, with a choice of implementation.

    Parameters are those of `nn.Conv(features, kernel_size, padding="SAME")`: `kernel`
    (kh, kw, cin, features) and, with `use_bias`, `bias` (features,).

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      use_bias: add a bias.
      dtype: computation dtype (None: promoted from the input and parameters, as in nn.Conv).
      param_dtype: parameter dtype.
      kernel_init: initializer of the kernel.
      bias_init: initializer of the bias.
      impl: "auto", "xla" or "im2col" (see `conv2d`).
    """

    features: int
    kernel_size: Sequence[int]
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., jax.Array] = nn.initializers.zeros
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, self.impl)
        return y if bias is None else y + bias


__all__ = [
    "Conv",
    "IMPLS",
    "conv2d",
    "default_impl",
    "resolve_impl",
    "weight_grad_im2col",
]
