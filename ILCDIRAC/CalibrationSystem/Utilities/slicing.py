"""Which events of a sample each worker reconstructs.

Each worker keeps one fixed, contiguous slice of every sample for the whole calibration, so a
step-to-step change of an estimate comes from the constants and not from different events. A
slice is expressed the way Marlin reads it: the input files that hold it, ``SkipNEvents`` into
the first of them and ``MaxRecordNumber`` events.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Slice:
    files: tuple[str, ...]
    skip: int
    events: int

    def to_dict(self) -> dict:
        return {"files": list(self.files), "skip": self.skip, "events": self.events}

    @classmethod
    def from_dict(cls, data: dict) -> Slice:
        return cls(tuple(data["files"]), int(data["skip"]), int(data["events"]))


def worker_slice(files: Sequence[str], eventsPerFile: int, numberOfWorkers: int, workerID: int) -> Slice:
    """Worker ``workerID`` of ``numberOfWorkers`` gets events [floor(w T / N), floor((w+1) T / N))."""
    if eventsPerFile <= 0:
        raise ValueError(f"events per file must be positive, not {eventsPerFile}")
    if not 0 <= workerID < numberOfWorkers:
        raise ValueError(f"worker {workerID} is not one of {numberOfWorkers} workers")
    total = len(files) * eventsPerFile
    if total < numberOfWorkers:
        raise ValueError(f"{total} events cannot be shared by {numberOfWorkers} workers")
    start = workerID * total // numberOfWorkers
    end = (workerID + 1) * total // numberOfWorkers
    first, last = start // eventsPerFile, (end - 1) // eventsPerFile
    return Slice(tuple(files[first : last + 1]), start - first * eventsPerFile, end - start)


def slice_problems(files: Sequence[str], eventsPerFile: int, numberOfWorkers: int, sample: str) -> list[str]:
    """Why a sample cannot be shared by the workers (empty when it can)."""
    total = len(files) * eventsPerFile
    if total < numberOfWorkers:
        return [f"{sample}: {len(files)} files x {eventsPerFile} events = {total} events, fewer than "
                f"numberOfJobs = {numberOfWorkers} workers"]
    return []


__all__ = ["Slice", "slice_problems", "worker_slice"]
