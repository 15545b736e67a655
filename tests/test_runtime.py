"""Tests of the process-level defaults: compilation cache location and CPU device count."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drsan_jax import runtime


def test_cache_dir_default_and_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv(runtime.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.compilation_cache_dir() == tmp_path / "xdg" / "drsan_jax" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert runtime.compilation_cache_dir() == Path.home() / ".cache" / "drsan_jax" / "xla"
    monkeypatch.setenv(runtime.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert runtime.compilation_cache_dir() == tmp_path / "mine"
    for off in ("none", "OFF", "0", ""):
        monkeypatch.setenv(runtime.CACHE_DIR_ENV, off)
        assert runtime.compilation_cache_dir() is None


def test_default_cpu_devices_divide_the_batch():
    assert runtime.default_cpu_devices(cores=2) == 2
    assert runtime.default_cpu_devices(16, cores=2) == 2
    assert runtime.default_cpu_devices(15, cores=2) == 1
    assert runtime.default_cpu_devices(16, cores=6) == 4
    assert runtime.default_cpu_devices(18, cores=6) == 6


def test_cpu_device_flag_is_added_only_when_nobody_set_it(monkeypatch):
    # Pretend JAX has not started, so that the flag would still take effect.
    monkeypatch.setattr(runtime, "_backend_initialised", lambda: False)
    monkeypatch.delenv(runtime.CPU_DEVICES_ENV, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert runtime.configure_cpu_devices(3) == (3, "argument")
    assert os.environ["XLA_FLAGS"] == (
        "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=3")
    # The user's own XLA_FLAGS setting wins, and is not repeated.
    assert runtime.configure_cpu_devices(5) == (3, "XLA_FLAGS")
    assert os.environ["XLA_FLAGS"].count("device_count") == 1

    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv(runtime.CPU_DEVICES_ENV, "1")
    assert runtime.configure_cpu_devices(batch_size=16) == (1, "env")
    assert os.environ["XLA_FLAGS"] == ""  # one device is XLA's default: nothing to add
    monkeypatch.setenv(runtime.CPU_DEVICES_ENV, "two")
    with pytest.raises(ValueError, match=runtime.CPU_DEVICES_ENV):
        runtime.configure_cpu_devices()


def test_a_batch_that_leaves_cores_idle_is_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(runtime, "_backend_initialised", lambda: False)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.delenv(runtime.CPU_DEVICES_ENV, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert runtime.configure_cpu_devices(batch_size=3) == (1, "default")
    assert [r.getMessage() for r in caplog.records] == [
        "--config.batch_size=3 does not divide over 2 CPU devices (one per core); training on 1 "
        "device, about 1/2 of the speed; use a batch size divisible by 2 (e.g. "
        "--config.batch_size=4), or set DRSAN_JAX_CPU_DEVICES=N to choose the device count "
        "yourself"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert runtime.configure_cpu_devices(batch_size=4) == (2, "default")
        monkeypatch.setenv("XLA_FLAGS", "")
        monkeypatch.setenv(runtime.CPU_DEVICES_ENV, "1")  # chosen, not defaulted: no warning
        assert runtime.configure_cpu_devices(batch_size=3) == (1, "env")
        monkeypatch.delenv(runtime.CPU_DEVICES_ENV)
        monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # the CPU count does not matter there
        assert runtime.configure_cpu_devices(batch_size=3) == (1, "default")
    assert caplog.records == []


def test_too_late_is_reported_not_applied(monkeypatch):
    monkeypatch.setattr(runtime, "_backend_initialised", lambda: True)
    monkeypatch.delenv(runtime.CPU_DEVICES_ENV, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    count, source = runtime.configure_cpu_devices(4)
    assert source == "backend already initialised"
    assert os.environ["XLA_FLAGS"] == ""


_CHILD = """
import json, sys
import jax
from drsan_jax import runtime
settings = runtime.configure(batch_size=16)
jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(3)).block_until_ready()
print(json.dumps({"settings": settings.__dict__, "devices": jax.device_count(),
                  "expected": runtime.default_cpu_devices(16)}))
"""


def test_configure_in_a_fresh_process_honours_the_cache_override(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", runtime.CPU_DEVICES_ENV, "JAX_COMPILATION_CACHE_DIR")}
    env.update({runtime.CACHE_DIR_ENV: str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu",
                # Cache even this tiny program (JAX skips those under a second by default).
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["settings"]["compilation_cache_dir"] == str(tmp_path / "cache")
    assert any((tmp_path / "cache").iterdir()), "nothing was written to the cache"
    assert result["devices"] == result["expected"] == result["settings"]["cpu_devices"]
