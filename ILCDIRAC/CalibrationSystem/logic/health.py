"""What the agent decides about a calibration's workers, as a pure function.

Inputs: the calibration (status, current step, thresholds), its workers as the service knows
them (job ID, state, last contact, resubmissions, last reported step) and the job states the
backend sees (running / done / failed / unknown). Output: which workers to resubmit, which jobs
to kill, which workers to give up on, and whether the calibration can no longer succeed.

- A worker is *lost* when its job ended (done or failed) while the calibration still runs, or
  when it is *stalled*: its job still runs but it has not been in contact for ``stallTimeout``
  seconds without having reported the current step (a hung reconstruction or a frozen node).
- A lost worker is resubmitted with the same worker ID (it joins at the current step) until it
  has been resubmitted ``maxResubmissions`` times; then it is given up (``dead``).
- The calibration fails, with the reason, when the workers still alive cannot deliver the
  results a step needs, or when more than ``maxFailedWorkerFraction`` of them were given up.
- When the calibration has ended, every job that still runs is killed.
"""
from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.jobstates import DONE_JOB, FAILED_JOB, RUNNING_JOB, UNKNOWN_JOB

#: Worker states after which nothing more is expected of a worker.
ENDED_WORKER_STATES = frozenset({"finished", "killed", "failed", "dead"})


@dataclass(frozen=True)
class Limits:
    maxResubmissions: int
    maxFailedWorkerFraction: float
    stallTimeout: float


@dataclass
class Review:
    resubmit: list[int] = field(default_factory=list)
    kill: list[str] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    stalled: list[int] = field(default_factory=list)
    fail: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.resubmit or self.kill or self.dead or self.fail)


def review_workers(
    calibration: Mapping[str, Any],
    workers: Sequence[Mapping[str, Any]],
    jobStates: Mapping[str, str],
    now: datetime.datetime,
    limits: Limits,
) -> Review:
    review = Review()
    if calibration["status"] != "running":
        review.kill = sorted(
            w["jobID"] for w in workers if w.get("jobID") and jobStates.get(w["jobID"]) == RUNNING_JOB
        )
        return review
    current = calibration["step"]
    for worker in workers:
        if worker["status"] in ENDED_WORKER_STATES or not worker.get("jobID"):
            continue
        state = jobStates.get(worker["jobID"], UNKNOWN_JOB)
        lost = state in (DONE_JOB, FAILED_JOB)
        if state == RUNNING_JOB and _stalled(worker, current, now, limits.stallTimeout):
            lost = True
            review.stalled.append(worker["workerID"])
            review.kill.append(worker["jobID"])
        if not lost:
            continue
        if worker["resubmissions"] < limits.maxResubmissions:
            review.resubmit.append(worker["workerID"])
        else:
            review.dead.append(worker["workerID"])
    total = len(workers)
    given_up = sum(1 for w in workers if w["status"] == "dead") + len(review.dead)
    alive = total - given_up
    needed = calibration["resultsNeeded"]
    if alive < needed:
        review.fail = (
            f"only {alive} of {total} workers are left (the others failed {limits.maxResubmissions + 1} times), "
            f"but a step needs {needed} results (fractionOfFinishedJobsNeededToStartNextStep)"
        )
    elif given_up > math.floor(limits.maxFailedWorkerFraction * total + 1e-9):
        review.fail = (
            f"too many failed workers: {given_up} of {total} given up after {limits.maxResubmissions} "
            f"resubmissions each (maxFailedWorkerFraction = {limits.maxFailedWorkerFraction})"
        )
    if review.fail:
        review.kill = sorted(
            {w["jobID"] for w in workers if w.get("jobID") and jobStates.get(w["jobID"]) == RUNNING_JOB}
        )
        review.resubmit = []
    return review


def _stalled(worker: Mapping[str, Any], currentStep: int, now: datetime.datetime, timeout: float) -> bool:
    if (worker.get("lastStep") or 0) >= currentStep:
        return False
    lastSeen = worker.get("lastSeen")
    return lastSeen is not None and (now - lastSeen).total_seconds() > timeout
