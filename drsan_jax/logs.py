"""Library log records a user need not see, kept off stderr.

Orbax logs several INFO records per file it reads or writes (and a warning at every save
without validation metrics); between a command's own progress lines they are noise, and around
its one-line errors they hide the line. `quiet_orbax()` drops them while a command or a training
run is active; Orbax's warnings and errors still pass.
"""

from __future__ import annotations

import contextlib
import logging as std_logging

from absl import logging


class _QuietOrbax(std_logging.Filter):
    """Passes every record but Orbax's INFO records and its metrics-less-save warning."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "/orbax/" not in record.pathname:
            return True
        return (record.levelno >= std_logging.WARNING
                and "did not provide metrics" not in record.getMessage())


@contextlib.contextmanager
def quiet_orbax():
    """Drops Orbax's INFO records (absl's logger, which Orbax logs to) inside the block."""
    quiet = _QuietOrbax()
    logger = logging.get_absl_logger()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


__all__ = ["quiet_orbax"]
