"""Library log records a user need not see, kept off stderr.

Orbax logs several INFO records per file it reads or writes (and a warning at every save
without validation metrics); between a command's own progress lines they are noise, and around
its one-line errors they hide the line. `quiet_library_logs()` drops them while a command or a
training run is active; Orbax's warnings and errors still pass. Also dropped: JAX's INFO record
"Unable to initialize backend 'tpu': ... Failed to open libtpu.so", the first line of every run
on a machine without a TPU, which reads like an error and is none (JAX then uses what is
there).

A save that fails in Orbax's background threads (a disk that fills during the write) is logged
by each of them with its traceback, 130 to 410 lines, before the failure reaches the project's
`CheckpointSaveError` at the next save or wait. The command lines, which report that error in
one line, also drop Orbax's error records (`quiet_library_logs(errors=True)`; `--verbose`
keeps them).
"""

from __future__ import annotations

import contextlib
import logging as std_logging

from absl import logging


class _QuietOrbax(std_logging.Filter):
    """Passes every record but Orbax's INFO records and its metrics-less-save warning.

    With `errors`, Orbax's error records too (not its warnings).
    """

    def __init__(self, errors: bool):
        super().__init__()
        self.errors = errors

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "/orbax/" not in record.pathname:
            return True
        if self.errors and record.levelno >= std_logging.ERROR:
            return False
        return (record.levelno >= std_logging.WARNING
                and "did not provide metrics" not in record.getMessage())


class _NoBackendProbes(std_logging.Filter):
    """Drops JAX's INFO records about backends that are not installed."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return not (record.levelno <= std_logging.INFO
                    and record.getMessage().startswith("Unable to initialize backend"))


# The logger JAX reports its backend probes on (a module logger; filters do not inherit).
_JAX_BACKENDS_LOGGER = "jax._src.xla_bridge"


@contextlib.contextmanager
def quiet_library_logs(errors: bool = False):
    """Drops Orbax's INFO records and JAX's backend probes inside the block.

    Args:
      errors: drop Orbax's error records as well, for a caller that reports Orbax's failures
        itself (a command line).
    """
    filters = [(logging.get_absl_logger(), _QuietOrbax(errors)),
               (std_logging.getLogger(_JAX_BACKENDS_LOGGER), _NoBackendProbes())]
    for logger, quiet in filters:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger, quiet in filters:
            logger.removeFilter(quiet)


__all__ = ["quiet_library_logs"]
