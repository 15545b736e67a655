"""A training workdir: one run at a time, and left as it was found by a run that fails early.

Two train.py processes on one workdir would interleave their checkpoint saves and prune each
other's steps. `claim` holds an exclusive `fcntl.flock` on `<workdir>/.lock` for as long as the
run lasts; the kernel drops the lock when the process ends, however it ends (`kill -9`
included), so a stopped run never leaves it stuck, and the file itself (holding the pid of the
last run, for the message) may stay. In a multi-host run only process 0 takes it: the others
write where process 0 tells them.

A run that fails before it trains (missing data, a bad config, a full disk) takes back what it
made: an empty `checkpoints/` folder, and the workdir itself when the run created it and left
nothing in it but the lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on POSIX: runs are not protected from each other
    fcntl = None

LOCK_NAME = ".lock"


class WorkdirError(ValueError):
    """A workdir that cannot be used: taken by another run, not writable, or not a folder."""


@contextlib.contextmanager
def claim(workdir: str | os.PathLike, lock: bool = True,
          keep_if_empty: tuple[str, ...] = ("checkpoints",)) -> Iterator[Path]:
    """Creates (if needed) and locks a workdir for the duration of a `with` block.

    Args:
      workdir: the folder (`--workdir`).
      lock: take the lock (process 0 of a run); False only creates the folder.
      keep_if_empty: subfolders removed again, when empty, if the block raises.

    Yields:
      The absolute workdir.

    Raises:
      WorkdirError: another process holds the lock, or the folder cannot be created or
        written; the message names the workdir.
    """
    workdir = Path(workdir).absolute()
    created = _create(workdir)
    try:
        handle = _lock(workdir) if lock and fcntl is not None else None
    except BaseException:
        _remove_created(workdir, created)
        raise
    try:
        yield workdir
    except BaseException:
        for name in keep_if_empty:
            with contextlib.suppress(OSError):  # not empty, or already gone: keep it
                (workdir / name).rmdir()
        _remove_created(workdir, created)
        raise
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def _create(workdir: Path) -> list[Path]:
    """Makes the workdir and its missing parents; returns those made, outermost first."""
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir {workdir} is a file, not a folder")
    missing = [p for p in (workdir, *workdir.parents) if not p.exists()][::-1]
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"--workdir {workdir}: cannot create it ({e.strerror or e}); choose "
                           f"a folder you can write to") from e
    return missing


def _lock(workdir: Path):
    path = workdir / LOCK_NAME
    # os.access also sees read-only mounts and immutable folders, which stop even root.
    if not os.access(workdir, os.W_OK):
        raise WorkdirError(f"--workdir {workdir} is not writable; training writes its "
                           f"checkpoints there: choose a folder you can write to")
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the whole run
    except OSError as e:
        raise WorkdirError(f"--workdir {workdir} is not writable ({e.strerror or e}); choose a "
                           f"folder you can write to") from e
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise WorkdirError(
            f"--workdir {workdir} is in use by another training run"
            f"{f' (process {holder})' if holder.isdigit() else ''}: wait for it to end, or "
            f"choose another --workdir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _remove_created(workdir: Path, created: list[Path]) -> None:
    """Removes the folders `_create` made, if nothing but the lock was put in them."""
    if not created:
        return
    with contextlib.suppress(OSError):
        if {p.name for p in workdir.iterdir()} <= {LOCK_NAME}:
            (workdir / LOCK_NAME).unlink(missing_ok=True)
        for path in reversed(created):
            path.rmdir()  # stops at the first that is not empty


__all__ = ["LOCK_NAME", "WorkdirError", "claim"]
