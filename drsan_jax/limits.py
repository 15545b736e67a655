"""A size limit read from the environment: how much a file may make a reader allocate.

The image decoder (`data.decode`, pixels) and the weights reader (`weights.torch_io`, bytes)
check what a file's header claims against such a limit before they allocate; a user with a
genuine larger file raises it with an environment variable.
"""

from __future__ import annotations

import os


def env_limit(name: str, default: int, unit: str) -> int:
    """The positive integer `$name` (underscores allowed: 2_000_000), else `default`.

    Args:
      name: the environment variable.
      default: the limit when it is unset or empty.
      unit: what is counted ("pixels", "bytes"), for the error message.

    Raises:
      ValueError: the variable is set to something other than a positive integer.
    """
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        limit = int(value.replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{name}={value!r}: expected a positive number of {unit}")
    return limit


__all__ = ["env_limit"]
