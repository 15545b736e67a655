"""Results kept on disk until the code that computed them changes.

A `SourceCache` is one JSON file of named results under `runtime.cache_root()`, named by a hash
of the source files that computed them and of the library versions they ran under: editing any
of those files, or upgrading a library, starts a new file, so a stale result is never read.
`python -m drsan_jax.summary` keeps its traced parameter counts and multiply-adds here, which
makes every run after the first answer at once. `DRSAN_JAX_CACHE_DIR=none` turns it off, as it
does the compilation cache. The file is this package's own: a damaged one is reported in a
warning and replaced, never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drsan_jax import runtime


def source_key(sources: Iterable[Path], distributions: Iterable[str] = ()) -> str:
    """A hash of the files' names and bytes and of the installed distributions' versions."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in sources):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for name in distributions:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{name}={version}\0".encode())
    return digest.hexdigest()[:20]


class SourceCache:
    """Named JSON results of one computation, valid for one `source_key`.

    Attributes:
      path: the cache file, or None when caching is off.
    """

    def __init__(self, kind: str, key: str, root: Path | None = None):
        if root is None and runtime.caches_off():
            self.path = None
        else:
            self.path = (root or runtime.cache_root()) / kind / f"{key}.json"
        self._entries: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._entries is not None:
            return self._entries
        self._entries = {}
        if self.path is not None and self.path.exists():
            try:
                entries = json.loads(self.path.read_text())
                if not isinstance(entries, dict):
                    raise ValueError(f"expected a JSON object, got {type(entries).__name__}")
                self._entries = entries
            except (OSError, ValueError) as e:
                print(f"warning: ignoring the damaged cache file {self.path} ({e}); it will be "
                      "rewritten", file=sys.stderr)
        return self._entries

    def get(self, name: str) -> Any | None:
        """The result stored under `name`, or None."""
        return self._load().get(name)

    def put(self, results: dict[str, Any]) -> None:
        """Stores `results` (name -> JSON value) beside the others; a write error only warns."""
        entries = self._load()
        entries.update(results)
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole and renamed into place: a process killed mid-write leaves the old file.
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f)
            os.replace(tmp, self.path)
        except OSError as e:
            print(f"warning: could not write the cache file {self.path} ({e})", file=sys.stderr)


__all__ = ["SourceCache", "source_key"]
