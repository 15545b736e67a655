"""Process-level set-up for drsan-jax programs: the compilation cache and the CPU cores.

Entry points (train.py, eval.py, the upscale tool, benchmarks) call `configure()` first thing,
before anything touches a JAX device; importing `drsan_jax` changes nothing by itself. Every
default below is overridable by an environment variable, and a setting the user already made
(in `XLA_FLAGS` or JAX's own configuration) always wins.

Persistent compilation cache (on by default). A DRSAN train step takes seconds to compile on a
CPU, and evaluation compiles one program per size bucket; JAX can keep compiled programs on disk
and reuse them in the next run. The cache lives in `$XDG_CACHE_HOME/drsan_jax/xla` (default
`~/.cache/drsan_jax/xla`); `DRSAN_JAX_CACHE_DIR=/some/dir` moves it and
`DRSAN_JAX_CACHE_DIR=none` turns it off (and `drsan_jax.source_cache`'s, beside it in
`drsan_jax/`). A cache directory set through JAX
(`JAX_COMPILATION_CACHE_DIR` or `jax.config`) is left as it is.

CPU devices (on a CPU, one per core by default). XLA:CPU runs each of DRSAN's small
convolutions on one core, so a train step on the default single CPU device leaves the other
cores idle. Splitting the host into one XLA device per core
(`--xla_force_host_platform_device_count`) lets the data-parallel mesh
(`drsan_jax.training.parallel.make_mesh`) run one share of the batch per core; on a 2-core machine this
nearly halves the step time (benchmarks/README.md), and `inference.Predictor` splits each
image's rows over the devices (`split_rows`). `DRSAN_JAX_CPU_DEVICES=<n>` sets the count and
`=1` keeps XLA's single device; an `XLA_FLAGS` that already sets the count is kept. The flag only affects the CPU
backend: on a GPU or TPU machine the accelerators remain the default devices.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from absl import logging

CACHE_DIR_ENV = "DRSAN_JAX_CACHE_DIR"
CPU_DEVICES_ENV = "DRSAN_JAX_CPU_DEVICES"
_OFF = ("", "none", "off", "0", "false", "no")
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """What `configure` did.

    Attributes:
      compilation_cache_dir: the persistent compilation cache in use, or None when off.
      cpu_devices: the number of CPU devices XLA will create (1: XLA's default).
      cpu_devices_source: where that number came from: "default", "env" (the environment
        variable), "argument", "XLA_FLAGS" (set by the user) or "backend already initialised"
        (too late to change: JAX was used before `configure`).
    """

    compilation_cache_dir: str | None
    cpu_devices: int
    cpu_devices_source: str


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/drsan_jax`, falling back to `~/.cache/drsan_jax`: every cache's parent."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "drsan_jax"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/drsan_jax/xla`, falling back to `~/.cache/drsan_jax/xla`."""
    return cache_root() / "xla"


def caches_off() -> bool:
    """True when `DRSAN_JAX_CACHE_DIR` turns caching off (`none`, `off`, `0`, ...)."""
    value = os.environ.get(CACHE_DIR_ENV)
    return value is not None and value.strip().lower() in _OFF


def compilation_cache_dir() -> Path | None:
    """The persistent cache directory the environment asks for (None: off)."""
    value = os.environ.get(CACHE_DIR_ENV)
    if value is None:
        return default_cache_dir()
    if caches_off():
        return None
    return Path(value).expanduser()


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turns JAX's persistent compilation cache on (unless the user configured JAX's own).

    Args:
      path: the cache directory; default: `compilation_cache_dir()` from the environment.

    Returns:
      The cache directory in use, or None when the cache is off.
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    target = compilation_cache_dir() if path is None else Path(path).expanduser()
    if target is None:
        return None
    target.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(target))
    return str(target)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_cpu_devices(batch_size: int | None = None, cores: int | None = None) -> int:
    """One CPU device per core, as many as divide the batch evenly.

    Args:
      batch_size: the global training batch (a mesh needs it to split evenly), or None.
      cores: usable cores (default: `usable_cores()`).

    Returns:
      The largest n <= cores dividing batch_size (or cores itself without a batch size).
    """
    cores = usable_cores() if cores is None else cores
    if not batch_size:
        return cores
    return max(n for n in range(1, cores + 1) if batch_size % n == 0)


def _warn_if_batch_wastes_cores(batch_size: int | None, count: int) -> None:
    """Says so when the batch leaves cores idle on a machine that trains on its CPU."""
    cores = usable_cores()
    if not batch_size or count >= cores or _may_have_accelerator():
        return
    logging.warning(
        "--config.batch_size=%d does not divide over %d CPU devices (one per core); training "
        "on %d device%s, about %d/%d of the speed; use a batch size divisible by %d (e.g. "
        "--config.batch_size=%d), or set %s=N to choose the device count yourself",
        batch_size, cores, count, "" if count == 1 else "s", count, cores, cores,
        max(1, round(batch_size / cores)) * cores, CPU_DEVICES_ENV)


def _may_have_accelerator() -> bool:
    """Whether JAX may pick a GPU or TPU here, where the CPU device count does not matter.

    Read without starting JAX: JAX_PLATFORMS, else whether a GPU/TPU plugin is installed.
    """
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    import importlib.metadata
    import importlib.util

    return bool(importlib.metadata.entry_points(group="jax_plugins")) or any(
        importlib.util.find_spec(name) is not None for name in ("jax_plugins", "libtpu"))


def _flag_count(flags: str) -> int | None:
    match = re.search(_DEVICE_COUNT_FLAG + r"=(\d+)", flags)
    return int(match.group(1)) if match else None


def _backend_initialised() -> bool:
    # JAX has no public query; this private one has been stable for years. Without it we
    # assume "not yet", and a late flag is merely ignored by XLA.
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def configure_cpu_devices(count: int | None = None, batch_size: int | None = None
                          ) -> tuple[int, str]:
    """Asks XLA for `count` CPU devices (default: one per core) before JAX starts.

    Args:
      count: the number of CPU devices; default: $DRSAN_JAX_CPU_DEVICES, else
        `default_cpu_devices(batch_size)`.
      batch_size: the global training batch, so that the default count divides it.

    Returns:
      (the device count XLA will use, where it came from; see `RuntimeSettings`).

    Raises:
      ValueError: a count or $DRSAN_JAX_CPU_DEVICES that is not a positive integer.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    existing = _flag_count(flags)
    if existing is not None:
        return existing, "XLA_FLAGS"
    source = "argument"
    if count is None:
        env = os.environ.get(CPU_DEVICES_ENV, "").strip()
        if env:
            source = "env"
            if not env.isdigit() or int(env) < 1:
                raise ValueError(f"{CPU_DEVICES_ENV}={env!r}: expected a positive integer")
            count = int(env)
        else:
            source = "default"
            count = default_cpu_devices(batch_size)
            _warn_if_batch_wastes_cores(batch_size, count)
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"CPU device count must be a positive integer, got {count!r}")
    if _backend_initialised():
        import jax
        logging.warning("JAX was used before drsan_jax.runtime.configure(): keeping %d CPU "
                        "device(s)", jax.local_device_count("cpu"))
        return jax.local_device_count("cpu"), "backend already initialised"
    if count > 1:
        os.environ["XLA_FLAGS"] = f"{flags} {_DEVICE_COUNT_FLAG}={count}".strip()
    return count, source


def configure(batch_size: int | None = None, cpu_devices: int | None = None,
              cache_dir: str | os.PathLike | None = None) -> RuntimeSettings:
    """The process-level defaults of drsan-jax; call before anything touches a device.

    Args:
      batch_size: the global training batch, if any: the default CPU device count is the
        largest that divides it.
      cpu_devices: CPU devices to create (default: environment, else one per core).
      cache_dir: persistent compilation cache directory (default: environment, else
        `default_cache_dir()`).

    Returns:
      What was set up.
    """
    count, source = configure_cpu_devices(cpu_devices, batch_size)
    cache = enable_compilation_cache(cache_dir)
    settings = RuntimeSettings(cache, count, source)
    # Not at INFO: a command that fails at once prints its one-line error and nothing else
    # (training logs the devices and the cache in its first lines).
    logging.debug("runtime: %s", settings)
    return settings


__all__ = [
    "CACHE_DIR_ENV",
    "cache_root",
    "caches_off",
    "CPU_DEVICES_ENV",
    "RuntimeSettings",
    "compilation_cache_dir",
    "configure",
    "configure_cpu_devices",
    "default_cache_dir",
    "default_cpu_devices",
    "enable_compilation_cache",
    "usable_cores",
]
