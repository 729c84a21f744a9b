"""The calibration's deliverables, made when it finishes: a ready-to-run reconstruction set in
the user's own layout (the steering file as ``steering.xml`` and the files it includes with the
calibrated constants, the Pandora settings it runs with and the photon likelihood those read, the
retrained one when the calibration trained one), the constants with their uncertainties (and
which of them are less precise than the accuracy asked for), the
full per-step history, and a convergence plot.

They are stored with the calibration under their relative paths prefixed with ``result_`` (kept
when the working data is cleaned up), downloaded by ``dirac-clic-calibration-results`` and copied
to the user's ``outputPath`` by the agent, both into one folder.
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.phases import PHASES, PhaseContext
from ILCDIRAC.CalibrationSystem.Utilities.reconstruction import result_files as reconstruction_files
from ILCDIRAC.CalibrationSystem.Utilities.reconstruction import trained_likelihood_path
from ILCDIRAC.CalibrationSystem.Utilities.stored_files import CONSTANTS_FILE, HISTORY_FILE, PLOT_FILE, RESULT_PREFIX


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
) -> dict[str, bytes]:
    """All deliverables of a finished calibration, as file name -> content; ``inputFiles`` are
    the user's files, ``likelihood`` the photon likelihood the calibration trained, if any."""
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
        PLOT_FILE: convergence_plot(calibration["CalibrationID"], steps, constants),
        **{RESULT_PREFIX + name: text.encode() for name, text in sorted(layout.items())},
    }


def convergence_plot(calibrationID: int, steps: Sequence[Mapping[str, Any]], final: Mapping[str, Any]) -> bytes:
    """Each fitted constant relative to its final value, step by step (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = sorted(
        name for name in final if any(_value(s["Constants"].get(name)) != _value(final[name]) for s in steps)
    ) or sorted(final)
    figure, axis = plt.subplots(figsize=(9, 5))
    numbers = [s["Step"] for s in steps] + [steps[-1]["Step"] + 1 if steps else 1]
    for index, name in enumerate(names):
        reference = _value(final[name])
        series = [_value(s["Constants"].get(name, final[name])) / reference for s in steps] + [1.0]
        axis.plot(numbers, series, marker="os^D"[index // 10 % 4], linestyle=("-", "--")[index // 10 % 2], label=name)
    for step in steps:
        axis.annotate(",".join(step["Phases"]), (step["Step"], 1.0), fontsize=7, rotation=90, alpha=0.6,
                      xytext=(0, 6), textcoords="offset points", ha="center")
    axis.axhline(1.0, color="grey", lw=0.8)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("step (last point: final constants)")
    axis.set_ylabel("constant / final value")
    axis.set_title(f"Calibration {calibrationID}: convergence")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _value(value: Any) -> float:
    return float(value[0] if isinstance(value, list) else value)
