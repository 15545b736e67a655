"""Tests for drsan_jax.training and the configs: recipe, a tiny end-to-end run, exact resume."""

import ast
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from drsan_jax import checkpoints, training
from drsan_jax.models import (
    build_model_from_config,
    init_params,
    normalize_model_config,
    param_shapes,
)

REPO = Path(__file__).resolve().parents[1]
REQUIRED_FIELDS = ("scale", "batch_size", "patch_size", "num_train_steps", "learning_rate", "seed",
                   "train_data", "val_data", "checkpoint_every_steps", "eval_every_steps",
                   "log_every_steps")
TINY_MODEL = {"features": 8, "num_blocks": 1, "num_groups": 2}
STEPS = 6  # of the reference run


# Every run here builds a fresh train state: the persistent cache turns recompiling identical
# programs into lookups (conftest.compilation_cache).
pytestmark = pytest.mark.usefixtures("compilation_cache")


def _tiny_config(configs_module, train_images, benchmark, **overrides):
    config = configs_module.get_config()
    config.model.update(TINY_MODEL)
    config.update(
        train_data=str(train_images / "hr"), cache_dir=str(train_images / "cache"),
        val_data=str(benchmark), val_datasets="", patch_size=8, batch_size=4,
        num_train_steps=STEPS, log_every_steps=2, eval_every_steps=3, checkpoint_every_steps=2,
        data_workers=1, prefetch_batches=2)
    config.update(overrides)
    config.lock()
    return config


def _params(workdir):
    return checkpoints.load(workdir).params


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def reference_run(configs_module, train_images, benchmark, tmp_path_factory):
    """A STEPS-step run in one go, validated on Set5, started from an `init_from` checkpoint."""
    workdir = tmp_path_factory.mktemp("reference")
    start = tmp_path_factory.mktemp("start") / "x2"
    model_cfg = {**TINY_MODEL, "scale": 2}
    start_params = init_params(build_model_from_config(model_cfg), jax.random.key(7))
    checkpoints.save_params_for_inference(start, model_cfg, start_params)
    config = _tiny_config(configs_module, train_images, benchmark, val_datasets="Set5",
                          init_from=str(start))
    records, absl_logger = _Records(), logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.addHandler(records)
    absl_logger.setLevel(logging.INFO)
    compiled_before = training.train_step._cache_size()
    try:
        training.train_and_evaluate(config, str(workdir))
    finally:
        absl_logger.removeHandler(records)
        absl_logger.setLevel(level)
    return {"workdir": workdir, "config": config, "lines": records.lines, "start": start,
            "compiles": training.train_step._cache_size() - compiled_before}


def test_default_config_is_the_paper_recipe(configs_module):
    config = configs_module.get_config()
    for name in REQUIRED_FIELDS:
        assert name in config, name
    assert (config.scale, config.patch_size, config.batch_size) == (2, 48, 16)
    assert (config.adam_b1, config.adam_b2, config.adam_eps) == (0.9, 0.999, 1e-8)
    assert config.learning_rate == 2e-4
    assert (config.lr_decay_rate, config.lr_decay_steps) == (0.85, 200_000)
    assert config.model.variant == "32s" and config.val_datasets == "Set5"
    schedule = training.learning_rate_schedule(config)
    for step, expected in ((0, 2e-4), (199_999, 2e-4), (200_000, 1.7e-4), (400_000, 1.445e-4)):
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6)


def test_every_default_field_has_a_comment():
    lines = (REPO / "configs" / "default.py").read_text().splitlines()
    fields = [i for i, line in enumerate(lines) if line.strip().startswith("config.")
              and " = " in line and "ConfigDict()" not in line]
    assert len(fields) > 30
    for i in fields:
        assert lines[i - 1].strip().startswith("#"), f"configs/default.py:{i + 1} {lines[i]}"


@pytest.mark.parametrize("variant", ["32s", "32m", "32l", "48s", "48m"])
def test_variant_configs_override_only_the_variant(configs_module, variant):
    path = REPO / "configs" / f"drsan{variant}.py"
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree)
    namespace = {}
    exec(compile(tree, str(path), "exec"), namespace)  # noqa: S102 - our own config file
    config, default = namespace["get_config"]().to_dict(), configs_module.get_config().to_dict()
    assert config.pop("model")["variant"] == variant
    default.pop("model")
    assert config == default


def _parse_config_flags(argv):
    """Parses argv as train.py does (config_flags reads the overrides from argv itself)."""
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True,
                                    sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def test_command_line_overrides_and_unknown_keys(configs_module):
    config = _parse_config_flags(
        ["train.py", f"--config={REPO}/configs/drsan48s.py", "--config.scale=3",
         "--config.batch_size=32", "--config.model.features=8"])
    assert (config.scale, config.batch_size, config.model.variant) == (3, 32, "48s")
    assert training.model_config(config)["features"] == 8
    with pytest.raises((AttributeError, KeyError, flags.Error), match="bach_size"):
        _parse_config_flags(
            ["train.py", f"--config={REPO}/configs/default.py", "--config.bach_size=8"])


def test_config_errors_name_the_flag(configs_module, train_images, benchmark):
    for overrides, message in (({"scale": 5}, "--config.scale=5"),
                               ({"batch_size": 0}, "--config.batch_size=0"),
                               ({"model": {"variant": "64s"}}, "--config.model"),
                               ({"model": {"dtype": "float16"}}, "--config.model.dtype"),
                               ({"val_datasets": "Set6"}, "Set6.*found: .*Set5"),
                               ({"init_from": "/nowhere"},
                                "init_from='/nowhere': /nowhere: no such file or folder")):
        config = _tiny_config(configs_module, train_images, benchmark)
        config.unlock()
        config.update(overrides)
        with pytest.raises(ValueError, match=message):
            training.check_config(config)


def test_tiny_run_logs_validates_and_checkpoints(reference_run):
    lines, workdir = reference_run["lines"], reference_run["workdir"]
    assert reference_run["compiles"] == 1  # one train_step program for the whole run
    header = lines[:4]
    assert header[0].startswith("devices: 1 device(s)")
    assert header[1].startswith("global batch 4")
    assert header[2].startswith("model drsan (features=8 num_blocks=1 num_groups=2) x2:")
    assert "6,357 parameters" in header[2] and header[2].endswith("L1 loss")
    assert header[3].startswith(f"checkpoints: {workdir / 'checkpoints'}")
    assert any(line.startswith(f"initialised 34 parameter arrays from {reference_run['start']}")
               for line in lines)
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["2/6", "4/6", "6/6"]
    assert all(k in progress[-1] for k in ("loss", "lr 2.00e-04", "steps/s", "ETA"))
    validations = [line for line in lines if line.startswith("validation step")]
    assert len(validations) == 2 and "Set5 x2 PSNR" in validations[0]
    events = b"".join(p.read_bytes() for p in workdir.glob("events.out.tfevents.*"))
    for tag in (b"train/loss", b"train/learning_rate", b"train/steps_per_sec", b"val/Set5/psnr",
                b"val/Set5/ssim"):
        assert tag in events
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
    # Saved at 2, 3 (validated), 4 and 6 (validated, the end); the latest three are kept.
    assert steps == [3, 4, 6]
    latest = checkpoints.load(workdir)
    assert latest.step == STEPS and latest.scale == 2
    assert latest.training_config["train_data"] == reference_run["config"].train_data
    best = checkpoints.load(workdir, which="best")
    assert best.step in (3, 6)


def test_resume_equals_one_go_exactly(reference_run, configs_module, train_images, benchmark,
                                      tmp_path):
    config = reference_run["config"]
    first = _tiny_config(configs_module, train_images, benchmark, val_datasets="Set5",
                         init_from=config.init_from, num_train_steps=3)
    training.train_and_evaluate(first, str(tmp_path))
    assert checkpoints.load(tmp_path).step == 3
    # The same command again, with the full step count: it resumes at step 3.
    training.train_and_evaluate(config, str(tmp_path))
    _assert_trees_equal(_params(tmp_path), _params(reference_run["workdir"]))


def test_a_killed_run_resumes_without_loss(reference_run, compilation_cache, tmp_path):
    config = reference_run["config"]
    flags_ = [f"--config.{k}={v}" for k, v in (
        ("train_data", config.train_data), ("cache_dir", config.cache_dir),
        ("val_data", config.val_data), ("val_datasets", "Set5"), ("init_from", config.init_from),
        ("patch_size", 8), ("batch_size", 4), ("num_train_steps", STEPS), ("eval_every_steps", 3),
        ("checkpoint_every_steps", 1), ("data_workers", 1), ("prefetch_batches", 2),
        *((f"model.{k}", v) for k, v in TINY_MODEL.items()))]
    command = [sys.executable, str(REPO / "train.py"), f"--config={REPO}/configs/default.py",
               f"--workdir={tmp_path}", *flags_]
    # One CPU device, like this process, so that the floats are those of the reference run.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "DRSAN_JAX_CPU_DEVICES": "1",
           "JAX_COMPILATION_CACHE_DIR": compilation_cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "checkpoints" / "1").is_dir():
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert checkpoints.load(tmp_path).step < STEPS
    training.train_and_evaluate(config, str(tmp_path))
    _assert_trees_equal(_params(tmp_path), _params(reference_run["workdir"]))


def test_nan_stops_at_once_and_keeps_the_last_good_checkpoint(
        configs_module, train_images, benchmark, tmp_path):
    # Adam's first step moves every weight by about the learning rate: 1e30 overflows the next
    # forward pass to inf.
    config = _tiny_config(configs_module, train_images, benchmark, learning_rate=1e30,
                          checkpoint_every_steps=1)
    with pytest.raises(FloatingPointError, match="diverged at step 2: .*last good checkpoint is "
                                                 "step 1"):
        training.train_and_evaluate(config, str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(_params(tmp_path)))


def test_init_from_copies_all_but_the_upsampler_across_scales(reference_run):
    source = checkpoints.load(reference_run["start"])
    model_cfg = normalize_model_config({**TINY_MODEL, "scale": 3})
    fresh = _constant_params(model_cfg)
    params, copied, reinitialised = training.params_from_checkpoint(
        str(reference_run["start"]), model_cfg, fresh)
    assert sorted(reinitialised) == ["upsampler/conv_0/bias", "upsampler/conv_0/kernel"]
    assert "output/kernel" in copied and len(copied) == 34 - 2
    _assert_trees_equal(params["upsampler"], fresh["upsampler"])
    rest = [k for k in params if k != "upsampler"]
    _assert_trees_equal([params[k] for k in rest], [source.params[k] for k in rest])
    wider = normalize_model_config({**TINY_MODEL, "features": 16, "scale": 2})
    with pytest.raises(ValueError, match="--config.init_from=.*different network"):
        training.params_from_checkpoint(str(reference_run["start"]), wider,
                                        _constant_params(wider))


def _constant_params(model_cfg):
    """Parameters of the right shapes that no checkpoint holds (init_params would compile)."""
    shapes = param_shapes(build_model_from_config(model_cfg))
    return jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes)
