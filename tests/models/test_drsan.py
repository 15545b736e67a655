"""Tests of the DRSAN modules: exact parameter counts, shapes, the DRA einsum, ablations, hooks."""

import math

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from drsan_jax import models
from drsan_jax.models import (
    DRSAN,
    build_model,
    count_params,
    dra,
    drsan,
    init_params,
    param_shapes,
)

# docs/networks/drsan.md: trainable parameters read from the released checkpoints' index files.
GOLDEN_PARAMS = {
    ("32s", 2): 368_427, ("32s", 3): 414_667, ("32s", 4): 405_419,
    ("32m", 2): 688_851, ("32m", 3): 735_091, ("32m", 4): 725_843,
    ("32l", 2): 849_063, ("32l", 3): 895_303, ("32l", 4): 886_055,
    ("48s", 2): 647_195, ("48s", 3): 751_115, ("48s", 4): 730_331,
    ("48m", 2): 1_187_827, ("48m", 3): 1_291_747, ("48m", 4): 1_270_963,
}


def tiny(scale=2, **kw):
    """A small DRSAN that compiles in a second or two on a CPU."""
    return DRSAN(scale=scale, features=8, num_blocks=3, num_groups=2, **kw)


def random_params(model, key=0):
    """Initialised parameters with every PReLU slope and bias randomised too.

    The authors' initialisation zeroes slopes and biases; random values make the tests below
    sensitive to every parameter.
    """

    channels = model.features if isinstance(model, models.DRAG) else 3
    flat, unravel = jax.flatten_util.ravel_pytree(
        init_params(model, jax.random.key(key), "glorot", channels))
    return unravel(flat + 0.1 * jax.random.normal(jax.random.key(key + 1), flat.shape))


@pytest.mark.parametrize("variant,scale", sorted(GOLDEN_PARAMS))
def test_parameter_count_matches_released_checkpoints(variant, scale):
    model = build_model(variant, scale)
    assert count_params(param_shapes(model)) == GOLDEN_PARAMS[(variant, scale)]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape(scale):
    model = tiny(scale)
    params = init_params(model, jax.random.key(0))
    hw = (17, 23)
    x = jax.random.uniform(jax.random.key(1), (3, *hw, 3))
    y = forward(model, params, x)
    chex.assert_shape(y, (3, hw[0] * scale, hw[1] * scale, 3))
    chex.assert_type(y, jnp.float32)
    chex.assert_tree_all_finite(y)


def test_published_variant_forward():
    model = build_model("32s", 4)
    params = init_params(model, jax.random.key(0))
    y = jax.jit(model.apply)({"params": params}, jnp.full((1, 9, 11, 3), 0.5))
    chex.assert_shape(y, (1, 36, 44, 3))


def test_depth_to_space_follows_tensorflow_channel_order():
    b, h, w, s, c = 2, 3, 4, 3, 5
    x = jnp.arange(b * h * w * s * s * c, dtype=jnp.float32).reshape(b, h, w, s * s * c)
    y = np.asarray(models.depth_to_space(x, s))
    for hh, ww, i, j, ch in [(0, 0, 0, 0, 0), (2, 3, 2, 1, 4), (1, 2, 0, 2, 3), (2, 0, 1, 1, 1)]:
        assert y[1, hh * s + i, ww * s + j, ch] == x[1, hh, ww, (i * s + j) * c + ch]


def test_path_index_order():
    # [r(1,0), r(2,0), r(2,1), r(3,0), r(3,1), r(3,2), ...]
    order = [(n, k) for n in range(1, 5) for k in range(n)]
    assert [models.path_index(n, k) for n, k in order] == list(range(models.num_paths(4)))


@pytest.mark.parametrize("impl", ["einsum", "unrolled", "auto"])
def test_dynamic_residual_equals_loop(impl):
    rng = np.random.default_rng(0)
    feats = [jnp.asarray(rng.normal(size=(3, 5, 7, 4)), jnp.float32) for _ in range(4)]
    r_n = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    expected = np.zeros((3, 5, 7, 4), np.float32)
    for b in range(3):
        for k in range(4):
            expected[b] += float(r_n[b, k]) * np.asarray(feats[k][b])
    got = models.dynamic_residual(r_n, feats, impl=impl)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_dynamic_residual_gradients_agree_between_impls():
    """The unrolled sum (the CPU default) has the einsum's gradients, for r and every f_k."""
    rng = np.random.default_rng(1)
    feats = [jnp.asarray(rng.normal(size=(2, 6, 5, 3)), jnp.float32) for _ in range(3)]
    r_n = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    weight = jnp.asarray(rng.normal(size=(2, 6, 5, 3)), jnp.float32)

    def loss(impl):
        return lambda r, fs: jnp.sum(weight * models.dynamic_residual(r, fs, impl=impl))

    einsum = jax.grad(loss("einsum"), argnums=(0, 1))(r_n, feats)
    unrolled = jax.grad(loss("unrolled"), argnums=(0, 1))(r_n, feats)
    chex.assert_trees_all_close(unrolled, einsum, rtol=1e-5, atol=1e-5)


def test_dynamic_residual_impl_choice():
    assert dra.default_dra_impl("cpu") == "unrolled"
    assert dra.default_dra_impl("gpu") == dra.default_dra_impl("tpu") == "einsum"
    with pytest.raises(ValueError, match=r"impl must be one of \['auto', 'einsum', 'unrolled'\]"):
        models.dynamic_residual(jnp.ones((1, 1)), [jnp.ones((1, 2, 2, 1))], impl="matmul")


def drag_reference(params, f0, num_blocks):
    """The DRAG written out by hand from docs/networks/drsan.md with plain loops, for comparison."""

    def conv(p, x):
        return jax.lax.conv_general_dilated(
            x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ) + p["bias"]

    def prelu(p, x):
        return jnp.where(x >= 0, x, p["alpha"] * x)

    drm = params["DRM"]
    r = conv(drm["conv_out"], prelu(drm["prelu"], conv(drm["conv_in"], f0))).mean(axis=(1, 2))
    feats = [f0]
    for n in range(1, num_blocks + 1):
        p = params[f"block_{n}"]
        t = conv(p["conv2"], prelu(p["prelu2"], conv(p["conv1"], prelu(p["prelu1"], feats[-1]))))
        d = sum(r[:, n * (n - 1) // 2 + k, None, None, None] * feats[k] for k in range(n))
        feats.append((t + d) * jax.nn.sigmoid(t))
    return conv(params["fusion"], jnp.concatenate(feats, axis=-1)), r


def test_drag_matches_hand_written_reference():
    drag = models.DRAG(features=6, num_blocks=3)
    f0 = jax.random.normal(jax.random.key(0), (2, 9, 7, 6))
    params = random_params(drag)
    out, state = forward(drag, params, f0, mutable=("intermediates",))
    expected, r = drag_reference(params, f0, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(state["intermediates"]["dra_coefficients"][0], r, rtol=1e-5)


def test_initialisation_like_authors_code():
    model = build_model("32s", 2)
    params = init_params(model, jax.random.key(0))
    flax_params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    chex.assert_trees_all_equal_shapes_and_dtypes(params, flax_params)
    flat = {"/".join(k.key for k in path): v for path, v in jax.tree.flatten_with_path(params)[0]}
    for name, value in flat.items():
        if name.endswith("/bias") or name.endswith("/alpha"):
            assert not np.any(np.asarray(value)), name
        else:
            assert name.endswith("/kernel"), name
            kh, kw, cin, cout = value.shape
            limit = math.sqrt(6.0 / (kh * kw * (cin + cout)))
            assert np.abs(np.asarray(value)).max() <= limit, name
            assert np.asarray(value).std() > limit / 4, name


def forward(model, params, x, mutable=False):
    return jax.jit(model.apply, static_argnames="mutable")({"params": params}, x, mutable=mutable)


def test_rsa_off_keeps_parameters_and_changes_output():
    x = jax.random.uniform(jax.random.key(3), (2, 10, 12, 3))
    on, off = tiny(), tiny(use_rsa=False)
    params = random_params(on)
    assert count_params(param_shapes(off)) == count_params(param_shapes(on))
    y_on, y_off = forward(on, params, x), forward(off, params, x)
    assert float(jnp.abs(y_on - y_off).max()) > 1e-3


def test_residual_modes():
    x = jax.random.uniform(jax.random.key(3), (2, 10, 12, 3))
    dynamic = tiny()
    params = random_params(dynamic)
    drm_size = count_params(params["DRAG_0"]["DRM"])
    for mode in ("plain", "ones"):
        model = tiny(residual=mode)
        shapes = param_shapes(model)
        # Without dynamic weights there is no DRM, and nothing else changes.
        assert "DRM" not in shapes["DRAG_0"]
        assert count_params(shapes) == count_params(params) - 2 * drm_size
        no_drm = {k: ({kk: vv for kk, vv in v.items() if kk != "DRM"} if k.startswith("DRAG") else v)
                  for k, v in params.items()}
        y = forward(model, no_drm, x)
        assert float(jnp.abs(y - forward(dynamic, params, x)).max()) > 1e-3
    # "ones" is the dynamic model with every r(n, k) fixed to 1.
    outputs = {}
    for mode in ("ones", "dynamic"):
        model = tiny(residual=mode, use_fusion=False)
        p = random_params(tiny(use_fusion=False))
        if mode == "ones":
            p = {k: ({kk: vv for kk, vv in v.items() if kk != "DRM"} if k.startswith("DRAG") else v)
                 for k, v in p.items()}
        else:
            for g in ("DRAG_0", "DRAG_1"):  # conv_out = 0, bias = 1  =>  r == 1 everywhere.
                conv_out = dict(p[g]["DRM"]["conv_out"])
                conv_out["kernel"] = jnp.zeros_like(conv_out["kernel"])
                conv_out["bias"] = jnp.ones_like(conv_out["bias"])
                p[g] = {**p[g], "DRM": {**p[g]["DRM"], "conv_out": conv_out}}
        outputs[mode] = forward(model, p, x)
    np.testing.assert_allclose(outputs["ones"], outputs["dynamic"], rtol=1e-5, atol=1e-5)


def test_drm_activation_squashes_coefficients():
    x = jax.random.uniform(jax.random.key(3), (2, 10, 12, 3))
    params = random_params(tiny())
    coeffs = {}
    for act in drsan.DRM_ACTIVATIONS:
        _, state = forward(tiny(drm_activation=act), params, x, mutable=("intermediates",))
        coeffs[act] = np.asarray(state["intermediates"]["DRAG_0"]["dra_coefficients"][0])
    np.testing.assert_allclose(coeffs["tanh"], np.tanh(coeffs["none"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(coeffs["sigmoid"], 1 / (1 + np.exp(-coeffs["none"])), rtol=1e-5)


def test_fusion_off_drops_the_fusion_conv():
    model = tiny(use_fusion=False)
    shapes = param_shapes(model)
    assert "fusion" not in shapes["DRAG_0"]
    fusion_size = (3 + 1) * 8 * 8 + 8
    assert count_params(shapes) == count_params(param_shapes(tiny())) - 2 * fusion_size


def test_analysis_hooks():
    model = tiny()
    params = random_params(model)
    x = jax.random.uniform(jax.random.key(3), (2, 10, 12, 3))
    y, state = forward(model, params, x, mutable=("intermediates", "attention"))
    np.testing.assert_allclose(y, forward(model, params, x), rtol=1e-6)
    for g in ("DRAG_0", "DRAG_1"):
        (r,) = state["intermediates"][g]["dra_coefficients"]
        chex.assert_shape(r, (2, models.num_paths(3)))
        for n in (1, 2, 3):
            (att,) = state["attention"][g][f"rsa_block_{n}"]
            chex.assert_shape(att, (2, 10, 12, 8))
            assert float(att.min()) >= 0.0 and float(att.max()) <= 1.0
    # Not asked for: nothing is returned, and the compiled program computes no extra outputs.
    lowered = jax.jit(lambda p, x: forward(model, p, x)).lower(params, x)
    assert len(jax.tree.leaves(lowered.out_info)) == 1


def test_bfloat16_compute_float32_params():
    model, model_bf16 = tiny(), tiny(dtype=jnp.bfloat16)
    params = random_params(model)
    chex.assert_trees_all_equal_dtypes(params, param_shapes(model_bf16))
    x = jax.random.uniform(jax.random.key(3), (1, 12, 12, 3))
    y, y_bf16 = forward(model, params, x), forward(model_bf16, params, x)
    chex.assert_type(y_bf16, jnp.float32)
    assert float(jnp.abs(y - y_bf16).max()) < 0.1 * float(jnp.abs(y).max())
    assert float(jnp.abs(y - y_bf16).max()) > 0.0


def test_no_recompilation_for_repeated_shapes():
    model = tiny()
    params = init_params(model, jax.random.key(0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply(p, x):
        return model.apply({"params": p}, x)

    for seed in range(3):
        apply(params, jax.random.uniform(jax.random.key(seed), (2, 11, 13, 3)))
    with pytest.raises(AssertionError):
        apply(params, jnp.zeros((2, 12, 13, 3)))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"variant": "64x"}, "variant"), ({"scale": 5}, "scale"),
     ({"residual": "dense"}, "residual"), ({"drm_activation": "relu"}, "drm_activation"),
     ({"use_attention": True}, "use_attention")],
)
def test_invalid_options_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_input_must_be_rgb_nhwc():
    model = tiny()
    params = init_params(model, jax.random.key(0))
    with pytest.raises(ValueError, match="NHWC RGB"):
        model.apply({"params": params}, jnp.zeros((8, 8, 3)))


@pytest.mark.parametrize("scale", [3, 4])
def test_masked_padded_batch_equals_each_image_alone(scale):
    model = tiny(scale)
    params = random_params(model)
    sizes = [(9, 13), (12, 7), (12, 13)]
    rng = np.random.default_rng(0)
    images = [rng.uniform(size=(*hw, 3)).astype(np.float32) for hw in sizes]
    batch = np.zeros((3, 12, 13, 3), np.float32)
    mask = np.zeros((3, 12, 13, 1), np.float32)
    for i, (img, (h, w)) in enumerate(zip(images, sizes)):
        batch[i, :h, :w] = img
        mask[i, :h, :w] = 1.0
    # Padding with garbage instead of zeros must not matter either.
    batch[mask[..., 0] == 0] = 0.7
    padded = jax.jit(model.apply)({"params": params}, batch, mask)
    for i, (img, (h, w)) in enumerate(zip(images, sizes)):
        alone = forward(model, params, img[None])
        np.testing.assert_allclose(padded[i, :h * scale, :w * scale], alone[0], atol=2e-5)
    # Without the mask the padding leaks in: the check above is not vacuous.
    unmasked = forward(model, params, batch)
    alone = forward(model, params, images[0][None])[0]
    assert float(jnp.abs(unmasked[0, :9 * scale, :13 * scale] - alone).max()) > 1e-3
