"""Tests of the convolution implementations: every one computes XLA's values and gradients."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drsan_jax.models import DRSAN, conv, init_params


def reference(x, kernel, bias):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias


def random_problem(shape, kernel_size, features, dtype=jnp.float32, seed=0):
    """Input, kernel, bias and output cotangent (drawn by NumPy: nothing to compile)."""
    rng = np.random.default_rng(seed)
    shapes = [shape, (*kernel_size, shape[-1], features), (features,), (*shape[:3], features)]
    return [jnp.asarray(rng.normal(size=s), dtype) for s in shapes]


def value_and_grads(fn, x, kernel, bias, cotangent):
    y, pullback = jax.vjp(fn, x, kernel, bias)
    return (y, *pullback(cotangent))


# Odd and even sizes, 1x1 and even kernels, sizes that are no multiple of the row chunk.
SHAPES = [
    ((2, 7, 9, 5), (3, 3), 4),
    ((1, 13, 6, 3), (3, 3), 8),
    ((3, 5, 11, 6), (1, 1), 7),
    ((2, 8, 8, 4), (2, 2), 3),
    ((1, 9, 7, 2), (5, 3), 5),
]


@pytest.mark.parametrize("shape,kernel_size,features", SHAPES)
def test_forward_and_every_gradient_equal_lax_conv(shape, kernel_size, features):
    problem = random_problem(shape, kernel_size, features)

    @jax.jit
    def all_impls(*args):
        return {impl: value_and_grads(lambda x, k, b: conv.conv2d(x, k, impl) + b, *args)
                for impl in ("xla", "im2col")}, value_and_grads(reference, *args)

    ours, expected = all_impls(*problem)
    for impl, results in ours.items():
        for name, got, want in zip(["output", "d_input", "d_kernel", "d_bias"], results,
                                   expected):
            chex.assert_equal_shape([got, want])
            np.testing.assert_allclose(got, want, rtol=2e-5,
                                       atol=2e-5 * float(jnp.abs(want).max()),
                                       err_msg=f"{impl} {name}")


def test_large_batch_takes_several_row_chunks():
    # 48 channels at width 64: a chunk holds fewer rows than the image, so the scan really loops.
    x, kernel, bias, g = random_problem((2, 11, 64, 48), (3, 3), 6)
    rows = conv._CHUNK_BYTES // (64 * 9 * 48 * 4)
    assert 1 <= rows < 11 and 11 % rows

    @jax.jit
    def both(x, g):
        xla = jax.vjp(lambda k: reference(x, k, bias), kernel)[1](g)[0]
        return conv.weight_grad_im2col(x, g, (3, 3)), xla

    got, want = both(x, g)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_bfloat16_compute_matches_float32_within_rounding():
    x, kernel, bias, g = random_problem((2, 9, 10, 8), (3, 3), 8)
    bf16 = [a.astype(jnp.bfloat16) for a in (x, kernel, bias, g)]

    @jax.jit
    def compute(*args):
        ours = value_and_grads(lambda x, k, b: conv.conv2d(x, k, "im2col") + b, *args)
        exact = value_and_grads(reference, *[a.astype(jnp.float32) for a in args])
        return ours, value_and_grads(reference, *args), exact

    got, xla, exact = compute(*bf16)
    for name, ours, theirs, want in zip(["output", "d_input", "d_kernel", "d_bias"], got, xla,
                                        exact):
        assert ours.dtype == jnp.bfloat16, name
        scale = float(jnp.abs(want).max())
        # At least as close to the float32 value as XLA's own bfloat16 convolution, up to one
        # bfloat16 rounding step.
        ours_err = float(jnp.abs(ours.astype(jnp.float32) - want).max())
        theirs_err = float(jnp.abs(theirs.astype(jnp.float32) - want).max())
        assert ours_err <= theirs_err + 2 ** -7 * scale, name


def test_module_parameters_are_those_of_nn_conv():
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 5)).astype(np.float32)
    for kernel_size in [(3, 3), (1, 1)]:
        ours = conv.Conv(7, kernel_size, impl="im2col")
        flax_conv = nn.Conv(7, kernel_size, padding="SAME")
        flax_params = jax.eval_shape(flax_conv.init, jax.random.key(0), x)["params"]
        chex.assert_trees_all_equal_shapes_and_dtypes(
            jax.eval_shape(ours.init, jax.random.key(0), x)["params"], flax_params)
        # Interchangeable: nn.Conv's parameters give nn.Conv's output.
        flax_params = jax.tree.map(
            lambda s: jnp.asarray(np.random.default_rng(1).normal(size=s.shape), s.dtype),
            flax_params)
        got, want = jax.jit(lambda p, x: (ours.apply({"params": p}, x),
                                          flax_conv.apply({"params": p}, x)))(flax_params, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_module_dtype_promotion_like_nn_conv():
    x = jax.ShapeDtypeStruct((1, 5, 5, 3), jnp.float32)
    for dtype, expected in [(jnp.bfloat16, jnp.bfloat16), (None, jnp.float32)]:
        out, variables = jax.eval_shape(
            conv.Conv(4, (3, 3), dtype=dtype).init_with_output, jax.random.key(0), x)
        assert out.dtype == expected
        assert variables["params"]["kernel"].dtype == jnp.float32


def test_auto_is_im2col_on_cpu_and_xla_elsewhere():
    assert conv.default_impl("cpu") == "im2col"
    assert conv.default_impl("gpu") == "xla"
    assert conv.default_impl("tpu") == "xla"
    assert conv.resolve_impl("auto") == conv.default_impl(jax.default_backend())
    with pytest.raises(ValueError, match="conv_impl"):
        conv.resolve_impl("winograd")


def test_drsan_gradient_is_the_same_with_every_impl():
    rng = np.random.default_rng(0)
    lq = jnp.asarray(rng.uniform(size=(2, 10, 9, 3)), jnp.float32)
    gt = jnp.asarray(rng.uniform(size=(2, 30, 27, 3)), jnp.float32)
    tiny = dict(scale=3, features=8, num_blocks=2, num_groups=1)
    params = init_params(DRSAN(**tiny), jax.random.key(0))
    # Random biases and PReLU slopes too, so that every parameter's gradient is exercised.
    params = jax.tree.map(lambda p: p + 0.05 * rng.normal(size=p.shape).astype(np.float32),
                          params)

    @jax.jit
    def grads(params):
        def loss(p, impl):
            return jnp.mean(jnp.abs(DRSAN(**tiny, conv_impl=impl).apply({"params": p}, lq) - gt))
        return {impl: jax.value_and_grad(loss)(params, impl) for impl in ("xla", "im2col")}

    results = grads(params)
    (loss_xla, g_xla), (loss_im2col, g_im2col) = results["xla"], results["im2col"]
    np.testing.assert_allclose(loss_im2col, loss_xla, rtol=1e-6)
    chex.assert_trees_all_equal_structs(g_im2col, g_xla)
    for path, got in jax.tree.flatten_with_path(g_im2col)[0]:
        want = g_xla
        for key in path:
            want = want[key.key]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()),
                                   err_msg=jax.tree_util.keystr(path))
