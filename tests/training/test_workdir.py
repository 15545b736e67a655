"""Tests for drsan_jax.training.workdir: one run per workdir, and nothing left by a run that fails early."""

import fcntl
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from drsan_jax.training import workdir

# Holds the lock of the workdir argv[1] until killed.
_HOLDER = """
import sys, time
from drsan_jax.training import workdir
with workdir.claim(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_claim_is_refused_naming_the_holder(tmp_path):
    with workdir.claim(tmp_path / "run") as path:
        assert path == tmp_path / "run" and (path / workdir.LOCK_NAME).read_text() == \
            f"{os.getpid()}\n"
        # flock locks belong to an open file: a second open, even in this process, is refused.
        with pytest.raises(workdir.WorkdirError, match=rf"--workdir {re.escape(str(path))} is in "
                                                       rf"use by another training run \(process "
                                                       rf"{os.getpid()}\)"):
            with workdir.claim(path):
                pass
    with workdir.claim(tmp_path / "run"):  # released at the end of the block
        pass


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(workdir.WorkdirError, match=f"process {holder.pid}"):
            with workdir.claim(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    while True:  # the kernel drops the lock as the process goes
        try:
            with workdir.claim(run):
                break
        except workdir.WorkdirError:
            assert time.monotonic() < deadline, "the lock outlived its holder"
            time.sleep(0.05)


def test_a_failure_inside_takes_back_what_the_claim_made(tmp_path):
    with pytest.raises(RuntimeError):
        with workdir.claim(tmp_path / "new" / "run") as path:
            (path / "checkpoints").mkdir()
            raise RuntimeError("missing data")
    assert list(tmp_path.iterdir()) == []
    # A workdir that was there, or holds results, stays; only an empty checkpoints/ goes.
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError):
        with workdir.claim(existing) as path:
            (path / "checkpoints").mkdir()
            (path / "events.out").write_text("log")
            raise RuntimeError("diverged")
    assert sorted(p.name for p in existing.iterdir()) == [workdir.LOCK_NAME, "events.out"]


def test_a_workdir_that_cannot_be_written_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(workdir.WorkdirError, match=r"--workdir .*file is a file, not a folder"):
        with workdir.claim(tmp_path / "file"):
            pass
    with pytest.raises(workdir.WorkdirError, match=r"--workdir .*file/run: cannot create it"):
        with workdir.claim(tmp_path / "file" / "run"):
            pass


def test_only_a_locking_claim_locks(tmp_path):
    with workdir.claim(tmp_path, lock=False), workdir.claim(tmp_path):
        with open(tmp_path / workdir.LOCK_NAME) as f, pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
