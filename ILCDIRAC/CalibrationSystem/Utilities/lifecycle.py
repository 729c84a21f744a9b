"""The calibration, step and worker lifecycles as transition tables, and the one check every
status change goes through.

A status change is legal when its (old, new) pair is in the table or when it changes nothing
(a repeated poll, a restated verdict). ``transition`` raises ``IllegalTransition`` on anything
else; the database calls it inside the transaction that stores the change and ``announce``s the
change to the registered observers after the commit (the service logs every transition).
docs/ARCHITECTURE.md (section "Lifecycles") shows the same tables; a unit test keeps the two
in step.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus, StepStatus, WorkerStatus


class IllegalTransition(ValueError):
    """A status change that the lifecycle does not allow; nothing was changed."""


@dataclass(frozen=True)
class Lifecycle:
    """One kind of thing's allowed status changes."""

    name: str
    initial: str
    transitions: frozenset[tuple[str, str]]

    def allows(self, old: str, new: str) -> bool:
        return old == new or (old, new) in self.transitions

    def sources(self, new: str) -> frozenset[str]:
        """The statuses from which ``new`` may be reached (``new`` itself included)."""
        return frozenset({new} | {old for old, to in self.transitions if to == new})

    def check(self, old: str, new: str, what: str) -> None:
        if not self.allows(old, new):
            raise IllegalTransition(f"{what} cannot go from {old} to {new}")


def _pairs(sources: Iterable[str], targets: Iterable[str]) -> set[tuple[str, str]]:
    targets = list(targets)
    return {(old, new) for old in sources for new in targets if old != new}


_C, _S, _W = CalibrationStatus, StepStatus, WorkerStatus

#: A calibration runs until its last step finishes it, an estimator or the agent fails it, or
#: its owner or an administrator kills it; an ended calibration never runs again.
CALIBRATION = Lifecycle("calibration", _C.RUNNING, frozenset(_pairs([_C.RUNNING], [_C.FINISHED, _C.FAILED, _C.KILLED])))

#: A step collects results while open; one closer claims it (closing), computes the close and
#: commits it (closed), or hands it back (open) when the computation failed.
STEP = Lifecycle("step", _S.OPEN, frozenset({(_S.OPEN, _S.CLOSING), (_S.CLOSING, _S.CLOSED), (_S.CLOSING, _S.OPEN)}))

_ALIVE = (_W.CREATED, _W.SUBMITTED, _W.RESUBMITTED, _W.RUNNING, _W.WAITING)
_WITH_JOB = (_W.SUBMITTED, _W.RESUBMITTED, _W.RUNNING, _W.WAITING)
#: A worker slot is created with its calibration and submitted once its job is registered; its
#: polls make it running or waiting; the agent resubmits its lost job or gives it up (dead);
#: once the calibration ends, a poll or the agent's kill records why it stopped (an ended
#: worker may still learn a later reason, e.g. killed, then told the calibration failed). A
#: worker given up stays given up.
WORKER = Lifecycle(
    "worker",
    _W.CREATED,
    frozenset(
        {(_W.CREATED, _W.SUBMITTED)}
        | _pairs(_ALIVE, [_W.RUNNING, _W.WAITING])
        | _pairs(_WITH_JOB, [_W.RESUBMITTED])
        | _pairs(_ALIVE, [_W.DEAD])
        | _pairs(list(_W), [_W.FINISHED, _W.KILLED, _W.FAILED])
    ),
)

LIFECYCLES = (CALIBRATION, STEP, WORKER)



@dataclass(frozen=True)
class Change:
    """One checked status change, announced once it is stored."""

    lifecycle: str
    #: Which thing changed, with the calibration, step and worker IDs: "calibration 12 step 3",
    #: "step 3 of calibration 12", "worker 4 of calibration 12 (step 3)".
    ids: str
    old: str
    new: str


#: Told about every stored status change (the service logs them).
Observer = Callable[[Change], None]
_observers: list[Observer] = []


def observe(observer: Observer) -> None:
    """Register a function told about every stored status change."""
    if observer not in _observers:
        _observers.append(observer)


def transition(lifecycle: Lifecycle, old: str, new: str, ids: str) -> Change | None:
    """Check a status change of the thing ``ids`` names: IllegalTransition if its lifecycle
    forbids it, else the change to announce once stored (None if nothing changes)."""
    lifecycle.check(old, new, ids)
    return Change(lifecycle.name, ids, str(old), str(new)) if old != new else None


def announce(changes: Iterable[Change | None]) -> None:
    """Tell the observers about changes that are now stored."""
    for change in changes:
        if change is not None:
            for observer in _observers:
                observer(change)
