"""The calibration's deliverables, made when it finishes: a ready-to-run reconstruction set in
the user's own layout (the steering file as ``steering.xml`` and the files it includes with the
calibrated constants, the Pandora settings it runs with and the photon likelihood those read, the
retrained one when the calibration trained one), the constants with their uncertainties (and
which of them are less precise than the accuracy asked for), the full per-step history, and
three plots (``Utilities.plots``): each phase's observables against their targets per step
(``convergence.png``), each constant per step with its uncertainty (``constants.png``) and when
each worker reported (``workers.png``).

They are stored with the calibration under their relative paths prefixed with ``result_`` (kept
when the working data is cleaned up), downloaded by ``dirac-clic-calibration-results`` and copied
to the user's ``outputPath`` by the agent, both into one folder.
"""
from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ILCDIRAC.CalibrationSystem.logic.progress import readings
from ILCDIRAC.CalibrationSystem.Utilities.phases import PHASES, PhaseContext
from ILCDIRAC.CalibrationSystem.Utilities.plots import constants_plot, phase_plot, png, workers_plot
from ILCDIRAC.CalibrationSystem.Utilities.reconstruction import result_files as reconstruction_files
from ILCDIRAC.CalibrationSystem.Utilities.reconstruction import trained_likelihood_path
from ILCDIRAC.CalibrationSystem.Utilities.stored_files import (
    CONSTANTS_FILE,
    CONSTANTS_PLOT_FILE,
    HISTORY_FILE,
    PLOT_FILE,
    RESULT_PREFIX,
    WORKERS_PLOT_FILE,
)


@dataclass(frozen=True)
class Timing:
    """When the workers reported: (step, worker, time) of each result kept, and how often each
    worker was resubmitted."""

    received: Sequence[tuple[int, int, datetime.datetime]] = ()
    resubmissions: Mapping[int, int] = field(default_factory=dict)


def final_uncertainties(steps: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each constant's uncertainty from the last step that updated it."""
    uncertainties: dict[str, float] = {}
    for step in steps:
        outcome = step.get("Outcome") or {}
        uncertainties.update(outcome.get("uncertainties", {}))
    return uncertainties


def exceeding_accuracy(constants: Mapping[str, Any], uncertainties: Mapping[str, float],
                       settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The constants whose relative uncertainty exceeds the accuracy asked of their phase: name ->
    relative uncertainty, that accuracy and its setting, the phase's samples, and how many times
    their events would bring the uncertainty down to it (statistics scale as 1 / sqrt(events))."""
    ctx = PhaseContext.from_settings(settings)
    exceeding = {}
    for phase in PHASES.values():
        accuracy = phase.accuracy(ctx)
        for name in phase.fits:
            if name not in uncertainties or name not in constants:
                continue
            value = abs(_value(constants[name]))
            relative = uncertainties[name] / value if value > 0 else math.inf
            if relative > accuracy:
                exceeding[name] = {"relative": relative, "accuracy": accuracy, "setting": phase.accuracySetting,
                                   "samples": list(phase.samples), "eventsFactor": (relative / accuracy) ** 2}
    return exceeding


def history(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every step with the constants it ran with and what its estimators found (JSON-safe)."""
    return [
        {
            "step": s["Step"],
            "phases": s["Phases"],
            "constants": s["Constants"],
            "status": s["Status"],
            "results": s["NResults"],
            "opened": s["OpenTime"].isoformat(),
            "closed": s["CloseTime"].isoformat() if s["CloseTime"] else None,
            "outcome": s["Outcome"],
        }
        for s in steps
    ]


def result_files(
    calibration: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    inputFiles: Mapping[str, str],
    likelihood: str | None = None,
    timing: Timing = Timing(),
) -> dict[str, bytes]:
    """All deliverables of a finished calibration, as file name -> content; ``inputFiles`` are
    the user's files, ``likelihood`` the photon likelihood the calibration trained, if any,
    ``timing`` when its workers reported."""
    settings = calibration["Settings"]
    constants = calibration["State"]["constants"]
    summary = {
        "calibrationID": calibration["CalibrationID"],
        "detectorModel": settings["detectorModel"],
        "strategy": settings["strategy"],
        "steps": len(steps),
        "finished": calibration["EndTime"].isoformat() if calibration["EndTime"] else None,
        "constants": constants,
        "uncertainties": final_uncertainties(steps),
    }
    summary["exceedingAccuracy"] = exceeding_accuracy(constants, summary["uncertainties"], settings)
    trained = None
    if likelihood is not None:
        trained = (trained_likelihood_path(inputFiles, settings, calibration["CalibrationID"]), likelihood)
    layout = reconstruction_files(inputFiles, settings, constants, trained)
    return {
        CONSTANTS_FILE: json.dumps(summary, indent=2, sort_keys=True).encode(),
        HISTORY_FILE: json.dumps(history(steps), indent=2, sort_keys=True).encode(),
        **plots(calibration, steps, summary["uncertainties"], timing),
        **{RESULT_PREFIX + name: text.encode() for name, text in sorted(layout.items())},
    }


def plots(calibration: Mapping[str, Any], steps: Sequence[Mapping[str, Any]], uncertainties: Mapping[str, float],
          timing: Timing) -> dict[str, bytes]:
    """The three result plots, as file name -> PNG."""
    calibrationID = calibration["CalibrationID"]
    return {
        PLOT_FILE: png(phase_plot(calibrationID, readings(steps, calibration["Settings"]))),
        CONSTANTS_PLOT_FILE: png(constants_plot(calibrationID, steps, calibration["State"]["constants"],
                                                uncertainties)),
        WORKERS_PLOT_FILE: png(workers_plot(calibrationID, steps, timing.received, timing.resubmissions,
                                            calibration["NumberOfWorkers"])),
    }


def _value(value: Any) -> float:
    return float(value[0] if isinstance(value, list) else value)
