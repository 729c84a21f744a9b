"""What ``dirac-clic-calibration-status``, ``-kill`` and ``-results`` do and print.

Every failure is one line on stderr starting with ``ERROR:`` and a non-zero exit code; the
service's own refusals are passed on word for word, transport failures are named as such.
"""
from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus

COLUMNS = ("ID", "Owner", "Status", "Stage", "Phase", "Step", "Results", "Workers", "Last update")


def failure(result: Mapping[str, Any]) -> str:
    """One readable line for a failed call to the Calibration service."""
    message = result["Message"]
    stub = result.get("rpcStub")
    url = _service_url(stub[0][0] if stub else "Calibration/Calibration")
    socketError = re.match(r"\[Errno -?\d+\] ([^:]+)", message)
    if socketError:
        return f"the Calibration service at {url} does not answer: {socketError.group(1)}"
    if message.startswith("Unauthorized query"):
        method = stub[1] if stub else "this method"
        return f"the Calibration service at {url} does not allow you to call {method}: {message}"
    return message


def _service_url(name: str) -> str:
    """The URL the client used: clients name the service, the configuration gives its URL."""
    if "://" in name:
        return name
    from DIRAC.ConfigurationSystem.Client.PathFinder import getServiceURL

    return getServiceURL(name) or name


def report_failure(result: Mapping[str, Any]) -> int:
    print(f"ERROR: {failure(result)}", file=sys.stderr)
    return 1


def calibration_ids(texts: Sequence[str]) -> list[int] | None:
    """The arguments as calibration IDs; None (after saying which is wrong) if one is not an integer."""
    bad = [text for text in texts if not re.fullmatch(r"\s*\d+\s*", text)]
    if bad:
        print(f"ERROR: a calibration ID is a whole number, not {', '.join(map(repr, bad))}", file=sys.stderr)
        return None
    return [int(text) for text in texts]


def format_workers(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "-"


def columns(lines: Sequence[Sequence[str]], indent: str = "") -> str:
    """Rows of cells as left-aligned columns two spaces apart."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        indent + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [COLUMNS]
    for row in rows:
        lines.append(
            (
                str(row["calibrationID"]),
                row["owner"],
                row["status"] + (f" ({row['reason']})" if row["reason"] else ""),
                str(row["stage"]),
                str(row["phase"]),
                str(row["step"]),
                f"{row['resultsThisStep']}/{row['resultsNeeded']}",
                format_workers(row["workers"]),
                row["lastUpdate"],
            )
        )
    return columns(lines)


def format_constants(constants: dict[str, Any], uncertainties: dict[str, float] | None = None,
                     exceeding: dict[str, dict[str, Any]] | None = None) -> str:
    """One line per constant: value(s), uncertainty, and a ``!`` where the uncertainty exceeds
    the accuracy asked for, explained below the list."""
    def value(v: Any) -> str:
        return ", ".join(f"{x:.6g}" for x in v) if isinstance(v, list) else f"{v:.6g}"

    if not constants:
        return "  (none)"
    uncertainties, exceeding = uncertainties or {}, exceeding or {}
    width = max(len(name) for name in constants)
    lines = []
    for name, v in sorted(constants.items()):
        error = f"  +- {uncertainties[name]:.2g}" if name in uncertainties else ""
        mark = "  !" if name in exceeding else ""
        lines.append(f"  {name.ljust(width)}  {value(v)}{error}{mark}")
    for name, problem in sorted(exceeding.items()):
        lines.append(
            f"  ! {name}: uncertainty {100 * problem['relative']:.2g} % exceeds the requested {problem['setting']} "
            f"{100 * problem['accuracy']:.2g} %; about {math.ceil(problem['eventsFactor'] * 10) / 10:g} times the "
            f"{' and '.join(problem['samples'])} events would reach it"
        )
    return "\n".join(lines)


def show_status(args: Sequence[str], *, asJson: bool) -> int:
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient

    ids = calibration_ids(args)
    if ids is None:
        return 1
    result = CalibrationClient().getCalibrationStatus(ids)
    if not result["OK"]:
        return report_failure(result)
    rows = result["Value"]
    if asJson:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("No calibrations.")
        return 0
    print(format_table(rows))
    if ids:
        for row in rows:
            running = row["status"] == CalibrationStatus.RUNNING
            when = f"of step {row['step']}" if running else f"at its end ({row['status']})"
            print(f"\nCalibration {row['calibrationID']}, constants {when}:")
            print(format_constants(row["constants"], row.get("uncertainties"), row.get("exceedingAccuracy")))
            print(f"\nWorkers of calibration {row['calibrationID']}:")
            print(format_worker_table(row.get("workerList", [])))
    return 0


WORKER_COLUMNS = ("Worker", "Job", "State", "Resubmitted", "Last step", "Last seen", "Application status")


def format_worker_table(workers: Sequence[dict[str, Any]]) -> str:
    """Each worker's state as the service keeps it: the same wording the DIRAC job monitor shows."""
    lines = [WORKER_COLUMNS] + [
        (
            str(w["workerID"]),
            w["jobID"] or "-",
            w["status"],
            str(w["resubmissions"]),
            str(w["lastStep"] or "-"),
            w["lastSeen"] or "-",
            w["applicationStatus"] or "-",
        )
        for w in workers
    ]
    return columns(lines, indent="  ")


def watch_status(args: Sequence[str], interval: float) -> int:
    """``--watch``: follow one calibration until it ends (see ``Client.Watch``)."""
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient
    from ILCDIRAC.CalibrationSystem.Client.Watch import watch

    ids = calibration_ids(args)
    if ids is None:
        return 1
    client = CalibrationClient()
    try:
        return watch(ids[0], lambda calibrationID: client.getCalibrationStatus([calibrationID]), interval=interval)
    except KeyboardInterrupt:
        print(f"stopped watching calibration {ids[0]} (it goes on)", file=sys.stderr)
        return 130


def kill(text: str) -> int:
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient

    ids = calibration_ids([text])
    if ids is None:
        return 1
    calibrationID = ids[0]
    result = CalibrationClient().killCalibration(calibrationID)
    if not result["OK"]:
        return report_failure(result)
    print(f"calibration {calibrationID} killed")
    return 0


def fetch_results(text: str, folder: str | None, onlyPlots: bool = False) -> int:
    """Download the result files (only the plots with ``onlyPlots``) and print the constants."""
    from pathlib import Path

    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient
    from ILCDIRAC.CalibrationSystem.Utilities.paths import PathError, relative_path
    from ILCDIRAC.CalibrationSystem.Utilities.stored_files import PLOT_FILES, RESULT_PREFIX, decode_file

    ids = calibration_ids([text])
    if ids is None:
        return 1
    calibrationID = ids[0]
    client = CalibrationClient()
    result = client.getCalibrationResults(calibrationID)
    if not result["OK"]:
        return report_failure(result)
    summary = result["Value"]
    target = Path(folder or f"calibration_{calibrationID}")
    names = [name for name in summary["files"] if name in PLOT_FILES or not onlyPlots]
    for name in names:
        stored = client.getCalibrationFile(calibrationID, name)
        if not stored["OK"]:
            print(f"ERROR: {name}: {failure(stored)}", file=sys.stderr)
            return 1
        try:
            path = target / relative_path(name.removeprefix(RESULT_PREFIX))
        except PathError as exc:
            print(f"ERROR: the service sent an unusable file name: {exc}", file=sys.stderr)
            return 1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(decode_file(stored["Value"]))
        except OSError as exc:
            print(f"ERROR: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    print(f"Calibration {calibrationID} ({summary['detectorModel']}, {summary['steps']} steps):")
    print(format_constants(summary["constants"], summary["uncertainties"], summary.get("exceedingAccuracy")))
    what = "Plots" if onlyPlots else "Result files"
    print(f"{what} in {target}/: {', '.join(sorted(n.removeprefix(RESULT_PREFIX) for n in names))}")
    return 0
