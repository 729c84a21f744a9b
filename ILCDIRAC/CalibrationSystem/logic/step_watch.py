"""Held calls: a waiting worker's ``waitForNextStep`` answers the moment its step changes.

Polling cannot give both things a thousand waiting workers need: learning of a new step within
a second or two, and costing the service only a few calls per second (1000 workers asking every
two seconds is 500 calls/s, more than one DIRAC service process answers). So the service keeps
a waiting worker's call open (up to ``WorkerHoldTime`` seconds) and answers it when the
calibration moves on: each waiting worker costs one call per hold time, and all of them hear of
the new step within one look of this watch (``interval``, half a second).

One thread per service process does the looking, whatever the number of held calls: a single
indexed read of the held calibrations' (step, status) every ``interval`` seconds while any call
is held, and at once when ``look()`` is called (the closer after it committed a close, a kill).
It reads the database rather than trusting this process's memory, so a step closed by another
replica of the service or by the agent's safety net wakes the calls held here just as well.

A held call occupies one of the service's threads (DIRAC's ``MaxThreads``): the watch holds at
most ``capacity`` calls and answers the others at once, as plain polls (``hold`` returns False).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus

log = logging.getLogger("Calibration")


@dataclass(frozen=True, order=True)
class Progress:
    """Where a calibration is, ordered the way it only ever moves: to a later step, or from
    running to ended. A watch compares these, so a reading older than a worker's own (the
    watch's last look came before the worker's read) never wakes it."""

    step: int
    ended: bool

    @classmethod
    def of(cls, step: int, status: str) -> Progress:
        return cls(step, status != CalibrationStatus.RUNNING)


#: Reads (step, status) of the given calibrations: ``CalibrationDB.getProgress``.
ReadProgress = Callable[[Collection[int]], dict[int, tuple[int, str]]]


class StepWatch:
    """Holds waiting workers' calls until their calibration's ``Progress`` passes what they saw."""

    def __init__(self, read: ReadProgress, capacity: int, interval: float = 0.5):
        self.read, self.capacity, self.interval = read, capacity, interval
        self._latest: dict[int, Progress] = {}
        self._held: Counter[int] = Counter()
        self._changed = threading.Condition()
        self._look, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="CalibrationStepWatch", daemon=True)

    def start(self) -> StepWatch:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._look.set()
        self._thread.join(timeout)
        with self._changed:
            self._changed.notify_all()

    def look(self) -> None:
        """Read the held calibrations now, not at the next interval."""
        self._look.set()

    @property
    def held(self) -> int:
        with self._changed:
            return sum(self._held.values())

    def hold(self, calibrationID: int, seen: Progress, seconds: float) -> bool:
        """Wait until the calibration is past ``seen`` (True), or ``seconds`` passed or the
        watch is stopping (False); False at once when ``capacity`` calls are held already."""
        deadline = time.monotonic() + seconds
        with self._changed:
            if sum(self._held.values()) >= self.capacity or self._stop.is_set():
                return False
            self._held[calibrationID] += 1
            self._latest[calibrationID] = max(self._latest.get(calibrationID, seen), seen)
            try:
                while not self._stop.is_set():
                    if self._latest[calibrationID] > seen:
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._changed.wait(remaining)
                return False
            finally:
                self._held[calibrationID] -= 1
                if not self._held[calibrationID]:
                    del self._held[calibrationID]
                    self._latest.pop(calibrationID, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._look.wait(self.interval)
            self._look.clear()
            with self._changed:
                watched = list(self._held)
            if not watched:
                continue
            try:
                progress = self.read(watched)
            except Exception:  # noqa: BLE001 - a database outage must not end the thread; held calls time out
                log.exception("the step watch could not read the calibrations' progress")
                continue
            with self._changed:
                for calibrationID, (step, status) in progress.items():
                    if calibrationID in self._latest:
                        self._latest[calibrationID] = max(self._latest[calibrationID], Progress.of(step, status))
                self._changed.notify_all()
