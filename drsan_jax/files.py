"""Writing files so that a crash, a full disk or a kill leaves the old file or the new one whole.

Everything the project writes for a user (weights, manifests, JSON results, caches) goes
through `atomic_write`: the data goes to a temporary file in the same folder, is flushed to
disk, and replaces the target in one `os.replace`; on any failure the temporary file is removed
and the target is untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Calls `write(f)` on a temporary file beside `path`, then moves it over `path`.

    Args:
      path: the file to create or replace; its folder must exist.
      write: writes the contents to the binary file object it is given.

    Returns:
      `path`, as a Path.

    Raises:
      FileNotFoundError: the folder does not exist. Whatever `write` raises, after cleaning up.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`atomic_write` of a bytes object."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, value: Any, **dumps_kwargs: Any) -> Path:
    """`atomic_write` of `value` as JSON text (indent 2 unless told otherwise)."""
    dumps_kwargs.setdefault("indent", 2)
    return atomic_write_bytes(path, (json.dumps(value, **dumps_kwargs) + "\n").encode())


__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json"]
