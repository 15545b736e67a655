"""SIGTERM and Ctrl-C sent to a real train.py: the step finishes, is saved, and resumes.

(What a `kill -9` leaves is tests/training/test_training.py's.)
"""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, TINY_MODEL, tiny_training_config

from drsan_jax import events
from drsan_jax.weights import checkpoints

pytestmark = pytest.mark.usefixtures("compilation_cache")
_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ ")
_STEPS = 100000  # far more than a test waits for: the run is stopped by the signal


class _Run:
    """A train.py (or a multi-host worker) subprocess whose stderr lines are read as they come."""

    def __init__(self, command, env):
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern, timeout=180):
        """Reads lines until one matches (returns the match); fails on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s: "
                            f"{self.lines[-20:]}")
            if line is None:
                pytest.fail(f"exited before a line matching {pattern!r}: {self.lines[-20:]}")
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout=120):
        """Waits for the exit; returns (status, the lines that are not absl log records)."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)
        return self.process.returncode, [
            line for line in self.lines
            if not _LOG_LINE.match(line) and not line.startswith(" ")]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(compilation_cache, devices=1):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "DRSAN_JAX_CPU_DEVICES": str(devices),
            "JAX_COMPILATION_CACHE_DIR": compilation_cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _train(workdir, train_images, compilation_cache):
    flags_ = [f"--config.{k}={v}" for k, v in (
        ("train_data", train_images / "hr"), ("cache_dir", train_images / "cache"),
        ("val_datasets", ""), ("patch_size", 8), ("batch_size", 4), ("data_workers", 1),
        ("num_train_steps", _STEPS), ("log_every_steps", 1), ("checkpoint_every_steps", 10**6),
        *((f"model.{k}", v) for k, v in TINY_MODEL.items()))]
    return _Run([sys.executable, str(REPO / "train.py"), f"--config={REPO}/configs/default.py",
                 f"--workdir={workdir}", *flags_], _env(compilation_cache))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_finished_step_and_a_rerun_resumes_from_it(
        sig, tmp_path, train_images, compilation_cache):
    workdir = tmp_path / "run"
    run = _train(workdir, train_images, compilation_cache)
    run.wait_for(r"step 3/")
    run.process.send_signal(sig)
    status, lines = run.finish()
    name = sig.name
    assert status == 128 + sig, lines
    assert len(lines) == 1, lines
    match = re.fullmatch(rf"train.py: stopped by {name} after step (\d+) of {_STEPS}: checkpoint "
                         rf"saved to (.*); rerun the same command to resume", lines[0])
    assert match, lines
    step = int(match.group(1))
    assert step >= 3 and match.group(2) == str(workdir / "checkpoints" / str(step))
    assert any(f"{name} received: finishing this step" in line for line in run.lines)
    # The checkpoint is complete, and its step's scalars reached the event file before it.
    assert checkpoints.load(workdir).step == step
    assert events.read_scalars(workdir)[events.TRAIN_LOSS][-1, 0] == step
    # The same command resumes from it.
    rerun = _train(workdir, train_images, compilation_cache)
    rerun.wait_for(rf"resuming from step {step} ")
    rerun.wait_for(rf"step {step + 1}/")
    rerun.process.send_signal(signal.SIGTERM)
    status, lines = rerun.finish()
    assert status == 128 + signal.SIGTERM and "stopped by SIGTERM" in lines[0], lines


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_saved_checkpoints(
        tmp_path, train_images, compilation_cache):
    workdir = tmp_path / "run"
    first = _train(workdir, train_images, compilation_cache)
    first.wait_for(r"step 2/")
    first.process.send_signal(signal.SIGTERM)
    _, lines = first.finish()
    saved = int(re.search(r"after step (\d+)", lines[0]).group(1))
    run = _train(workdir, train_images, compilation_cache)
    run.wait_for(rf"step {saved + 2}/")
    run.process.send_signal(signal.SIGINT)
    run.wait_for("SIGINT received")
    run.process.send_signal(signal.SIGINT)
    status, _ = run.finish()
    # Either the default action ended it, or the first request completed before the second.
    if status == -signal.SIGINT:
        assert checkpoints.load(workdir).step >= saved
    else:
        assert status == 128 + signal.SIGINT
        assert checkpoints.load(workdir).step > saved


@pytest.mark.slow
def test_sigterm_to_one_host_stops_every_host_at_the_same_saved_step(
        configs_module, train_images, benchmark, tmp_path, compilation_cache):
    config = tiny_training_config(configs_module, train_images, benchmark, batch_size=8,
                                  num_train_steps=_STEPS, log_every_steps=1,
                                  checkpoint_every_steps=10**6, data_workers=1)
    port = _free_port()
    workers = [_Run([sys.executable, str(REPO / "tests" / "training" / "multihost_worker.py"),
                     f"localhost:{port}", str(i), json.dumps(config.to_dict()),
                     str(tmp_path / "workdir")], _env(compilation_cache, devices=2))
               for i in range(2)]
    try:
        for worker in workers:
            worker.wait_for(r"step 3/")
        workers[1].process.send_signal(signal.SIGTERM)
        ends = [worker.finish(timeout=180) for worker in workers]
    finally:
        for worker in workers:
            worker.process.kill()
    steps = []
    for worker in workers:
        match = re.search(r"stopped by SIGTERM after step (\d+)", "\n".join(worker.lines))
        assert match, worker.lines[-20:]
        steps.append(int(match.group(1)))
    assert steps[0] == steps[1] >= 3, ends
    assert checkpoints.load(tmp_path / "workdir").step == steps[0]
