"""Statistical power up front: what the given samples can give each constant, before any event is
reconstructed, and which sample is too small for the accuracy asked.

Each phase states its own model (``Phase.expected_precision``: per-event spreads measured on the
emulated CLD, isotropic samples, the calorimeters' 1 / sqrt(E)); this applies it to the events
one step uses (every worker's slice, of which only the first ``fractionOfFinishedJobsNeeded...``
count). It is an estimate: a detector far from CLD may do better or worse, and the results carry
the measured uncertainties and mark what missed the accuracy.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.validation import results_needed


@dataclass(frozen=True)
class Power:
    """One constant's expected statistical precision from one sample."""

    phase: str
    constant: str
    sample: str
    events: int
    relative: float
    accuracy: float
    setting: str

    @property
    def sufficient(self) -> bool:
        return self.relative <= self.accuracy

    @property
    def eventsNeeded(self) -> int:
        """Sample events (all workers) that would bring the uncertainty to the accuracy."""
        if math.isinf(self.relative):
            return 0
        return math.ceil(self.events * (self.relative / self.accuracy) ** 2)


def sample_events(settings: Mapping[str, Any], sample: str) -> int:
    """Events of a sample in the calibration: files times events per file."""
    return len(settings.get(f"{sample}Files") or []) * int(settings.get(f"{sample}EventsPerFile") or 0)


def expected_power(settings: Mapping[str, Any]) -> list[Power]:
    """Every constant the phase sequence fits, once per phase number (stage 3 repeats stage 1's
    phases on the same samples), in sequence order."""
    ctx = PhaseContext.from_settings(settings)
    nWorkers = settings["numberOfJobs"]
    used = results_needed(settings["fractionOfFinishedJobsNeededToStartNextStep"], nWorkers) / nWorkers
    estimates, seen = [], set()
    for key in settings["phaseSequence"]:
        phase = phase_for(key)
        if phase.number in seen:
            continue
        seen.add(phase.number)
        events = {sample: sample_events(settings, sample) for sample in phase.samples}
        for constant, (sample, relative) in phase.expected_precision(
            ctx, {s: n * used for s, n in events.items()}
        ).items():
            estimates.append(Power(key, constant, sample, events[sample], relative, phase.accuracy(ctx),
                                   phase.accuracySetting))
    return estimates
