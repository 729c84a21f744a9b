"""The service's step closer: a thread that closes ready steps off the workers' calls.

The report that brings a step to its threshold is committed and acknowledged at once; the
handler then wakes this thread, which closes the step (``close_ready_steps``: claim, compute on a
snapshot, guarded commit). It also looks for ready steps every ``interval`` seconds on its own,
so steps whose report reached another replica, whose closer died or whose close is being retried
are closed too; the agent's ``closeReadySteps`` is the last safety net, with the same claim.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.logic.calibrations import ClosePolicy, close_ready_steps

log = logging.getLogger("Calibration")


class StepCloser:
    """One background thread per service process; ``wake()`` is all a worker's call does."""

    def __init__(self, db: CalibrationDB, policy: ClosePolicy = ClosePolicy(), interval: float = 5.0,
                 report: Callable[[str], None] = log.info):
        """``report`` receives one line per close (the service passes its DIRAC logger)."""
        self.db, self.policy, self.interval, self.report = db, policy, interval, report
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="CalibrationStepCloser", daemon=True)

    def start(self) -> "StepCloser":
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            began = time.perf_counter()
            try:
                for item in close_ready_steps(self.db, self.policy):
                    self.report(f"closed step {item['step']} of calibration {item['calibrationID']} ({item['status']}) "
                                f"in {time.perf_counter() - began:.3f} s")
                    began = time.perf_counter()
            except Exception:  # noqa: BLE001 - a database outage must not end the thread; the next round retries
                log.exception("the step closer could not look for ready steps")
