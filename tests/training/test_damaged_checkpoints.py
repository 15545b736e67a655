"""A damaged latest checkpoint: resume and eval fall back to the newest intact one.

Damage as disks and copies leave it: the array files of a step deleted, or cut short.
"""

import logging
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, assert_trees_equal, tiny_training_config

from drsan_jax import training
from drsan_jax.weights import checkpoints

pytestmark = pytest.mark.usefixtures("compilation_cache")
STEPS = 6  # saved at 2, 4, 6


def _data_files(step_dir):
    """The files holding a step's parameter arrays (Orbax's OCDBT data files)."""
    files = [p for p in (step_dir / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, list((step_dir / "params").rglob("*"))
    return files


def _damage(step_dir, how):
    for path in _data_files(step_dir):
        if how == "deleted":
            path.unlink()
        else:
            os.truncate(path, path.stat().st_size // 2)


@pytest.fixture(scope="module")
def runs(configs_module, train_images, benchmark, tmp_path_factory):
    """A STEPS-step run, and the same run to 2 * STEPS in one go (the reference of a resume)."""
    short = tmp_path_factory.mktemp("short")
    training.train_and_evaluate(tiny_training_config(configs_module, train_images, benchmark),
                                str(short))
    whole = tmp_path_factory.mktemp("whole")
    training.train_and_evaluate(tiny_training_config(
        configs_module, train_images, benchmark, num_train_steps=2 * STEPS), str(whole))
    return short, whole


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_load_skips_a_damaged_latest_step_and_names_it(how, runs, tmp_path, caplog):
    workdir = tmp_path / "run"
    shutil.copytree(runs[0], workdir)
    latest = workdir / "checkpoints" / str(STEPS)
    _damage(latest, how)
    with caplog.at_level(logging.WARNING):
        loaded = checkpoints.load(workdir)
    assert loaded.step == STEPS - 2
    assert f"checkpoint {latest} is damaged (" in caplog.text
    assert "loading the checkpoint before it" in caplog.text
    # Given explicitly, the damaged step is one short line naming it.
    with pytest.raises(checkpoints.DamagedCheckpointError) as error:
        checkpoints.load(latest)
    message = str(error.value)
    assert message.startswith(f"checkpoint {latest} is damaged (") and "\n" not in message
    assert len(message) < 400 and "tensorstore_spec" not in message


def test_eval_falls_back_and_a_damaged_step_folder_is_one_line(runs, tmp_path, benchmark):
    workdir = tmp_path / "run"
    shutil.copytree(runs[0], workdir)
    latest = workdir / "checkpoints" / str(STEPS)
    _damage(latest, "deleted")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "DRSAN_JAX_CPU_DEVICES": "1",
           "DRSAN_JAX_CACHE_DIR": "none"}

    def evaluate(ckpt):
        return subprocess.run([sys.executable, str(REPO / "eval.py"), f"--ckpt={ckpt}",
                               f"--data_dir={benchmark}", "--datasets=Set5"],
                              env=env, capture_output=True, text=True, timeout=300)

    result = evaluate(workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(rf"checkpoint {latest} is damaged \(.*\); loading the checkpoint before it",
                     result.stderr)
    assert "Set5" in result.stdout
    result = evaluate(latest)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines()
                                          if line.startswith("eval.py: error: ")], result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"eval.py: error: checkpoint {latest} is damaged (")


def test_resume_sets_a_damaged_step_aside_and_equals_an_undamaged_run(
        runs, tmp_path, configs_module, train_images, benchmark, caplog):
    workdir = tmp_path / "run"
    shutil.copytree(runs[0], workdir)
    latest = workdir / "checkpoints" / str(STEPS)
    _damage(latest, "truncated")
    config = tiny_training_config(configs_module, train_images, benchmark,
                                  num_train_steps=2 * STEPS)
    with caplog.at_level(logging.WARNING):
        training.train_and_evaluate(config, str(workdir))
    assert f"checkpoint {latest} is damaged (" in caplog.text
    assert f"moved to {STEPS}.damaged; resuming from the checkpoint before it" in caplog.text
    assert (workdir / "checkpoints" / f"{STEPS}.damaged").is_dir()
    # Resumed from step STEPS - 2; step STEPS was trained and saved again, and the end is the
    # uninterrupted run's, bit for bit.
    assert checkpoints.load(workdir).step == 2 * STEPS
    assert_trees_equal(checkpoints.load(workdir).params, checkpoints.load(runs[1]).params)
