"""Tests for drsan_jax.training.optim and the weight average in training: schedules, EMA, resume."""

import math

import jax
import ml_collections
import numpy as np
import pytest
from conftest import TINY_MODEL, assert_trees_equal, tiny_training_config

from drsan_jax import evaluation, training
from drsan_jax.models import build_model_from_config, init_params
from drsan_jax.training import optim
from drsan_jax.weights import checkpoints, loading

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _schedule(**fields):
    config = ml_collections.ConfigDict({"learning_rate": 1e-3, "lr_decay_steps": 500,
                                        "lr_decay_rate": 0.6, "num_train_steps": 2000})
    config.update(fields)
    return optim.learning_rate_schedule(config)


def test_staircase_is_the_default_and_warmup_shifts_it():
    plain = _schedule()
    for step, expected in ((0, 1e-3), (499, 1e-3), (500, 6e-4), (1999, 1e-3 * 0.6 ** 3)):
        np.testing.assert_allclose(float(plain(step)), expected, rtol=1e-6)
    warm = _schedule(warmup_steps=100)
    for step, expected in ((0, 1e-5), (49, 5e-4), (99, 1e-3), (100, 1e-3), (599, 1e-3),
                           (600, 6e-4)):
        np.testing.assert_allclose(float(warm(step)), expected, rtol=1e-6)


def test_cosine_with_warmup_ends_at_the_end_factor():
    schedule = _schedule(lr_schedule="cosine", warmup_steps=100, lr_end_factor=0.1)
    for step in (0, 50, 99, 100, 500, 1050, 1999, 2000):
        t = (step - 100) / 1900
        expected = (1e-3 * (step + 1) / 100 if step < 100
                    else 1e-3 * (0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 1))) / 2))
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, err_msg=step)
    with pytest.raises(ValueError, match="--config.lr_schedule='linear'"):
        _schedule(lr_schedule="linear")


def test_ema_decay_is_capped_early_in_the_run():
    np.testing.assert_allclose(float(optim.ema_decay_at(0.999, 1)), 2 / 11)
    np.testing.assert_allclose(float(optim.ema_decay_at(0.999, 8)), 0.5)
    np.testing.assert_allclose(float(optim.ema_decay_at(0.999, 100_000)), 0.999)


def test_new_fields_are_checked_naming_the_flag(configs_module, train_images, benchmark):
    for overrides, message in (({"lr_schedule": "linear"}, "--config.lr_schedule='linear'"),
                               ({"warmup_steps": 6}, "--config.warmup_steps=6: expected an "
                                                     "integer from 0 to"),
                               ({"warmup_steps": -1}, "--config.warmup_steps=-1"),
                               ({"lr_end_factor": 2.0}, "--config.lr_end_factor=2.0"),
                               ({"ema_decay": 1.0}, "--config.ema_decay=1.0: expected a decay")):
        config = tiny_training_config(configs_module, train_images, benchmark)
        config.unlock()
        config.update(overrides)
        with pytest.raises(ValueError, match=message):
            training.check_config(config)


@pytest.fixture(scope="module")
def ema_run(configs_module, train_images, benchmark, tmp_path_factory):
    """A 6-step run with a weight average, every step saved and kept, validated at 3 and 6."""
    workdir = tmp_path_factory.mktemp("ema")
    # Staircase with warm-up: a cosine schedule depends on num_train_steps, which the resume
    # test below changes.
    config = tiny_training_config(configs_module, train_images, benchmark, ema_decay=0.9,
                          checkpoint_every_steps=1, keep_checkpoints=10, val_datasets="Set5",
                          warmup_steps=2, learning_rate=1e-3)
    training.train_and_evaluate(config, str(workdir))
    return workdir, config


def test_the_checkpoint_keeps_the_average_of_the_trained_weights(ema_run):
    workdir, _ = ema_run
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
    assert steps == [1, 2, 3, 4, 5, 6]
    # The average recomputed from the trained weights of every step, in float64.
    raw = [checkpoints.load(workdir / "checkpoints" / str(s), ema=False).params for s in steps]
    start = init_params(build_model_from_config({**TINY_MODEL, "scale": 2}), jax.random.key(0))
    expected = jax.tree.map(lambda p: np.asarray(p, np.float64), start)
    for t, params in enumerate(raw, start=1):
        d = min(0.9, (1 + t) / (10 + t))
        expected = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p, np.float64),
                                expected, params)
    loaded = checkpoints.load(workdir)  # the default: the average
    assert loaded.weights == "params_ema"
    assert loading.load_model(workdir, ema=False).weights == "params"
    average = loaded.params
    for e, a, p in zip(jax.tree.leaves(expected), jax.tree.leaves(average),
                       jax.tree.leaves(raw[-1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), e, rtol=0, atol=1e-6)
    moved = [np.abs(np.asarray(a) - np.asarray(p)).max()
             for a, p in zip(jax.tree.leaves(average), jax.tree.leaves(raw[-1]))]
    assert max(moved) > 1e-4  # the average is not the trained weights


def test_validation_and_eval_score_the_average(ema_run, benchmark, capsys):
    workdir, _ = ema_run
    scores = {ema: evaluation.evaluate_and_report(ckpt=str(workdir), datasets=["Set5"],
                                                  data_dir=str(benchmark), ema=ema,
                                                  progress=False)
              for ema in (True, False)}
    assert [scores[e]["weights"] for e in (True, False)] == ["params_ema", "params"]
    saved = checkpoints.TrainingCheckpoints(workdir).manager.metrics(6)
    np.testing.assert_allclose(saved["psnr"], scores[True]["datasets"]["Set5"]["psnr"],
                               rtol=0, atol=1e-9)
    assert saved["psnr"] != scores[False]["datasets"]["Set5"]["psnr"]


def test_a_resumed_run_continues_the_average_exactly(ema_run, configs_module, train_images,
                                                     benchmark, tmp_path):
    workdir, config = ema_run
    first = tiny_training_config(configs_module, train_images, benchmark, **{
        **{k: config[k] for k in ("ema_decay", "checkpoint_every_steps", "keep_checkpoints",
                                  "val_datasets", "warmup_steps", "learning_rate")}, "num_train_steps": 3})
    training.train_and_evaluate(first, str(tmp_path))
    training.train_and_evaluate(config, str(tmp_path))
    for ema in (True, False):
        assert_trees_equal(checkpoints.load(tmp_path, ema=ema).params,
                            checkpoints.load(workdir, ema=ema).params)
