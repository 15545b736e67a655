"""Every family against docs/networks/*.md: exact parameter counts, multiply-adds,
output shapes, masking, initialisation, and the registry's errors.

The counts of SMFANet, SPAN and SAFMN are the ones measured on their authors' classes and
released files (docs/networks/smfanet.md, span.md, safmn.md)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drsan_jax import summary
from drsan_jax.models import (
    MODEL_NAMES,
    build_model,
    count_params,
    init_params,
    param_shapes,
    resolve,
    scale_path,
)

# docs/networks/*.md: trainable parameters per scale path
# (x2, x3, x4), and the whole model for the multi-scale ones.
GOLDEN_PATH_PARAMS = {
    "drsan-32s": (368_427, 414_667, 405_419),
    "drsan-32m": (688_851, 735_091, 725_843),
    "drsan-32l": (849_063, 895_303, 886_055),
    "drsan-48s": (647_195, 751_115, 730_331),
    "drsan-48m": (1_187_827, 1_291_747, 1_270_963),
    "dran": (1_477_205, 1_661_845, 1_624_917),
    "dran-s": (787_658, 972_298, 935_370),
    "edsr-baseline": (1_369_859, 1_554_499, 1_517_571),
    "edsr": (40_729_603, 43_680_003, 43_089_923),
    "mdsr-baseline": (1_779_715, 1_964_355, 1_927_427),
    "mdsr": (6_506_499, 6_691_139, 6_654_211),
    "lesrcnn": (626_304, 810_944, 774_016),
    "lesrcnn-s": (626_304, 810_944, 774_016),
    "smfanet": (185_628, 190_503, 197_328),
    "smfanet-plus": (480_300, 486_795, 495_888),
    "span": (141_580, 145_375, 150_688),
    "span-tiny": (122_368, 125_893, 130_828),
    "safmn": (227_820, 232_695, 239_520),
    # x4 is the team15 file; x2 and x3 swap its 15,600-parameter to_img for 3,900 / 8,775.
    "safmn-ntire": (225_300, 230_175, 237_000),
}
GOLDEN_WHOLE_MODEL = {"mdsr-baseline": 3_227_203, "mdsr": 7_953_987, "lesrcnn-s": 1_254_080}
# Published (DRAN README/poster, DRSAN intro) and docs/networks/*.md-computed 720p GMACs.
GOLDEN_GMACS = {
    ("dran", 2): 318.9, ("dran", 3): 161.5, ("dran", 4): 114.9,
    ("dran-s", 2): 180.6, ("dran-s", 3): 100.0, ("dran-s", 4): 80.3,
    ("edsr", 2): 9384.7,
    ("edsr-baseline", 2): 316.2, ("edsr-baseline", 3): 160.3, ("edsr-baseline", 4): 114.2,
    ("mdsr-baseline", 2): 410.6, ("mdsr-baseline", 3): 202.3, ("mdsr-baseline", 4): 137.8,
    ("mdsr", 2): 1497.8, ("mdsr", 3): 685.4, ("mdsr", 4): 409.6,
    ("lesrcnn", 2): 281.3, ("lesrcnn", 3): 239.2, ("lesrcnn", 4): 241.4,
    ("lesrcnn-s", 2): 281.3,
}
# Measured on the authors' classes to two decimals (GMACs): equal to half a unit of the last.
GOLDEN_GMACS_2DP = {
    ("smfanet", 2): 38.79, ("smfanet", 3): 17.74, ("smfanet", 4): 10.37,
    ("smfanet-plus", 2): 101.14, ("smfanet-plus", 3): 45.62, ("smfanet-plus", 4): 26.18,
    ("span", 2): 32.48, ("span", 3): 14.82, ("span", 4): 8.64,
    ("span-tiny", 2): 28.07, ("span-tiny", 3): 12.83, ("span-tiny", 4): 7.50,
    ("safmn", 2): 51.48, ("safmn", 3): 23.38, ("safmn", 4): 13.54,
    ("safmn-ntire", 4): 13.53,
}
# SPAN at the paper's C=48 (docs/networks/span.md): deployed, and the training form's branches.
GOLDEN_SPAN48 = {False: (410_700, 417_195, 426_288), True: (1_824_900, 1_831_395, 1_840_488)}
BASELINES = ("dran-s", "edsr-baseline", "mdsr-baseline", "lesrcnn", "lesrcnn-s", "span")
# Families whose output depends on the whole image (a mask is refused; see Family).
WHOLE_IMAGE = ("smfanet", "smfanet-plus", "safmn", "safmn-ntire")


def test_every_model_is_tested():
    assert set(GOLDEN_PATH_PARAMS) == set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_to_the_unit(name):
    for scale, golden in zip((2, 3, 4), GOLDEN_PATH_PARAMS[name]):
        shapes = param_shapes(build_model(name, scale))
        assert count_params(scale_path(shapes, scale)) == golden, (name, scale)
        assert count_params(shapes) == GOLDEN_WHOLE_MODEL.get(name, golden), (name, scale)


@pytest.mark.parametrize("name,scale", sorted(GOLDEN_GMACS))
def test_multiply_adds_within_one_percent(name, scale):
    gmacs = summary.conv_macs(build_model(name, scale)) / 1e9
    assert gmacs == pytest.approx(GOLDEN_GMACS[(name, scale)], rel=0.01)


@pytest.mark.parametrize("name,scale", sorted(GOLDEN_GMACS_2DP))
def test_multiply_adds_to_two_decimals(name, scale):
    gmacs = summary.conv_macs(build_model(name, scale)) / 1e9
    assert gmacs == pytest.approx(GOLDEN_GMACS_2DP[(name, scale)], abs=0.005 + 1e-9)


@pytest.mark.parametrize("reparam", (False, True))
def test_span_training_form_counts_its_branches(reparam):
    for scale, golden in zip((2, 3, 4), GOLDEN_SPAN48[reparam]):
        shapes = param_shapes(build_model("span", scale, features=48, reparam=reparam))
        assert count_params(shapes) == golden, (reparam, scale)


def _random_params(model, key=0):
    """Initialised parameters with biases and slopes randomised too (zero at init)."""
    params = init_params(model, jax.random.key(key))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(key + 1), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape)
                                        for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module", params=BASELINES)
def small_baseline(request):
    """A baseline family at reduced width/depth (same code paths), with random parameters."""
    family, variant = resolve(request.param)
    shrink = {"features": 8, "num_blocks": 2, "reparam": True}
    if family.name == "dran":
        shrink["drm_width"] = 1  # 4p = 4 >= 3 = N(N+1)/2 path weights for N = 2
    sizes = {k: v for k, v in shrink.items()
             if k in (*family.size_fields, *family.option_fields)}
    return request.param, sizes


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_at_odd_sizes(name):
    # Shapes of the published sizes, traced without computing (the masked test below runs
    # every family for real). 19 x 17: odd, and above every family's smallest side (16).
    for scale in (2, 3, 4):
        model = build_model(name, scale)
        x = jax.ShapeDtypeStruct((2, 19, 17, 3), jnp.float32)
        sr = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), param_shapes(model), x)
        assert (sr.shape, sr.dtype) == ((2, 19 * scale, 17 * scale, 3), jnp.float32)


@pytest.mark.parametrize("name", WHOLE_IMAGE)
def test_whole_image_families_refuse_masks_and_tiny_inputs(name):
    assert not resolve(name)[0].padded_batches_exact
    model = build_model(name, 2)
    shapes = param_shapes(model)
    x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32)
    with pytest.raises(ValueError, match="takes no validity mask"):
        jax.eval_shape(lambda p, x, m: model.apply({"params": p}, x, m), shapes, x, mask)
    small = jax.ShapeDtypeStruct((1, 7, 40, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"needs at least (8x8|16x16) LR pixels.*got 7x40"):
        jax.eval_shape(lambda p, x: model.apply({"params": p}, x), shapes, small)


def test_masked_batch_equals_each_image_alone(small_baseline):
    name, sizes = small_baseline
    scale = 3
    model = build_model(name, scale, **sizes)
    params = _random_params(model)
    rng = np.random.default_rng(0)
    sizes_hw = [(13, 9), (9, 14)]  # odd sizes: DRAN's pooled DRM sees floor(h/2) rows
    images = [rng.uniform(size=(h, w, 3)).astype(np.float32) for h, w in sizes_hw]
    batch = np.zeros((2, 16, 16, 3), np.float32)
    mask = np.zeros((2, 16, 16, 1), np.float32)
    for i, (img, (h, w)) in enumerate(zip(images, sizes_hw)):
        batch[i, :h, :w], mask[i, :h, :w] = img, 1.0
    with jax.default_matmul_precision("highest"):
        together = model.apply({"params": params}, batch, mask)
        for i, (img, (h, w)) in enumerate(zip(images, sizes_hw)):
            alone = model.apply({"params": params}, img[None])[0]
            np.testing.assert_allclose(together[i, :h * scale, :w * scale], alone, atol=2e-5)
            assert not np.asarray(together[i, h * scale:]).any()


def test_multi_scale_models_switch_branches_on_one_parameter_tree():
    model = build_model("lesrcnn-s", 2, features=8)
    params = _random_params(model)
    x = jnp.full((1, 6, 5, 3), 0.3)
    outs = {s: model.clone(scale=s).apply({"params": params}, x) for s in (2, 3, 4)}
    assert {s: o.shape for s, o in outs.items()} == {s: (1, 6 * s, 5 * s, 3) for s in (2, 3, 4)}
    # Only the upsampler differs: perturbing x4's leaves x2's output unchanged.
    params["upsampler_x4"] = jax.tree.map(lambda p: p + 1.0, params["upsampler_x4"])
    np.testing.assert_array_equal(model.apply({"params": params}, x), outs[2])


@pytest.mark.parametrize("name", ["edsr-baseline", "lesrcnn", "smfanet", "span", "safmn"])
def test_pytorch_families_initialise_like_pytorch(name):
    params = init_params(build_model(name, 2), jax.random.key(0))
    checked = 0
    for path, value in jax.tree.flatten_with_path(params)[0]:
        keys = [k.key for k in path]
        if keys[-1] == "scale":  # LayerNorm weights, SMFANet's alpha: ones, as in PyTorch
            assert np.all(np.asarray(value) == 1), keys
            continue
        if keys[-1] not in ("kernel", "bias"):
            continue
        parent = params
        for k in keys[:-1]:
            parent = parent[k]
        if "kernel" not in parent:  # a LayerNorm's bias starts at zero
            assert not np.asarray(value).any(), keys
            continue
        bound = 1 / math.sqrt(math.prod(parent["kernel"].shape[:-1]))
        value = np.asarray(value)
        assert np.abs(value).max() <= bound
        if value.size > 1000:  # uniform on [-b, b]: std b / sqrt(3)
            assert value.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
            checked += 1
    assert checked > 5


def test_edsr_mean_shift_makes_a_mean_image_pass_through_a_zero_network():
    model = build_model("edsr-baseline", 2, num_blocks=1, features=4)
    zeros = jax.tree.map(jnp.zeros_like, init_params(model, jax.random.key(0)))
    sr = model.apply({"params": zeros}, jnp.zeros((1, 3, 3, 3)))
    np.testing.assert_allclose(sr[0, 0, 0], [0.4488, 0.4371, 0.4040], atol=1e-7)


def test_registry_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'edsr-big'.*expected one of \["):
        build_model("edsr-big", 2)
    with pytest.raises(ValueError, match="lesrcnn has no scale 8; expected one of"):
        build_model("lesrcnn", 8)
    with pytest.raises(ValueError, match=r"unknown edsr-baseline option\(s\) \['use_rsa'\]"):
        build_model("edsr-baseline", 2, use_rsa=False)
    assert build_model("32s", 2) == build_model("drsan-32s", 2)
