"""Every baseline family through the whole pipeline: train -> resume -> evaluate -> upscale.

Tiny sizes of each family (the same code paths as the published sizes) on real T91 images,
with each family's own config file, so the recipes' fields (MSE, clipping, multi-scale) run too.
"""

import jax
import numpy as np
import pytest

from drsan_jax import api, evaluation, training
from drsan_jax.data import MultiScaleSampler, PatchSampler
from drsan_jax.models import init_params
from drsan_jax.weights import checkpoints

pytestmark = pytest.mark.usefixtures("compilation_cache")

# config file -> tiny sizes of its family.
FAMILY_CONFIGS = {
    "dran_s": {"features": 8, "num_blocks": 2, "drm_width": 1},
    "edsr_baseline": {"features": 8, "num_blocks": 1},
    "lesrcnn": {"features": 8},
    "mdsr_baseline": {"features": 8, "num_blocks": 1},
    "safmn": {"features": 8, "num_blocks": 1},  # L1 + FFT loss; whole-image evaluation
    "smfanet": {"features": 8, "num_blocks": 1},
    "span": {"features": 8},  # the training form, evaluated and upscaled folded
}
# Seed whose first four steps draw every scale (asserted below).
MULTI_SCALE_SEED = 12


def _config(configs_module, name, train_images, benchmark, steps, **overrides):
    module = __import__(f"configs.{name}", fromlist=["get_config"])
    config = module.get_config()
    config.model.update(FAMILY_CONFIGS[name])
    config.update(
        train_data=str(train_images / "hr"), cache_dir=str(train_images / "cache"),
        val_data=str(benchmark), val_datasets="", patch_size=8, batch_size=2,
        num_train_steps=steps, log_every_steps=2, eval_every_steps=2,
        checkpoint_every_steps=2, data_workers=1, prefetch_batches=2)
    config.update(overrides)
    config.lock()
    return config


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
def test_train_resume_evaluate_upscale(name, configs_module, train_images, benchmark, tmp_path):
    workdir = tmp_path / name
    seed = MULTI_SCALE_SEED if name.startswith("mdsr") else 0
    training.train_and_evaluate(
        _config(configs_module, name, train_images, benchmark, 2, seed=seed), str(workdir))
    first = checkpoints.load(workdir)
    assert first.step == 2 and first.config["family"] == configs_module.model_fields(
        name.replace("_", "-")).family
    # Rerunning with more steps resumes from step 2 and validates every scale at the end.
    training.train_and_evaluate(
        _config(configs_module, name, train_images, benchmark, 4, seed=seed,
                val_datasets="Set5"), str(workdir))
    loaded = checkpoints.load(workdir)
    assert loaded.step == 4
    for scale in loaded.scales:
        results = evaluation.evaluate_and_report(
            ckpt=str(workdir), datasets=["Set5"], data_dir=benchmark, scale=scale,
            progress=False)
        assert results["scale"] == scale and np.isfinite(results["datasets"]["Set5"]["psnr"])
        assert results["model"]["family"] == loaded.config["family"]
        upscaler = api.load(str(workdir), scale=scale)
        image = np.full((7, 5, 3), 128, np.uint8)
        assert upscaler.upscale(image).shape == (7 * scale, 5 * scale, 3)


def test_multi_scale_training_visits_every_scale_and_resumes_exactly(
        configs_module, train_images, benchmark, tmp_path):
    samplers = {s: PatchSampler.__new__(PatchSampler) for s in (2, 3, 4)}
    draws = [MultiScaleSampler(samplers, MULTI_SCALE_SEED).scale_of(t) for t in range(4)]
    assert sorted(set(draws)) == [2, 3, 4], draws
    name = "mdsr_baseline"
    whole = tmp_path / "whole"
    compiled_before = training.train_step._cache_size()
    # 10-pixel patches, which no other test uses: every program this run needs is new.
    training.train_and_evaluate(
        _config(configs_module, name, train_images, benchmark, 4, seed=MULTI_SCALE_SEED,
                checkpoint_every_steps=4, patch_size=10), str(whole))
    # One train_step program per scale, however the scales alternate.
    assert training.train_step._cache_size() - compiled_before == 3
    split = tmp_path / "split"
    for steps in (2, 4):
        training.train_and_evaluate(
            _config(configs_module, name, train_images, benchmark, steps,
                    seed=MULTI_SCALE_SEED, patch_size=10), str(split))
    a, b = checkpoints.load(whole).params, checkpoints.load(split).params
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Each scale's own branch was trained: Adam moves a branch only after its first gradient.
    fresh = init_params(checkpoints.load(whole).model, jax.random.key(MULTI_SCALE_SEED))
    for s in (2, 3, 4):
        for branch in (f"pre_x{s}", f"upsampler_x{s}"):
            moved = jax.tree.map(lambda p, q: bool(np.any(np.asarray(p) != np.asarray(q))),
                                 a[branch], fresh[branch])
            assert all(jax.tree.leaves(moved)), branch


def test_a_config_key_of_another_family_is_named(configs_module, train_images, benchmark):
    config = _config(configs_module, "edsr_baseline", train_images, benchmark, 2)
    with pytest.raises(AttributeError, match="use_rsa"):
        config.model.use_rsa = False
    config = configs_module.get_config()
    config.model.family = "edsr"
    with pytest.raises(ValueError, match=r"--config.model.\*: drm_activation, .*use_rsa: not a "
                                         r"field of the edsr family"):
        training.check_config(config)
    config = _config(configs_module, "lesrcnn", train_images, benchmark, 2, scale=8)
    with pytest.raises(ValueError, match=r"--config.scale=8: expected one of \(2, 3, 4\)"):
        training.check_config(config)
