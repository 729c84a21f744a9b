"""Every state, verdict and name the Calibration system passes around, in one place.

The members are ``StrEnum``s: they compare equal to the plain strings stored in the database,
written to JSON and shown to users, so a row read back as ``"running"`` equals
``CalibrationStatus.RUNNING``. The same word can belong to several vocabularies ("running" is a
calibration's, a worker's and a job's state; "failed" is also a worker action); the enum says
which one a piece of code means. DIRAC's DEncode does not serialise enum members: ``plain``
turns them back into ``str`` where values cross DISET (the handler's answers, the client's
arguments). No DIRAC import here: workers, commands and the pure modules all use this module.
"""
from __future__ import annotations

import enum
import re
from typing import Any, NamedTuple


class CalibrationStatus(enum.StrEnum):
    """A calibration's status (the ``Calibrations.Status`` column and the stored state's ``status``)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"


class StepStatus(enum.StrEnum):
    """A step's status (``Steps.Status``): results count only while it is open."""

    OPEN = "open"
    #: Claimed by one closer, which computes the close outside any transaction.
    CLOSING = "closing"
    CLOSED = "closed"


class WorkerStatus(enum.StrEnum):
    """A worker slot's status (``Workers.Status``), as its polls and the agent's verdicts set it."""

    CREATED = "created"
    SUBMITTED = "submitted"
    RESUBMITTED = "resubmitted"
    RUNNING = "running"
    WAITING = "waiting"
    FINISHED = "finished"
    KILLED = "killed"
    FAILED = "failed"
    DEAD = "dead"


#: Worker states after which nothing more is expected of a worker.
ENDED_WORKER_STATES = frozenset(
    {WorkerStatus.FINISHED, WorkerStatus.KILLED, WorkerStatus.FAILED, WorkerStatus.DEAD}
)


class JobState(enum.StrEnum):
    """What a backend sees of a worker's job (DIRAC's many job states folded into four)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"


class WorkerAction(enum.StrEnum):
    """What the service tells a polling worker to do next."""

    RUN = "run"
    WAIT = "wait"
    FINISHED = "finished"
    KILLED = "killed"
    FAILED = "failed"


#: The action that tells a worker of an ended calibration why it stops.
END_ACTION = {
    CalibrationStatus.FINISHED: WorkerAction.FINISHED,
    CalibrationStatus.KILLED: WorkerAction.KILLED,
    CalibrationStatus.FAILED: WorkerAction.FAILED,
}
#: The worker status recorded when a worker is told to stop with that action.
STOPPED_WORKER = {
    WorkerAction.FINISHED: WorkerStatus.FINISHED,
    WorkerAction.KILLED: WorkerStatus.KILLED,
    WorkerAction.FAILED: WorkerStatus.FAILED,
}


class ReportVerdict(enum.StrEnum):
    """What became of a worker's report (``submitResult``)."""

    ACCEPTED = "accepted"
    #: This worker already reported this step; the first report stands.
    DUPLICATE = "duplicate"
    #: The step closed without it (enough other workers reported first).
    CLOSED = "closed"
    #: The calibration was killed or failed meanwhile.
    ENDED = "ended"


class StrategyName(enum.StrEnum):
    """How measurements become constants (``Utilities/strategies.py``)."""

    FAST = "fast"
    LEGACY = "legacy"


_KEY = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})")


class PhaseKey(NamedTuple):
    """A phase of the sequence: stage and phase number, written ``"stage.phase"`` ("1.0")."""

    stage: int
    phase: int

    @classmethod
    def parse(cls, key: str) -> PhaseKey:
        """The key of a ``"stage.phase"`` text; ValueError for anything else."""
        match = _KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            raise ValueError(f"a phase key is '<stage>.<phase>' with two integers, not {key!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.stage}.{self.phase}"


def plain(value: Any) -> Any:
    """``value`` with every enum member replaced by its plain value, in dicts, lists and tuples
    (DEncode refuses enum members; keys included)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value
