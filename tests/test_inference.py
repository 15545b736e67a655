"""Tests for drsan_jax.inference: buckets, padding, the self-ensemble, bucketed == plain."""

import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from conftest import NearestUpsampler, random_params, tiny_model

from drsan_jax import inference, metrics
from drsan_jax.data import inverse_transform, quantize, read_image, transform
from drsan_jax.inference import Predictor
from drsan_jax.models import build_model, init_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def x4_images(benchmark_dir):
    """Real LR inputs: Set5 at x4 (64 to 88 px, odd sides) and Set14's grey bridge."""
    folder = benchmark_dir / "x4"
    paths = sorted((folder / "Set5").glob("*.png")) + [folder / "Set14" / "bridge.png"]
    return [read_image(p) for p in paths]


def test_bucket_sizes():
    expected = {1: 16, 16: 16, 17: 24, 24: 24, 25: 32, 33: 48, 49: 64, 65: 96, 97: 128,
                129: 192, 320: 384, 481: 512, 1000: 1024, 1025: 1536}
    assert {n: inference.bucket_size(n) for n in expected} == expected
    sizes = [inference.bucket_size(n) for n in range(1, 3000)]
    assert sizes == sorted(sizes)
    assert max(s / n for n, s in zip(range(16, 3000), sizes[15:])) <= 1.5
    assert inference.bucket_shape(69, 88) == (96, 96)
    with pytest.raises(ValueError, match="at least 1 pixel"):
        inference.bucket_size(0)


def test_pad_batch_masks_the_images_and_fills_spare_slots():
    images = [np.full((2, 3, 3), 0.5, np.float32), np.full((4, 1, 3), 0.25, np.float32)]
    lq, mask = inference.pad_batch(images, (4, 5), size=3)
    chex.assert_shape((lq, mask), ((3, 4, 5, 3), (3, 4, 5, 1)))
    for j, x in enumerate(images):
        h, w = x.shape[:2]
        np.testing.assert_array_equal(lq[j, :h, :w], x)
        assert lq[j].sum() == x.sum() and mask[j].sum() == h * w
        assert np.all(mask[j, :h, :w] == 1)
    # The spare slot: no pixels, a full mask (its DRM means divide by the valid area).
    assert not lq[2].any() and np.all(mask[2] == 1)
    assert inference.pad_batch(images, (4, 5))[0].shape[0] == 2


def test_inputs_of_any_layout_and_dtype(x4_images):
    predictor = Predictor(NearestUpsampler(2), {})
    grey = x4_images[-1][:21, :34]  # (21, 34) uint8
    rgb = np.stack([grey] * 3, axis=2)
    expected = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)
    for image in (grey, grey[..., None], rgb, np.concatenate([rgb, rgb[..., :1]], axis=2),
                  grey.astype(np.uint16) * 257, grey / 255.0, (rgb / 255.0).astype(np.float32)):
        sr = predictor(image)
        chex.assert_shape(sr, (42, 68, 3))
        chex.assert_type(sr, np.float32)
        np.testing.assert_array_equal(quantize(sr), expected)
    with pytest.raises(ValueError, match=r"\(4, 4, 2\)"):
        predictor(np.zeros((4, 4, 2), np.float32))


def test_self_ensemble_of_an_equivariant_model_is_the_model(x4_images):
    lq = x4_images[4][:19, :30]  # not square: transposed inputs take other buckets
    plain = Predictor(NearestUpsampler(3), {})(lq)
    for exact_shapes in (False, True):
        ensemble = Predictor(NearestUpsampler(3), {}, self_ensemble=True,
                             exact_shapes=exact_shapes)(lq)
        np.testing.assert_allclose(ensemble, plain, atol=1e-7)


def test_self_ensemble_averages_the_mapped_back_outputs(x4_images):
    model = tiny_model(4)
    params = random_params(model)
    lq = x4_images[2][:20, :30]
    ensemble = Predictor(model, params, self_ensemble=True)(lq)
    chex.assert_shape(ensemble, (80, 120, 3))
    x = lq.astype(np.float32) / 255
    apply = jax.jit(model.apply)
    outputs = [inverse_transform(
        np.asarray(apply({"params": params}, transform(x, k)[None]))[0], k)
        for k in range(8)]
    np.testing.assert_allclose(ensemble, np.mean(outputs, axis=0), atol=2e-5)
    assert np.abs(ensemble - outputs[0]).max() > 1e-3  # DRSAN is not equivariant: not vacuous


def test_bucketed_equals_plain_whole_image_inference(x4_images, benchmark_dir):
    model = tiny_model(4)
    params = random_params(model)
    before = inference.compiled_programs()
    bucketed = Predictor(model, params).predict(x4_images)
    buckets = {inference.bucket_shape(*x.shape[:2]) for x in x4_images}
    assert inference.compiled_programs() - before <= len(buckets) < len(x4_images)
    exact = Predictor(model, params, exact_shapes=True).predict(x4_images)
    hr_paths = sorted((benchmark_dir / "HR" / "Set5").glob("*.png"))
    hr_paths.append(benchmark_dir / "HR" / "Set14" / "bridge.png")
    for lq, a, b, hr_path in zip(x4_images, bucketed, exact, hr_paths):
        chex.assert_shape(a, (lq.shape[0] * 4, lq.shape[1] * 4, 3))
        np.testing.assert_allclose(a, b, atol=2e-5)
        # The outputs of random weights are far from HR; what matters is that both agree.
        hr = read_image(hr_path)
        psnr_a, _ = metrics.evaluate_pair(quantize(a), hr, 4)
        psnr_b, _ = metrics.evaluate_pair(quantize(b), hr, 4)
        assert abs(psnr_a - psnr_b) < 1e-3
    # A second pass over the same sizes compiles nothing.
    before = inference.compiled_programs()
    Predictor(model, params).predict(x4_images[:3])
    assert inference.compiled_programs() == before


def test_batches_equal_one_image_at_a_time(x4_images):
    model = tiny_model(4)
    params = random_params(model)
    # Three images of one bucket (24x32): a batch of 2 and a partial batch with a spare slot.
    crops = [x4_images[0][:20, :30], x4_images[1][:17, :25], x4_images[3][:24, :32]]
    one = Predictor(model, params).predict(crops)
    batched = Predictor(model, params, batch_size=2).predict(crops)
    for a, b in zip(one, batched):
        np.testing.assert_allclose(a, b, atol=2e-5)
    # A pixel budget of two 24x32 inputs caps batch_size 8 at 2: the program of batch 2 again.
    before = inference.compiled_programs()
    capped = Predictor(model, params, batch_size=8, max_batch_pixels=2 * 24 * 32)
    np.testing.assert_allclose(capped.predict(crops + crops[:1])[3], one[0], atol=2e-5)
    assert inference.compiled_programs() == before


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "batch_size"),
    ({"max_batch_pixels": 0.5}, "max_batch_pixels"),
])
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Predictor(NearestUpsampler(2), {}, **kwargs)


def test_split_rows_auto_is_off_with_one_device_and_checked():
    assert jax.local_device_count() == 1  # the suite keeps one CPU device
    assert not inference.default_split_rows()
    for split_rows in ("auto", True, False):
        assert Predictor(NearestUpsampler(2), {}, split_rows=split_rows).split_rows is False
    with pytest.raises(ValueError, match=r'split_rows must be True, False or "auto", got .yes.'):
        Predictor(NearestUpsampler(2), {}, split_rows="yes")
    with pytest.raises(ValueError, match="split_rows must be"):
        Predictor(NearestUpsampler(2), {}, split_rows=None)
    with pytest.raises(ValueError, match="exact_shapes"):
        Predictor(NearestUpsampler(2), {}, split_rows=True, exact_shapes=True)
    assert Predictor(NearestUpsampler(2), {}, exact_shapes=True).split_rows is False


# Predictor(split_rows=True) against split_rows=False on several CPU devices (argv[1] of them).
SPLIT_ROWS = r"""
import json, sys
import jax, numpy as np
from drsan_jax import inference
from drsan_jax.inference import Predictor
from drsan_jax.models import DRSAN, param_shapes

devices = int(sys.argv[1])
assert jax.local_device_count() == devices
# The devices each call's output lives on, by (split_rows, padded height).
used, calls = {}, []
dispatch = Predictor._dispatch
def recording_dispatch(self, shape, inputs, size):
    out = dispatch(self, shape, inputs, size)
    used[f"{self.split_rows} {shape[0]}"] = len(out.sharding.device_set)
    calls.append([self.split_rows, len(inputs), size])
    return out
Predictor._dispatch = recording_dispatch

model = DRSAN(scale=2, features=8, num_blocks=2, num_groups=1)
rng = np.random.default_rng(0)
# Every parameter random (biases and PReLU slopes too), drawn on the host: no init compile.
params = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype),
                      param_shapes(model))
# Buckets (16, 24), (24, 32) and (48, 16); the ensemble adds (32, 24).
images = [rng.random(shape, np.float32) for shape in ((13, 20), (21, 30), (45, 14))]
results = {"auto": Predictor(model, params).split_rows}
outputs = {}
for split_rows in (True, False):
    single = Predictor(model, params, split_rows=split_rows)
    results[f"resolved {split_rows}"] = single.split_rows
    # A batch of two (one image per device on 2 devices, rows split on 3) with a spare slot in
    # its second call.
    batched = Predictor(model, params, split_rows=split_rows, batch_size=2)
    # The self-ensemble of a non-square image: transposed calls take another bucket.
    ensemble = Predictor(model, params, split_rows=split_rows, self_ensemble=True)
    outputs[split_rows] = (single.predict(images)
                           + batched.predict([images[1], images[1][:17, :25], images[1][::-1]])
                           + [ensemble(images[1])])
results["shapes_equal"] = [a.shape == b.shape for a, b in zip(*outputs.values())]
results["diffs"] = [float(np.abs(a - b).max()) for a, b in zip(*outputs.values())]
results["used"] = used
results["calls"] = calls
# A second pass over the same sizes compiles nothing.
before = inference.compiled_programs()
for split_rows in (True, False):
    Predictor(model, params, split_rows=split_rows).predict(images)
results["recompiled"] = inference.compiled_programs() - before
print("RESULTS " + json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.parametrize("devices", [2, 3])
def test_split_rows_over_cpu_devices_equals_one_device(devices):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run([sys.executable, "-c", SPLIT_ROWS, str(devices)], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.split("RESULTS ", 1)[1])
    assert results["auto"] and results["resolved True"] and not results["resolved False"]
    assert all(results["shapes_equal"]) and len(results["diffs"]) == 7
    assert max(results["diffs"]) < 1e-5
    # Split where the padded height gives every device at least 8 rows, else one device;
    # with 3 devices the 16- and 32-row buckets do not divide and run on one.
    expected = {16: devices == 2, 24: True, 32: devices == 2, 48: True}
    assert results["used"] == {
        **{f"True {h}": devices if split else 1 for h, split in expected.items()},
        **{f"False {h}": 1 for h in expected}}
    assert results["recompiled"] == 0
    # Spare slots pad a short batch, but never so far that a device computes only spares.
    assert [True, 1, 1] in results["calls"] and [False, 1, 2] in results["calls"]
    assert all(size == images or images >= devices or not split
               for split, images, size in results["calls"])


def test_whole_image_families_run_each_image_at_its_own_shape():
    # SMFANet's variance and pooling grid follow the image size: no padding, no mask.
    model = build_model("smfanet", 2, features=4, num_blocks=1)
    params = init_params(model, jax.random.key(0))
    predictor = Predictor(model, params, batch_size=4)
    assert predictor.exact_shapes
    rng = np.random.default_rng(0)
    images = [rng.uniform(size=s).astype(np.float32) for s in ((9, 13, 3), (17, 8, 3))]
    with jax.default_matmul_precision("highest"):
        alone = [np.asarray(model.apply({"params": params}, x[None]))[0] for x in images]
    for sr, expected in zip(predictor.predict(images), alone):
        np.testing.assert_allclose(sr, expected, atol=1e-6)
