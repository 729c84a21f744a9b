"""What ``dirac-clic-calibration-status`` prints."""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence

COLUMNS = ("ID", "Owner", "Status", "Stage", "Phase", "Step", "Results", "Workers", "Last update")


def format_workers(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "-"


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
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def format_constants(constants: dict[str, Any], uncertainties: dict[str, float] | None = None) -> str:
    def value(v: Any) -> str:
        return ", ".join(f"{x:.6g}" for x in v) if isinstance(v, list) else f"{v:.6g}"

    uncertainties = uncertainties or {}
    width = max(len(name) for name in constants)
    lines = []
    for name, v in sorted(constants.items()):
        error = f"  +- {uncertainties[name]:.2g}" if name in uncertainties else ""
        lines.append(f"  {name.ljust(width)}  {value(v)}{error}")
    return "\n".join(lines)


def show_status(args: Sequence[str], *, asJson: bool) -> int:
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient

    try:
        ids = [int(a) for a in args]
    except ValueError:
        print(f"ERROR: calibration IDs must be integers, not {' '.join(args)}", file=sys.stderr)
        return 1
    result = CalibrationClient().getCalibrationStatus(ids)
    if not result["OK"]:
        print(f"ERROR: {result['Message']}", file=sys.stderr)
        return 1
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
            print(f"\nCalibration {row['calibrationID']}, constants of step {row['step']}:")
            print(format_constants(row["constants"]))
    return 0


def _calibration_id(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        print(f"ERROR: a calibration ID is an integer, not {text!r}", file=sys.stderr)
        return None


def kill(text: str) -> int:
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient

    calibrationID = _calibration_id(text)
    if calibrationID is None:
        return 1
    result = CalibrationClient().killCalibration(calibrationID)
    if not result["OK"]:
        print(f"ERROR: {result['Message']}", file=sys.stderr)
        return 1
    print(f"calibration {calibrationID} killed")
    return 0


def fetch_results(text: str, folder: str | None) -> int:
    from pathlib import Path

    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient, decode_file

    calibrationID = _calibration_id(text)
    if calibrationID is None:
        return 1
    client = CalibrationClient()
    result = client.getCalibrationResults(calibrationID)
    if not result["OK"]:
        print(f"ERROR: {result['Message']}", file=sys.stderr)
        return 1
    summary = result["Value"]
    target = Path(folder or f"calibration_{calibrationID}")
    target.mkdir(parents=True, exist_ok=True)
    for name in summary["files"]:
        stored = client.getCalibrationFile(calibrationID, name)
        if not stored["OK"]:
            print(f"ERROR: {name}: {stored['Message']}", file=sys.stderr)
            return 1
        (target / name.removeprefix("result_")).write_bytes(decode_file(stored["Value"]))
    print(f"Calibration {calibrationID} ({summary['detectorModel']}, {summary['steps']} steps):")
    print(format_constants(summary["constants"], summary["uncertainties"]))
    print(f"Result files in {target}/: {', '.join(sorted(n.removeprefix('result_') for n in summary['files']))}")
    return 0
