"""Tests for drsan_jax.weights.checkpoints: the inference format, workdir checkpoints, partial saves."""

import shutil

import jax
import numpy as np
import optax
import pytest

from drsan_jax.models import build_model_from_config, init_params
from drsan_jax.weights import checkpoints

TINY = {"features": 8, "num_blocks": 1, "num_groups": 2, "scale": 3}


@pytest.fixture(scope="module")
def tiny_params():
    return init_params(build_model_from_config(TINY), jax.random.key(1))


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_inference_checkpoint_round_trip(tmp_path, tiny_params):
    path = checkpoints.save_params_for_inference(
        tmp_path / "tiny", {**TINY, "use_rsa": False}, tiny_params, step=17,
        extra={"source": "test"})
    loaded = checkpoints.load(path)
    assert (loaded.scale, loaded.variant, loaded.step) == (3, None, 17)
    assert loaded.extra == {"source": "test"} and loaded.training_config is None
    assert loaded.path == str(path) and loaded.config["use_rsa"] is False
    assert loaded.model == build_model_from_config({**TINY, "use_rsa": False})
    _assert_trees_equal(loaded.params, tiny_params)
    with pytest.raises(FileExistsError, match="already exists"):
        checkpoints.save_params_for_inference(path, TINY, tiny_params)


def test_load_errors_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; expected a training workdir"):
        checkpoints.load(tmp_path / "missing")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint"):
        checkpoints.load(tmp_path / "empty")
    with pytest.raises(ValueError, match="which must be"):
        checkpoints.load(tmp_path / "empty", which="newest")


def _save_steps(workdir, params, psnr_by_step, steps, keep=2, keep_best=1):
    """Saves steps like training does, with validation metrics on some of them."""
    tx = optax.adam(1e-3)
    manager = checkpoints.TrainingCheckpoints(workdir, keep=keep, keep_best=keep_best)
    for step in steps:
        step_params = jax.tree.map(lambda x, step=step: x + step, params)
        meta = {"format": checkpoints.FORMAT, "step": step, "model": TINY, "config": {"k": 1},
                "data": {"next_step": step}, "extra": {}}
        metrics = {"psnr": psnr_by_step[step]} if step in psnr_by_step else None
        manager.save(step, step_params, tx.init(step_params), meta, metrics=metrics)
    manager.close()
    return manager


def test_workdir_keeps_the_latest_and_the_best(tmp_path, tiny_params):
    manager = _save_steps(tmp_path, tiny_params, {2: 30.0, 4: 29.0}, steps=range(1, 6))
    kept = sorted(int(p.name) for p in manager.directory.iterdir())
    assert kept == [2, 4, 5]  # latest two, plus the best validated
    latest = checkpoints.load(tmp_path)
    assert latest.step == 5 and latest.training_config == {"k": 1}
    _assert_trees_equal(latest.params, jax.tree.map(lambda x: x + 5, tiny_params))
    assert checkpoints.load(tmp_path, which="best").step == 2
    assert checkpoints.load(manager.directory / "4").step == 4
    assert checkpoints.TrainingCheckpoints(tmp_path).best_step() == 2


def test_best_needs_a_validated_checkpoint(tmp_path, tiny_params):
    _save_steps(tmp_path, tiny_params, {}, steps=[1])
    with pytest.raises(ValueError, match="was validated"):
        checkpoints.load(tmp_path, which="best")


def test_a_save_cut_short_is_ignored_and_cleaned_up(tmp_path, tiny_params):
    manager = _save_steps(tmp_path, tiny_params, {}, steps=[1, 2])
    # What a kill during the save of step 3 leaves: a partly written temporary folder.
    partial = manager.directory / "3.orbax-checkpoint-tmp"
    shutil.copytree(manager.directory / "2", partial)
    for f in (partial / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[:10])
    assert checkpoints.load(tmp_path).step == 2
    assert checkpoints.TrainingCheckpoints(tmp_path).latest_step() == 2
    assert not partial.exists()
    _save_steps(tmp_path, tiny_params, {}, steps=[3])  # the resumed run saves step 3 again
    loaded = checkpoints.load(tmp_path)
    assert loaded.step == 3
    _assert_trees_equal(loaded.params, jax.tree.map(lambda x: x + 3, tiny_params))


def test_checkpoints_from_before_the_model_zoo_load_as_drsan(tmp_path, tiny_params):
    # Checkpoints written before the model zoo have no "family" in their model configuration.
    import orbax.checkpoint as ocp

    from drsan_jax.models import normalize_model_config

    legacy = {k: v for k, v in normalize_model_config(TINY).items() if k != "family"}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "old", args=ocp.args.Composite(
            params=ocp.args.StandardSave(tiny_params),
            meta=ocp.args.JsonSave({"format": checkpoints.FORMAT, "step": 3, "model": legacy})))
    loaded = checkpoints.load(tmp_path / "old")
    assert loaded.config["family"] == "drsan" and loaded.step == 3
    assert loaded.model == build_model_from_config(TINY)
    _assert_trees_equal(loaded.params, tiny_params)
