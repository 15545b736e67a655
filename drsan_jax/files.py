"""Files written whole, and recognised again when they have not changed.

Training caches, result JSONs, upscaled images and manifests are read by other processes (other
hosts sharing a cache folder, a later run, a user's image viewer), some while they are written,
and a run may be stopped at any moment. `atomic_write` writes to a hidden temporary file in the
same folder, flushes it to disk and renames it over the destination: `os.replace` within one
file system is atomic, so the destination holds either its old contents or all of the new ones.

`file_key` names the current version of a file (path, size, modification time): the caches of
decoded images (training set, benchmark pairs) use it to notice that a file was replaced.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any],
                 check: Callable[[Path], Any] | None = None) -> Path:
    """Creates or replaces a file in one step, making its folder if needed.

    Args:
      path: the destination.
      write: writes the contents to the path it is given: a temporary file beside `path`,
        hidden (a leading dot, so folder scans such as `image_io.list_images` skip it), and with
        `path`'s extension, so writers that choose the format by extension choose the same one.
      check: called with the written temporary file before it takes `path`'s place; whatever
        it raises leaves `path` untouched (a weights file is read back and compared with its
        checkpoint this way before it replaces a shipped one).

    Returns:
      `path`, as a `Path`.

    Raises:
      Whatever `write` or `check` raises; the temporary file is removed first, and `path` is
      untouched. An OSError about the temporary file (a folder that is not writable, a full
      disk) is raised again naming `path`, the file the caller asked for.
    """
    path = Path(path)
    tmp = _staged(path, write)
    try:
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_files(contents: dict[Path, bytes]) -> None:
    """Writes several files, renaming each into place only once all of them are written."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in contents.items():
            staged.append((_staged(Path(path), lambda tmp, data=data: tmp.write_bytes(data)),
                           Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def _staged(path: Path, write: Callable[[Path], Any]) -> Path:
    """`write` to a hidden temporary file beside `path`, flushed to disk; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # on disk before the rename, so a crash cannot leave it empty
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename == str(tmp):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return tmp


def file_key(path: str | os.PathLike) -> str:
    """Identifies a file's current contents: its resolved path, size and modification time."""
    path = Path(path)
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to a file atomically (see `atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """Writes a JSON file atomically, ending in a newline (see `atomic_write`)."""
    text = json.dumps(value, indent=indent) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_files", "file_key", "write_json"]
