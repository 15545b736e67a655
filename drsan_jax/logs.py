"""Library log records a user need not see, kept off stderr.

Orbax logs several INFO records per file it reads or writes (and a warning at every save
without validation metrics); between a command's own progress lines they are noise, and around
its one-line errors they hide the line. `quiet_orbax()` drops them while a command or a training
run is active; Orbax's warnings and errors still pass.

A save that fails in Orbax's background threads (a disk that fills during the write) is logged
by each of them with its traceback, 130 to 410 lines, before the failure reaches the project's
`CheckpointSaveError` at the next save or wait. The command lines, which report that error in
one line, also drop Orbax's error records (`quiet_orbax(errors=True)`; `--verbose` keeps them).
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


@contextlib.contextmanager
def quiet_orbax(errors: bool = False):
    """Drops Orbax's INFO records (absl's logger, which Orbax logs to) inside the block.

    Args:
      errors: drop its error records as well, for a caller that reports Orbax's failures
        itself (a command line).
    """
    quiet = _QuietOrbax(errors)
    logger = logging.get_absl_logger()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


__all__ = ["quiet_orbax"]
