"""Stopping a run on request: finish the step, save it, say how to resume.

SIGTERM is what SLURM, Kubernetes, `timeout`, systemd and preemptible cloud machines send
before SIGKILL; Ctrl-C is SIGINT. While `StopRequests` is active, either one only sets a flag:
the training loop finishes the step it is running, saves a checkpoint of it, flushes the
TensorBoard scalars and raises `TrainingStopped`, which train.py reports in one line (exit
status 128 + the signal's number, as a shell reports a process the signal ended). A second
signal of the same kind gets the operating system's default action, which ends the process at
once; the checkpoints saved before are intact (Orbax renames a step folder only when complete).

Several hosts (`jax.process_count() > 1`) must agree on the step they save, and only the hosts
a signal reached know of it. There JAX's preemption service (started by
`jax.distributed.initialize`) takes SIGTERM: it tells every host, and
`multihost_utils.reached_preemption_sync_point` becomes true at the same step everywhere.
Ctrl-C keeps Python's default there (it stops that process at once), since the other hosts
cannot learn of it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
from absl import logging
from jax.experimental import multihost_utils

from drsan_jax import cli


class TrainingStopped(cli.Stopped):
    """Training stopped on request after saving a checkpoint of the step it finished."""


class StopRequests:
    """Catches SIGTERM and the first Ctrl-C while active (a context manager).

    Example:
      with StopRequests() as stop:
          for step in ...:
              ...
              if stop.requested(step):
                  ...  # save, then raise TrainingStopped(..., stop.signal_number)
    """

    def __init__(self):
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}
        self._multi_host = False

    def __enter__(self) -> StopRequests:
        self._multi_host = jax.process_count() > 1
        # Handlers can only be set from the main thread (a notebook's training thread runs
        # with Python's defaults).
        if threading.current_thread() is threading.main_thread():
            wanted = () if self._multi_host else (signal.SIGTERM, signal.SIGINT)
            for number in wanted:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        del frame
        self.signal_number = number
        # The next signal of this kind ends the process at once.
        signal.signal(number, signal.SIG_DFL)
        logging.warning("%s received: finishing this step and saving a checkpoint of it "
                        "(send it again to stop at once)", signal.Signals(number).name)

    @property
    def signal_name(self) -> str:
        """"SIGTERM" or "SIGINT" (Ctrl-C), once requested."""
        return signal.Signals(self.signal_number or signal.SIGTERM).name

    def requested(self, step: int) -> bool:
        """Whether to save `step` and stop; every host of a multi-host run calls it every step.

        Args:
          step: the step just finished (the same on every host).
        """
        if self.signal_number is not None:
            return True
        if not self._multi_host:
            return False
        try:
            reached = multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError as error:  # jax_enable_preemption_service turned off
            logging.warning("SIGTERM will not save a checkpoint: %s", error)
            self._multi_host = False
            return False
        if reached:
            self.signal_number = signal.SIGTERM
        return reached


__all__ = ["StopRequests", "TrainingStopped"]
