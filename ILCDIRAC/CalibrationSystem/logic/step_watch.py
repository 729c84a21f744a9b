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
When a calibration moved on, the same thread prepares the answers of all its held calls at once
(``answer``: one read of the new step, one write of all the workers' rows) before waking them,
so each woken call has nothing left to do but send its answer.
It reads the database rather than trusting this process's memory, so a step closed by another
replica of the service or by the agent's safety net wakes the calls held here just as well.

A held call occupies one of the service's threads (DIRAC's ``MaxThreads``): the watch holds at
most ``capacity`` calls and answers the others at once, as plain polls (``hold`` returns False).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

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
#: Prepares the answers of the held calls of one calibration that moved on, by their keys (the
#: workers): computed once for all of them, so a thousand woken calls cost one read and one write.
Answer = Callable[[int, list[int]], dict[int, Any]]

#: What ``hold`` returns when the calibration moved on but no answer was prepared for the call
#: (no ``answer`` function, or it failed): the caller asks the database itself.
MOVED = object()


@dataclass(eq=False)
class _Waiter:
    calibrationID: int
    seen: Progress
    key: int
    answer: Any = None
    done: bool = False


class StepWatch:
    """Holds waiting workers' calls until their calibration's ``Progress`` passes what they saw."""

    def __init__(self, read: ReadProgress, capacity: int, interval: float = 0.5, answer: Answer | None = None):
        self.read, self.capacity, self.interval, self.answer = read, capacity, interval, answer
        self._waiters: list[_Waiter] = []
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
            return len(self._waiters)

    def hold(self, calibrationID: int, seen: Progress, seconds: float, key: int = 0) -> Any:
        """Wait until the calibration is past ``seen``: then the answer prepared for ``key``, or
        ``MOVED``. None when ``seconds`` passed, the watch is stopping or a newer call of the
        same ``key`` (worker) replaced this one, and at once when ``capacity`` calls are held
        already. One held call per worker bounds what one user can hold to their workers, and
        a worker whose connection broke during a hold is held again at once when it asks again."""
        deadline = time.monotonic() + seconds
        waiter = _Waiter(calibrationID, seen, key)
        with self._changed:
            for older in self._waiters:
                if older.calibrationID == calibrationID and older.key == key and not older.done:
                    older.done = True  # one held call per worker: the newer replaces it
                    self._changed.notify_all()
            if len(self._waiters) >= self.capacity or self._stop.is_set():
                return None
            self._waiters.append(waiter)
            try:
                while not waiter.done and not self._stop.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._changed.wait(remaining)
                return waiter.answer if waiter.done else None
            finally:
                self._waiters.remove(waiter)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._look.wait(self.interval)
            self._look.clear()
            with self._changed:
                watched = {w.calibrationID for w in self._waiters}
            if not watched:
                continue
            try:
                progress = {cid: Progress.of(step, status) for cid, (step, status) in self.read(watched).items()}
            except Exception:  # noqa: BLE001 - a database outage must not end the thread; held calls time out
                log.exception("the step watch could not read the calibrations' progress")
                continue
            for calibrationID, latest in progress.items():
                with self._changed:
                    woken = [w for w in self._waiters
                             if w.calibrationID == calibrationID and not w.done and w.seen < latest]
                if woken:
                    self._wake(calibrationID, woken)

    def _wake(self, calibrationID: int, woken: list[_Waiter]) -> None:
        answers: dict[int, Any] = {}
        if self.answer is not None:
            try:
                answers = self.answer(calibrationID, sorted({w.key for w in woken}))
            except Exception:  # noqa: BLE001 - each woken call then asks the database itself
                log.exception("the step watch could not prepare the woken calls' answers")
        with self._changed:
            for waiter in woken:
                waiter.answer, waiter.done = answers.get(waiter.key, MOVED), True
            self._changed.notify_all()
