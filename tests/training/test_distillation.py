"""Distillation (`--config.teacher`): the mixed loss, the teacher's patches, its stored outputs."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import TINY, TINY_MODEL, random_params, tiny_model, tiny_training_config

from drsan_jax import data, model_card, training
from drsan_jax.data import quantize
from drsan_jax.inference import Predictor
from drsan_jax.models import build_model_from_config, param_shapes
from drsan_jax.training import parallel, teacher
from drsan_jax.weights import checkpoints

pytestmark = pytest.mark.usefixtures("compilation_cache")

_TX = ml_collections.ConfigDict({"learning_rate": 1e-3, "lr_decay_steps": 1000,
                                 "lr_decay_rate": 0.5, "adam_b1": 0.9, "adam_b2": 0.999,
                                 "adam_eps": 1e-8})


def _state(model):
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype),
                          param_shapes(model))
    mesh = parallel.make_mesh(jax.devices()[:1])
    return training.create_train_state(model, training.create_optimizer(_TX), params, mesh), mesh


def _batch(scale=2, p=8, b=2, seed=0):
    rng = np.random.default_rng(seed)
    return {"lq": rng.integers(0, 256, (b, p, p, 3), np.uint8),
            "gt": rng.integers(0, 256, (b, p * scale, p * scale, 3), np.uint8),
            "teacher": rng.integers(0, 256, (b, p * scale, p * scale, 3), np.uint8)}


def test_a_teacher_equal_to_the_hr_patch_changes_nothing():
    model = build_model_from_config({**TINY_MODEL, "scale": 2})
    batch = _batch()
    batch["teacher"] = batch["gt"].copy()
    results = []
    for weight in (0.0, 0.5):
        state, mesh = _state(model)
        state, metrics = training.train_step(state, parallel.shard_batch(batch, mesh),
                                             teacher_weight=weight)
        results.append((float(metrics["loss"]), jax.device_get(state.params)))
    # 0.5 * L + 0.5 * L is L, and so is its gradient, to the last bit.
    assert results[0][0] == results[1][0]
    jax.tree.map(np.testing.assert_array_equal, results[0][1], results[1][1])


@pytest.mark.parametrize("weight", [0.3, 1.0])
def test_the_loss_mixes_the_hr_and_the_teacher_targets(weight):
    model = build_model_from_config({**TINY_MODEL, "scale": 2})
    batch = _batch()
    state, mesh = _state(model)
    params = jax.device_get(state.params)
    sr = model.apply({"params": params}, jnp.asarray(batch["lq"], jnp.float32) / 255)
    l1 = {k: float(jnp.mean(jnp.abs(sr - batch[k] / 255.0))) for k in ("gt", "teacher")}
    _, metrics = training.train_step(state, parallel.shard_batch(batch, mesh),
                                     teacher_weight=weight)
    expected = (1 - weight) * l1["gt"] + weight * l1["teacher"]
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
    assert abs(l1["gt"] - l1["teacher"]) > 1e-3  # the two targets differ: the mix is seen


def test_a_batch_without_teacher_outputs_is_refused():
    state, mesh = _state(build_model_from_config({**TINY_MODEL, "scale": 2}))
    batch = {k: v for k, v in _batch().items() if k != "teacher"}
    with pytest.raises(ValueError, match="needs the batch's teacher outputs"):
        training.train_step(state, parallel.shard_batch(batch, mesh), teacher_weight=0.5)


def test_teacher_patches_are_cut_and_turned_with_the_hr_patches(train_images):
    dataset = data.load_training_set(str(train_images / "hr"), 2, 8,
                                     train_images / "cache")
    # A "teacher" that returns the HR image itself: its patches must be the HR patches.
    pairs = tuple(dataclasses.replace(
        p, teacher=np.array(p.gt[:p.lq.shape[0] * 2, :p.lq.shape[1] * 2])) for p in dataset.pairs)
    sampler = data.PatchSampler(dataclasses.replace(dataset, pairs=pairs), 16, 8, seed=3)
    plain = data.PatchSampler(dataset, 16, 8, seed=3).batch(5)
    batch = sampler.batch(5)
    np.testing.assert_array_equal(batch["teacher"], batch["gt"])
    np.testing.assert_array_equal(batch["gt"], plain["gt"])
    assert "teacher" not in plain


def test_teacher_outputs_are_computed_once_and_equal_the_model_s(train_images, tiny_checkpoint,
                                                                 tmp_path, monkeypatch):
    dataset = data.load_training_set(str(train_images / "hr"), 2, 8, train_images / "cache")
    first = teacher.with_teacher_outputs(dataset, str(tiny_checkpoint), tmp_path)
    loaded = checkpoints.load(tiny_checkpoint)
    predictor = Predictor(loaded.model, loaded.params)
    for pair in first.pairs[:2]:
        np.testing.assert_array_equal(pair.teacher, quantize(predictor(pair.lq)))
    assert len(list((tmp_path / "teacher").glob("*.npy"))) == len(dataset.pairs)

    # A second run reads them back without running the teacher.
    monkeypatch.setattr(teacher, "Predictor", lambda *a, **k: pytest.fail("ran the teacher"))
    again = teacher.with_teacher_outputs(dataset, str(tiny_checkpoint), tmp_path)
    for a, b in zip(first.pairs, again.pairs):
        np.testing.assert_array_equal(a.teacher, b.teacher)


def test_another_teacher_is_computed_again(train_images, tmp_path, monkeypatch):
    dataset = data.load_training_set(str(train_images / "hr"), 2, 8, train_images / "cache")
    dataset = dataclasses.replace(dataset, pairs=dataset.pairs[:1])
    names = []
    for seed in (0, 1):
        # The same network with other weights: another teacher.
        path = checkpoints.save_params_for_inference(
            tmp_path / f"teacher{seed}", {"scale": 2, **TINY},
            random_params(tiny_model(2), seed=seed))
        teacher.with_teacher_outputs(dataset, str(path), tmp_path / "cache")
        names.append({p.name for p in (tmp_path / "cache" / "teacher").glob("*.npy")})
    assert len(names[0]) == 1 and len(names[1]) == 2


def test_a_teacher_of_another_scale_is_refused(train_images, tiny_checkpoint, tmp_path):
    dataset = data.load_training_set(str(train_images / "hr"), 3, 8, train_images / "cache")
    with pytest.raises(ValueError, match=r"--config.teacher=.*x2 model.*x3"):
        teacher.with_teacher_outputs(dataset, str(tiny_checkpoint), tmp_path)


@pytest.mark.parametrize("overrides,message", [
    ({"teacher": "/nowhere"}, "--config.teacher='/nowhere'.*no such file or folder"),
    ({"teacher_weight": 0.0}, r"--config.teacher_weight=0.0: expected a weight in \(0, 1\]"),
    ({"teacher_weight": 1.5}, r"--config.teacher_weight=1.5"),
])
def test_teacher_config_errors_name_the_flag(configs_module, train_images, benchmark,
                                             overrides, message):
    config = tiny_training_config(configs_module, train_images, benchmark)
    config.unlock()
    config.update(overrides)
    with pytest.raises(ValueError, match=message):
        training.check_config(config)


def test_a_distilled_run_trains_and_records_its_teacher(configs_module, train_images, benchmark,
                                                        tiny_checkpoint, tmp_path):
    config = tiny_training_config(configs_module, train_images, benchmark, num_train_steps=2,
                                  teacher=str(tiny_checkpoint), teacher_weight=0.5,
                                  cache_dir=str(tmp_path / "cache"))
    training.train_and_evaluate(config, str(tmp_path / "run"))
    loaded = checkpoints.load(tmp_path / "run")
    assert loaded.step == 2
    assert loaded.training_config["teacher"] == str(tiny_checkpoint)
    assert loaded.training_config["teacher_weight"] == 0.5
    assert len(list((tmp_path / "cache" / "teacher").glob("*.npy"))) == 4
    card = model_card.build_card(loaded, data=b"", fmt="onnx", format_info={}, layout="nhwc",
                                 precision={"name": "fp32", "io": "float32"})
    assert card["teacher"] == {"model": str(tiny_checkpoint), "weight": 0.5}
    assert card["pretrainedModelG"] is None
