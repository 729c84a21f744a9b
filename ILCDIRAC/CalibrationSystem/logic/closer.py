"""The service's step closer: a thread that closes ready steps off the workers' calls.

The report that brings a step to its threshold is committed and acknowledged at once; the
handler then wakes this thread, which closes the step (``close_ready_steps``: claim, compute on a
snapshot, guarded commit). It also looks for ready steps every ``interval`` seconds on its own,
so steps whose report reached another replica, whose closer died or whose close is being retried
are closed too; the agent's ``closeReadySteps`` is the last safety net, with the same claim.

With ``process=True`` (the service) the computation runs in a child process: merging reports
and fitting are CPU-bound Python and numpy, and in the service's own process they would hold
the interpreter lock for seconds, stalling every worker's call meanwhile. The child is started
at once and warmed up (imports) so the first close costs no more than the others; if it dies,
the close counts as a failed attempt and a new child is started. The child ends itself when the
service dies, even by SIGKILL, so a killed service leaves no orphan computing for nobody.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB, StepClose
from ILCDIRAC.CalibrationSystem.logic.calibrations import DEFAULT_CLOSE, ClosePolicy, close_ready_steps

log = logging.getLogger("Calibration")


#: How often the child checks that the service is still its parent (seconds)
PARENT_CHECK = 1.0


def _follow_parent(parent: int) -> None:
    """The child's initializer: end the child once ``parent`` (the service) is gone.

    Nothing else would: the child holds both ends of its own task queue, so it never sees the
    service's side close. The kernel's parent-death signal (prctl) is no help either, since it
    fires when the *thread* that started the child ends, and the pool is started (again) from
    whichever thread runs the close. Polling ``getppid`` sees the reparenting within a second."""
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="CalibrationParentWatch", daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os._exit(1)


def _warm_up() -> None:
    """Import what a close uses, in the child, before the first close needs it."""
    import ILCDIRAC.CalibrationSystem.logic.uncertainties  # noqa: F401
    import ILCDIRAC.CalibrationSystem.Utilities.phases  # noqa: F401


def _timed(function: Callable[..., StepClose], *args: Any) -> tuple[StepClose, float]:
    """``function(*args)`` and the CPU seconds it took (the wall time depends on the machine's load)."""
    began = time.process_time()
    result = function(*args)
    return result, time.process_time() - began


class StepCloser:
    """One background thread per service process; ``wake()`` is all a worker's call does."""

    def __init__(self, db: CalibrationDB, policy: ClosePolicy = DEFAULT_CLOSE, interval: float = 5.0,
                 report: Callable[[str], None] = log.info, process: bool = False):
        """``report`` receives one line per close (the service passes its DIRAC logger)."""
        self.db, self.policy, self.interval, self.report = db, policy, interval, report
        self._pool: ProcessPoolExecutor | None = None
        #: CPU seconds of the last close's computation
        self.cpuSeconds = 0.0
        self._process = process
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="CalibrationStepCloser", daemon=True)

    def start(self) -> StepCloser:
        if self._process:
            self._new_pool()
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def close_ready(self) -> list[dict[str, Any]]:
        """Close every ready step now (the closer's round, and the agent's safety net)."""
        return close_ready_steps(self.db, self.policy, self.compute)

    def compute(self, function: Callable[..., StepClose], *args: Any) -> StepClose:
        try:
            if self._pool is None:
                result, self.cpuSeconds = _timed(function, *args)
            else:
                result, self.cpuSeconds = self._pool.submit(_timed, function, *args).result()
        except BrokenProcessPool:
            self._new_pool()
            raise
        return result

    def _new_pool(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_follow_parent, initargs=(os.getpid(),))
        self._pool.submit(_warm_up)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            began = time.perf_counter()
            try:
                for item in self.close_ready():
                    self.report(f"closed step {item['step']} of calibration {item['calibrationID']} ({item['status']}) "
                                f"in {time.perf_counter() - began:.3f} s (computation {self.cpuSeconds:.3f} CPU s)")
                    began = time.perf_counter()
            except Exception:  # noqa: BLE001 - a database outage must not end the thread; the next round retries
                log.exception("the step closer could not look for ready steps")
