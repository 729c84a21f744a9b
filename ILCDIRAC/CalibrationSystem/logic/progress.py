"""How far a calibration has come, from what the database keeps: each phase's observables
against their targets step by step, how long steps took, and an estimate of the time left.

Shared by the status command's live view (``--watch``) and the result plots; pure functions on
the stored steps, the settings and the procedure state, so both are testable without a service.
"""
from __future__ import annotations

import datetime
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for


@dataclass(frozen=True)
class Reading:
    """One observable of one phase as measured in one step (with that step's constants)."""

    phase: str
    phaseName: str
    step: int
    observable: str
    value: float
    error: float
    target: float
    #: How far (same unit as the target) the value may be from the target for the phase to advance.
    tolerance: float
    #: The relative accuracy asked of the phase, and the setting that holds it.
    accuracy: float
    accuracySetting: str

    @property
    def ratio(self) -> float:
        return self.value / self.target

    @property
    def ratioError(self) -> float:
        return self.error / abs(self.target)

    @property
    def band(self) -> float:
        """Half-width of the accepted band around 1 in observable/target."""
        return self.tolerance / abs(self.target)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def readings(steps: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> list[Reading]:
    """Every observable with a target, of every closed step, in step order (single-pass phases
    have no target and give none)."""
    ctx = PhaseContext.from_settings(settings)
    found = []
    for step in steps:
        measurements = (step.get("Outcome") or {}).get("measurements", {})
        for key, measured in measurements.items():
            phase = phase_for(key)
            tolerance = phase.tolerance(ctx)
            for name, target in phase.targets(ctx).items():
                if name in measured["values"] and target:
                    found.append(Reading(key, phase.name, step["Step"], name, float(measured["values"][name]),
                                         float(measured["errors"].get(name, 0.0)), float(target), float(tolerance),
                                         phase.accuracy(ctx), phase.accuracySetting))
    return found


def latest_readings(found: Sequence[Reading]) -> list[Reading]:
    """Per phase, the observables of the last step that measured it (phase order)."""
    last: dict[str, int] = {}
    for reading in found:
        last[reading.phase] = max(last.get(reading.phase, 0), reading.step)
    chosen = [r for r in found if r.step == last[r.phase]]
    return sorted(chosen, key=lambda r: (tuple(map(int, r.phase.split("."))), r.observable))


def step_seconds(steps: Sequence[Mapping[str, Any]]) -> list[float]:
    """How long each closed step took, from its opening to its close."""
    return [(s["CloseTime"] - s["OpenTime"]).total_seconds() for s in steps if s.get("CloseTime")]


def phases_left(state: Mapping[str, Any]) -> tuple[int, int]:
    """(phases of the sequence completed, phases still to do) in a procedure state."""
    completed = set(state.get("memory", {}).get("completed", []))
    sequence = state.get("sequence", [])
    done = sum(1 for key in sequence if key in completed)
    return done, len(sequence) - done


def time_left(stepDurations: Sequence[float], closedSteps: int, phasesDone: int, phasesToDo: int,
              currentStepAge: float) -> float | None:
    """A rough estimate (seconds) of the time to the end: the phases still to do times the steps a
    phase took so far (at least one), times the median step duration, less the time the current
    step has already run. None before any step closed (nothing measured yet)."""
    if not stepDurations or phasesToDo <= 0:
        return None if phasesToDo > 0 else 0.0
    stepsPerPhase = max(1.0, closedSteps / phasesDone) if phasesDone else 1.0
    remaining = phasesToDo * stepsPerPhase * statistics.median(stepDurations) - currentStepAge
    return max(0.0, remaining)


def progress(steps: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], state: Mapping[str, Any],
             now: datetime.datetime) -> dict[str, Any]:
    """What the live view shows beyond the status row (JSON-safe): the latest reading of each
    phase, the step durations, the phases done and to do, and the estimated time left."""
    durations = step_seconds(steps)
    done, toDo = phases_left(state)
    openSteps = [s for s in steps if not s.get("CloseTime")]
    age = (now - openSteps[-1]["OpenTime"]).total_seconds() if openSteps else 0.0
    return {
        "readings": [r.to_dict() for r in latest_readings(readings(steps, settings))],
        "stepSeconds": durations,
        "phasesDone": done,
        "phasesToDo": toDo,
        "currentStepSeconds": age,
        "secondsLeft": time_left(durations, len(durations), done, toDo, age),
    }
