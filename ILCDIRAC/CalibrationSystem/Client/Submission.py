"""What ``dirac-clic-calibration-submit`` does, and which local files travel with a calibration.

The service stores the user's reconstruction files in their layout (paths relative to the
folder of the steering file): the steering file, the files it includes, the Pandora settings
and likelihood files it uses, and the photon-training settings, so every worker gets identical
copies once, wherever it runs. A file the calibration needs and cannot find is an error that
names it: nothing is substituted. ``--dry-run`` runs the same checks as the service.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ILCDIRAC.CalibrationSystem.Client.Backends import BackendError, backend_named
from ILCDIRAC.CalibrationSystem.Utilities.reconstruction import collect, plan
from ILCDIRAC.CalibrationSystem.Utilities.settings import SettingsError, load_settings
from ILCDIRAC.CalibrationSystem.Utilities.steering import FolderFiles, SteeringError
from ILCDIRAC.CalibrationSystem.Utilities.validation import CalibrationError, validate_calibration


class SubmissionError(ValueError):
    """A file the calibration needs cannot be read or used."""


def collect_input_files(settings: Mapping[str, Any], baseDir: Path) -> dict[str, str]:
    """{relative path: text} of the files that travel, the steering file as ``steering.xml``."""
    steeringPath = Path(settings["steeringFile"])
    if not steeringPath.is_absolute():
        steeringPath = baseDir / steeringPath
    if not steeringPath.is_file():
        raise SubmissionError(f"steering file {settings['steeringFile']!r} not found (looked for {steeringPath})")
    try:
        return collect(FolderFiles(steeringPath.parent), settings, top=steeringPath.name)
    except SteeringError as exc:
        raise SubmissionError(f"{exc} (in {steeringPath.parent})") from None


def check_files(settings: Mapping[str, Any], baseDir: Path) -> list[str]:
    """The service's checks on what a submission would send, and what they found in the files:
    lines describing the files and processors, or the problem as one line starting with ERROR."""
    try:
        _, _, files = validate_calibration(settings, collect_input_files(settings, baseDir))
    except (SubmissionError, CalibrationError) as exc:
        return [f"ERROR: {exc}"]
    found = plan(files, settings)
    action = {"use": "runs", "run": "is added to <execute>", "add": "is added"}[found.pfoAction]
    return [f"files that travel: {', '.join(sorted(files))}",
            f"Pandora processor {found.pandora} with {found.pandoraSettings}; PfoAnalysis {found.pfoAnalysis} {action}"]


def _load(settingsFile: str):
    """The validated settings, or None after printing every problem (one line if there is one)."""
    if not Path(settingsFile).is_file():
        print(f"ERROR: settings file {settingsFile} does not exist", file=sys.stderr)
        return None
    try:
        return load_settings(settingsFile)
    except SettingsError as exc:
        if len(exc.problems) == 1:
            print(f"ERROR: {settingsFile}: {exc.problems[0]}", file=sys.stderr)
            return None
        print(f"ERROR: {settingsFile}: {len(exc.problems)} problems in the settings:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None


def dry_run(settingsFile: str) -> int:
    settings = _load(settingsFile)
    if settings is None:
        return 1
    print(settings.resolved_text())
    print(power_report(settings.to_dict()))
    return report_files(settings.to_dict(), Path(settingsFile).resolve().parent)


def report_files(settings: Mapping[str, Any], baseDir: Path) -> int:
    """Print (as YAML comments) what the file checks found; 1 if the service would refuse them."""
    lines = check_files(settings, baseDir)
    failed = lines[0].startswith("ERROR")
    if failed:
        print(lines[0], file=sys.stderr)
    else:
        print("\n".join(f"# {line}" for line in lines))
    return 1 if failed else 0


def power_report(settings: Mapping[str, Any]) -> str:
    """The statistical power of the samples as YAML comments (the dry run's output still loads
    as the resolved settings): per phase and constant the expected uncertainty against the
    accuracy asked, and for each sample too small the events it would need."""
    from ILCDIRAC.CalibrationSystem.Utilities.power import expected_power

    estimates = expected_power(settings)
    lines = ["# Statistical power of these samples: an estimate before any event is reconstructed (per-event",
             "# spreads measured on the emulated CLD, isotropic samples); the results report the measured",
             "# uncertainties and mark every constant that misses its accuracy."]
    if not estimates:
        return "\n".join(lines + ["#   (no phase of this sequence has an estimate)"])
    rows = [("phase", "constant", "sample", "events", "expected", "accuracy", "")]
    for e in estimates:
        verdict = "ok" if e.sufficient else f"too few: about {e.eventsNeeded} {e.sample} events needed"
        expected = "no events" if math.isinf(e.relative) else f"{100 * e.relative:.2g} %"
        rows.append((e.phase, e.constant, e.sample, str(e.events), expected,
                     f"{100 * e.accuracy:.2g} % ({e.setting})", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["#   " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    short = {}
    for e in estimates:
        if not e.sufficient:
            short[e.sample] = max(short.get(e.sample, 0), e.eventsNeeded)
    for sample, needed in short.items():
        have = next(e.events for e in estimates if e.sample == sample)
        lines.append(
            f"# The {sample} sample is too small for the requested accuracy: {have} events, about {needed} needed."
        )
    return "\n".join(lines)


def submit(settingsFile: str, workDir: Path) -> int:
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient
    from ILCDIRAC.CalibrationSystem.Client.Status import failure

    settings = _load(settingsFile)
    if settings is None:
        return 1
    resolved = settings.to_dict()
    try:
        files = collect_input_files(resolved, Path(settingsFile).resolve().parent)
    except SubmissionError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    client = CalibrationClient()
    created = client.createCalibration(resolved, files)
    if not created["OK"]:
        print(f"ERROR: calibration not created: {failure(created)}", file=sys.stderr)
        return 1
    calibrationID = created["Value"]
    options = {"workDir": workDir} if resolved["backend"] == "local" else {}
    backend = backend_named(resolved["backend"], resolved, **options)
    try:
        jobs = backend.submit(calibrationID, range(resolved["numberOfJobs"]))
    except BackendError as exc:
        client.killCalibration(calibrationID)
        print(f"ERROR: calibration {calibrationID} killed, its workers could not be started: {exc}", file=sys.stderr)
        return 1
    registered = client.registerWorkers(calibrationID, {str(w): j for w, j in jobs.items()})
    if not registered["OK"]:
        print(f"ERROR: calibration {calibrationID} created, but its workers could not be registered: "
              f"{failure(registered)}", file=sys.stderr)
        return 1
    print(calibrationID)
    return 0
