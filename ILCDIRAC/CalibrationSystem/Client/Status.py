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


def format_constants(constants: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return ", ".join(f"{x:.6g}" for x in v) if isinstance(v, list) else f"{v:.6g}"

    width = max(len(name) for name in constants)
    return "\n".join(f"  {name.ljust(width)}  {value(v)}" for name, v in sorted(constants.items()))


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
