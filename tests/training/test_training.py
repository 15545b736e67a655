"""Tests for drsan_jax.training and the configs: recipe, a tiny end-to-end run, exact resume."""

import ast
import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest
from absl import flags
from conftest import REPO, STEPS, TINY_MODEL, assert_trees_equal, tiny_training_config
from ml_collections import config_flags

from drsan_jax import cli, training
from drsan_jax.models import (
    build_model_from_config,
    init_params,
    normalize_model_config,
    param_shapes,
)
from drsan_jax.training import workdir as workdir_lib
from drsan_jax.weights import checkpoints

REQUIRED_FIELDS = ("scale", "batch_size", "patch_size", "num_train_steps", "learning_rate", "seed",
                   "train_data", "val_data", "checkpoint_every_steps", "eval_every_steps",
                   "log_every_steps")
# Every run here builds a fresh train state: the persistent cache turns recompiling identical
# programs into lookups (conftest.compilation_cache).
pytestmark = pytest.mark.usefixtures("compilation_cache")


def _params(workdir):
    return checkpoints.load(workdir).params


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
    config = tiny_training_config(configs_module, train_images, benchmark, val_datasets="Set5",
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


def test_short_budget_config_keeps_the_model_and_replaces_the_recipe(configs_module):
    config = _parse_config_flags(
        ["train.py", f"--config={REPO}/configs/short_budget.py:lesrcnn",
         "--config.num_train_steps=1000"])
    lesrcnn = _parse_config_flags(["train.py", f"--config={REPO}/configs/lesrcnn.py"])
    assert config.model.to_dict() == lesrcnn.model.to_dict()
    assert (config.loss, config.batch_size, config.patch_size, config.grad_clip_norm) == (
        "l1", 16, 48, None)
    assert (config.lr_schedule, config.learning_rate, config.warmup_steps, config.ema_decay,
            config.num_train_steps) == ("cosine", 2e-3, 100, 0.999, 1000)
    default = _parse_config_flags(["train.py", f"--config={REPO}/configs/short_budget.py"])
    assert default.model.variant == "32s" and default.model.family == "drsan"
    with pytest.raises((ValueError, flags.Error), match="expected one of the configs .* after "
                                                        "the colon, got 'vdsr'"):
        _parse_config_flags(["train.py", f"--config={REPO}/configs/short_budget.py:vdsr"])


def test_config_errors_name_the_flag(configs_module, train_images, benchmark):
    for overrides, message in (({"scale": 5}, "--config.scale=5"),
                               ({"batch_size": 0}, "--config.batch_size=0"),
                               ({"model": {"variant": "64s"}}, "--config.model"),
                               ({"model": {"dtype": "float16"}}, "--config.model.dtype"),
                               ({"val_datasets": "Set6"}, "Set6.*found: .*Set5"),
                               ({"init_from": "/nowhere"},
                                "init_from='/nowhere'.*no such file or folder"),
                               ({"train_data": None}, "--config.train_data is not set")):
        config = tiny_training_config(configs_module, train_images, benchmark)
        config.unlock()
        config.update(overrides)
        with pytest.raises(ValueError, match=message):
            training.check_config(config)


def test_tiny_run_logs_validates_and_checkpoints(reference_run):
    lines, workdir = reference_run["lines"], reference_run["workdir"]
    assert reference_run["compiles"] == 1  # one train_step program for the whole run
    header = lines[:5]
    assert header[0].startswith("devices: 1 device(s)")
    assert header[1].startswith("global batch 4")
    assert header[2].startswith("model drsan (features=8 num_blocks=1 num_groups=2) x2:")
    assert "6,357 parameters" in header[2] and header[2].endswith("L1 loss")
    assert header[3] == "Adam 2.00e-04, staircase schedule"
    assert header[4].startswith(f"checkpoints: {workdir / 'checkpoints'}")
    assert any(line.startswith(f"initialised 34 parameter arrays from {reference_run['start']}")
               for line in lines)
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["1/6", "2/6", "4/6", "6/6"]
    # The first step is reported as soon as it is done, its compilation included.
    assert re.fullmatch(r"step 1/6  loss [0-9.]+  lr 2.00e-04  compiled and ran in [0-9.]+ s; "
                        r"the next progress line at step 2", progress[0]), progress[0]
    assert any(line.startswith("compiling the train step and running step 1") for line in lines)
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
    first = tiny_training_config(configs_module, train_images, benchmark, val_datasets="Set5",
                         init_from=config.init_from, num_train_steps=3)
    training.train_and_evaluate(first, str(tmp_path))
    assert checkpoints.load(tmp_path).step == 3
    # The same command again, with the full step count: it resumes at step 3.
    training.train_and_evaluate(config, str(tmp_path))
    assert_trees_equal(_params(tmp_path), _params(reference_run["workdir"]))


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
    assert_trees_equal(_params(tmp_path), _params(reference_run["workdir"]))


def test_nan_stops_at_once_and_keeps_the_last_good_checkpoint(
        configs_module, train_images, benchmark, tmp_path):
    # Adam's first step moves every weight by about the learning rate: 1e30 overflows the next
    # forward pass to inf.
    config = tiny_training_config(configs_module, train_images, benchmark, learning_rate=1e30,
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
    assert_trees_equal(params["upsampler"], fresh["upsampler"])
    rest = [k for k in params if k != "upsampler"]
    assert_trees_equal([params[k] for k in rest], [source.params[k] for k in rest])
    wider = normalize_model_config({**TINY_MODEL, "features": 16, "scale": 2})
    with pytest.raises(ValueError, match="--config.init_from=.*different network"):
        training.params_from_checkpoint(str(reference_run["start"]), wider,
                                        _constant_params(wider))


def _constant_params(model_cfg):
    """Parameters of the right shapes that no checkpoint holds (init_params would compile)."""
    shapes = param_shapes(build_model_from_config(model_cfg))
    return jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes)


# --- Mistakes through the real command line: one line on stderr, nothing written. ---

# absl's log lines ("I1130 13:09:09.092511 1397... file.py:12] ..."), which are not errors.
_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ ")


def _train_cli(tmp_path, workdir, *flags_, config="default.py", cache=None):
    """Runs train.py in a subprocess (cwd tmp_path); returns the CompletedProcess."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "DRSAN_JAX_CPU_DEVICES": "1",
           "DRSAN_JAX_CACHE_DIR": "none"}
    if cache is not None:
        env.update({"JAX_COMPILATION_CACHE_DIR": cache,
                    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
    command = [sys.executable, str(REPO / "train.py"), f"--config={REPO}/configs/{config}",
               f"--workdir={workdir}", *map(str, flags_)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def _tiny_flags(train_images, data=None):
    return [f"--config.train_data={data or train_images / 'hr'}",
            f"--config.cache_dir={train_images / 'cache'}", "--config.val_datasets=",
            "--config.patch_size=8", "--config.batch_size=4", "--config.data_workers=1",
            *(f"--config.model.{k}={v}" for k, v in TINY_MODEL.items())]


@contextlib.contextmanager
def _read_only(folder):
    """Makes a folder unwritable, for root too (chattr +i) when run as root."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("running as root, and chattr +i is not allowed here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


@pytest.mark.parametrize("case,expected", [
    ("unknown_key", r"--config.bach_size: .*configs/default.py has no field 'bach_size'; did "
                    r"you mean batch_size or patch_size\?"),
    ("other_family", r"--config.model.use_rsa: .*configs/edsr_baseline.py has no field "
                     r"'model.use_rsa'; .*\(use_rsa is a field of the drsan model family; this "
                     r"config trains edsr\)"),
    ("no_data", r"--config.train_data is not set: give comma-separated folders of HR images "
                r"\(e.g. --config.train_data=../shared/data/train/T91,"),
    ("missing_folder", r"--config.train_data: .*nowhere is not a folder \(expected"),
    ("not_images", r"--config.train_data: 1 of 5 training files are not PNG, BMP, JPEG or TIFF "
                   r"images; remove or replace them: .*notes.bmp$"),
    ("bad_value", r"flag --config.batch_size=four: invalid literal for int\(\)"),
    ("bad_config_argument", r"flag --config=.*configs/short_budget.py:vdsr: expected one of the "
                            r"configs drsan32s, .* after the colon, got 'vdsr'$"),
    # A mistyped --config beside overrides (every README command has one).
    ("missing_config", r"--config=.*configs/drsan48.py: cannot load it \(\[Errno 2\] No such "
                       r"file or directory: .*\); did you mean .*configs/drsan48s.py or "),
    ("tiny_patch", r"--config.patch_size=3: expected at least 8 LR pixels"),
])
def test_mistakes_before_training_are_one_line_and_write_nothing(case, expected, tmp_path,
                                                                  train_images):
    workdir = tmp_path / "runs" / "x2"
    flags_ = _tiny_flags(train_images)
    config = "default.py"
    if case == "unknown_key":
        flags_.append("--config.bach_size=8")
    elif case == "other_family":
        config, flags_ = "edsr_baseline.py", [flags_[0], "--config.model.use_rsa=False"]
    elif case == "no_data":
        flags_ = flags_[1:]
    elif case == "missing_folder":
        flags_[0] = f"--config.train_data={tmp_path / 'nowhere'}"
    elif case == "not_images":
        folder = tmp_path / "images"
        shutil.copytree(train_images / "hr", folder)
        (folder / "notes.bmp").write_text("shopping list")
        flags_[0] = f"--config.train_data={folder}"
    elif case == "bad_value":
        flags_.append("--config.batch_size=four")
    elif case == "bad_config_argument":
        config, flags_ = "short_budget.py:vdsr", flags_[:1]
    elif case == "missing_config":
        config = "drsan48.py"
    elif case == "tiny_patch":
        flags_.append("--config.patch_size=3")
    result = _train_cli(tmp_path, workdir, *flags_, config=config)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("train.py: error: ")
    assert re.search(expected, result.stderr.strip()), result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_run_that_fails_before_training_leaves_no_folders(configs_module, train_images,
                                                            benchmark, tmp_path):
    # A PNG by its first bytes that cannot be decoded: found only once the data is prepared,
    # after the workdir and its checkpoints/ folder were made.
    folder = tmp_path / "images"
    shutil.copytree(train_images / "hr", folder)
    (folder / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n and nothing more")
    config = tiny_training_config(configs_module, train_images, benchmark)
    config.unlock()
    config.update(train_data=str(folder), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="1 training image.* cannot be used; .*cut.png"):
        training.train_and_evaluate(config, str(tmp_path / "runs" / "x2"))
    assert not (tmp_path / "runs").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(ValueError, match="cut.png"):
        training.train_and_evaluate(config, str(existing))
    assert [p.name for p in existing.iterdir()] == [workdir_lib.LOCK_NAME]


def test_a_read_only_workdir_is_one_line(tmp_path, train_images):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with _read_only(workdir):
        result = _train_cli(tmp_path, workdir, *_tiny_flags(train_images))
        nested = _train_cli(tmp_path, workdir / "x2", *_tiny_flags(train_images))
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"train.py: error: --workdir {workdir} is not writable; training writes its checkpoints "
        f"there: choose a folder you can write to"]
    assert nested.returncode == 2 and len(nested.stderr.splitlines()) == 1
    assert f"--workdir {workdir / 'x2'}: cannot create it" in nested.stderr
    assert list(workdir.iterdir()) == []


def test_a_second_run_on_a_workdir_is_refused(tmp_path, train_images):
    workdir = tmp_path / "run"
    workdir.mkdir()
    # Another run's lock: an flock held on <workdir>/.lock through a descriptor of this process.
    with open(workdir / workdir_lib.LOCK_NAME, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        result = _train_cli(tmp_path, workdir, *_tiny_flags(train_images))
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"train.py: error: --workdir {workdir} is in use by another training run (process "
        f"4242): wait for it to end, or choose another --workdir"]
    assert sorted(p.name for p in workdir.iterdir()) == [workdir_lib.LOCK_NAME]


def test_a_diverged_run_ends_with_one_line(tmp_path, train_images, compilation_cache):
    workdir = tmp_path / "run"
    result = _train_cli(tmp_path, workdir, *_tiny_flags(train_images),
                        "--config.learning_rate=1e30", "--config.num_train_steps=4",
                        "--config.checkpoint_every_steps=1", cache=compilation_cache)
    errors = [line for line in result.stderr.splitlines() if not _LOG_LINE.match(line)]
    assert result.returncode == 1
    assert errors == [result.stderr.splitlines()[-1]], result.stderr
    assert re.fullmatch(r"train.py: error: training diverged at step 2: loss \S+, gradient norm "
                        r"\S+; stopped without saving. The last good checkpoint is step 1 in "
                        r".*; rerunning resumes from it \(consider a lower "
                        r"--config.learning_rate\)", errors[0])
    assert checkpoints.load(workdir).step == 1


def _save_failure_run(configs_module, train_images, benchmark, workdir, before_save):
    """A tiny run that saves at steps 2, 4, 6, calling before_save(ckpts, step) first."""
    config = tiny_training_config(configs_module, train_images, benchmark)
    save = checkpoints.TrainingCheckpoints.save

    def patched(self, step, *args, **kwargs):
        before_save(self, step)
        return save(self, step, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoints.TrainingCheckpoints, "save", patched)
        with pytest.raises(checkpoints.CheckpointSaveError) as error:
            training.train_and_evaluate(config, str(workdir))
    return str(error.value)


def test_a_checkpoint_folder_made_read_only_mid_run_stops_it(configs_module, train_images,
                                                            benchmark, tmp_path):
    folder = tmp_path / "checkpoints"
    with contextlib.ExitStack() as stack:
        def before_save(ckpts, step):
            if step == 4:
                ckpts.wait()
                stack.enter_context(_read_only(folder))

        message = _save_failure_run(configs_module, train_images, benchmark, tmp_path,
                                    before_save)
    assert message == (f"cannot save step 4 to {folder} (the folder is no longer writable); "
                       f"training stopped; the last complete checkpoint is step 2, and rerunning "
                       f"resumes from it")
    assert cli.exit_status(checkpoints.CheckpointSaveError(message)) == 1
    assert checkpoints.load(tmp_path).step == 2


def test_a_full_disk_stops_the_run_and_keeps_the_last_checkpoint(configs_module, train_images,
                                                                 benchmark, tmp_path):
    def before_save(ckpts, step):
        if step == 4:  # Orbax's save itself fails, as a write to a full disk does
            ckpts.wait()
            ckpts.manager.save = lambda *a, **k: (_ for _ in ()).throw(
                OSError(errno.ENOSPC, "No space left on device"))

    message = _save_failure_run(configs_module, train_images, benchmark, tmp_path, before_save)
    assert message == (f"cannot save a checkpoint to {tmp_path / 'checkpoints'} ([Errno 28] No "
                       f"space left on device); training stopped; the last complete checkpoint "
                       f"is step 2, and rerunning resumes from it")
    assert checkpoints.load(tmp_path).step == 2
    # Room is checked before Orbax starts writing, too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoints.shutil, "disk_usage", lambda path: types.SimpleNamespace(
            total=1 << 30, used=1 << 30, free=1000))
        message = _save_failure_run(configs_module, train_images, benchmark, tmp_path / "b",
                                    lambda ckpts, step: None)
    assert re.fullmatch(r"cannot save step 2 to .* \(0.0 MB free on its disk, and a checkpoint "
                        r"needs about \d+.\d MB\); training stopped; no checkpoint was completed "
                        r"yet", message)
    assert not (tmp_path / "b" / "checkpoints").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root: mount), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_disk_that_fills_during_a_background_save_is_one_line(small_disk, tmp_path,
                                                                train_images):
    # The room check before each save is what usually finds a full disk; without it, the
    # disk fills while Orbax's threads write, each of which logs its traceback.
    workdir = small_disk / "run"
    code = ("import runpy, sys\nfrom drsan_jax.weights import checkpoints\n"
            "checkpoints.TrainingCheckpoints._check_room = lambda self, step, trees: None\n"
            f"sys.argv = ['train.py'] + sys.argv[1:]\nrunpy.run_path({str(REPO / 'train.py')!r},"
            " run_name='__main__')\n")
    flags_ = [f"--config={REPO}/configs/default.py", f"--workdir={workdir}",
              *_tiny_flags(train_images), "--config.num_train_steps=100",
              "--config.checkpoint_every_steps=2"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "DRSAN_JAX_CPU_DEVICES": "1",
           "DRSAN_JAX_CACHE_DIR": "none", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code, *flags_], env=env, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if not _LOG_LINE.match(line)]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"train.py: error: cannot save a checkpoint to "
                               f"{workdir / 'checkpoints'} (")
    assert not [line for line in result.stderr.splitlines() if line.startswith("E")]
    saved = int(re.search(r"the last complete checkpoint is step (\d+)", lines[0]).group(1))
    assert checkpoints.load(workdir).step == saved
