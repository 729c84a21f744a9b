"""``dirac-clic-calibration-status ID --watch``: follow one calibration until it ends.

On a terminal the view is redrawn in place; otherwise (a pipe, a log file) one line is appended
each time something other than the clocks changes. The rendering is pure (a status row in, text
out); only ``watch`` talks to the service. The exit code says how the calibration ended.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from ILCDIRAC.CalibrationSystem.Client.Status import columns, failure
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus, WorkerStatus

#: Exit codes of ``--watch``: how the calibration ended (1 stays "the command itself failed").
EXIT_CODES = {CalibrationStatus.FINISHED: 0, CalibrationStatus.FAILED: 3, CalibrationStatus.KILLED: 4}
#: Terminal control: cursor to the top left corner, clear to the end of the screen.
REDRAW = "\033[H\033[J"
#: How long the service may stay silent before the watch gives up (seconds).
PATIENCE = 600.0
#: Stragglers listed by number before the rest are only counted.
MAX_LISTED = 8
ENDED_WORKERS = {WorkerStatus.FINISHED, WorkerStatus.KILLED, WorkerStatus.FAILED}


def duration(seconds: float | None) -> str:
    """Seconds as H:MM:SS (or "?" when unknown)."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def stragglers(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Workers that have not yet reported the current step (while the calibration runs)."""
    if row["status"] != CalibrationStatus.RUNNING:
        return []
    return [w for w in row.get("workerList", [])
            if (w["lastStep"] or 0) < row["step"] and w["status"] not in ENDED_WORKERS]


def _where(row: Mapping[str, Any]) -> str:
    phases = ", ".join(row.get("phases") or []) or "-"
    return f"stage {row['stage']}, phase {phases}, step {row['step']}"


def _straggler_text(row: Mapping[str, Any]) -> str:
    late = stragglers(row)
    if not late:
        return "none"
    shown = ", ".join(
        str(w["workerID"]) + (f" (resubmitted {w['resubmissions']}x)" if w["resubmissions"] else "")
        for w in late[:MAX_LISTED]
    )
    more = f" and {len(late) - MAX_LISTED} more" if len(late) > MAX_LISTED else ""
    waiting = "waiting for the first result" if row["resultsThisStep"] == 0 else "not reported yet"
    return f"worker {shown}{more} ({waiting})"


def _times(row: Mapping[str, Any]) -> str:
    progress = row.get("progress", {})
    text = f"elapsed {duration(progress.get('elapsedSeconds'))}"
    if row["status"] == CalibrationStatus.RUNNING:
        left = progress.get("secondsLeft")
        text += ", time left " + ("unknown until a step has closed" if left is None else f"about {duration(left)}")
    return text


def _reading_lines(readings: Sequence[Mapping[str, Any]]) -> list[str]:
    if not readings:
        return ["  (no phase measured yet)"]
    lines = [("Phase", "Name", "Step", "Observable", "Value/target", "+-", "Accuracy", "")]
    for r in readings:
        ratio, band = r["value"] / r["target"], r["tolerance"] / abs(r["target"])
        lines.append((r["phase"], r["phaseName"], str(r["step"]), r["observable"], f"{ratio:.4f}",
                      f"{r['error'] / abs(r['target']):.4f}", f"{100 * band:.2g} %",
                      "within" if abs(ratio - 1) < band else "outside"))
    return columns(lines, indent="  ").splitlines()


def render(row: Mapping[str, Any]) -> str:
    """The full view of one calibration (a status row with its progress and worker list)."""
    state = row["status"] + (f" ({row['reason']})" if row.get("reason") else "")
    lines = [
        f"Calibration {row['calibrationID']} ({row['owner']}): {state}",
        f"  {_where(row)}; results {row['resultsThisStep']}/{row['resultsNeeded']} of {row['numberOfWorkers']} workers",
        f"  {_times(row)}",
        f"  stragglers: {_straggler_text(row)}",
        "Latest observable/target of each phase (accepted band: the requested accuracy):",
        *_reading_lines(row.get("progress", {}).get("readings", [])),
    ]
    return "\n".join(lines)


def change_key(row: Mapping[str, Any]) -> tuple:
    """What a new line is printed for when not on a terminal: everything but the clocks."""
    readings = tuple((r["phase"], r["step"], r["observable"]) for r in row.get("progress", {}).get("readings", []))
    late = tuple(w["workerID"] for w in stragglers(row))
    return row["status"], row["step"], tuple(row.get("phases") or ()), row["resultsThisStep"], readings, late


def line(row: Mapping[str, Any], clock: str) -> str:
    """One line for a log: time, state, where, results, the newest reading farthest from its
    target, stragglers, times."""
    readings = row.get("progress", {}).get("readings", [])
    newest = max((r["step"] for r in readings), default=None)
    # of the newest step's observables, the one farthest from its target
    latest = max((r for r in readings if r["step"] == newest), key=lambda r: abs(r["value"] / r["target"] - 1),
                 default=None)
    measured = ""
    if latest is not None:
        measured = (f"; {latest['phase']} {latest['observable']}/target {latest['value'] / latest['target']:.4f} "
                    f"(accuracy {100 * latest['tolerance'] / abs(latest['target']):.2g} %)")
    late = stragglers(row)
    waiting = f"; waiting for worker {', '.join(str(w['workerID']) for w in late[:MAX_LISTED])}" if late else ""
    state = row["status"] + (f" ({row['reason']})" if row.get("reason") else "")
    return (f"{clock} {state}: {_where(row)}, results {row['resultsThisStep']}/{row['resultsNeeded']}"
            f"{measured}{waiting}; {_times(row)}")


def watch(calibrationID: int, fetch: Callable[[int], Mapping[str, Any]], out: TextIO = sys.stdout,
          interval: float = 5.0, patience: float = PATIENCE, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll ``fetch(calibrationID)`` (a DIRAC result holding a list with the calibration's row)
    every ``interval`` seconds until the calibration ends; return its exit code (``EXIT_CODES``),
    or 1 after the first call failed or the service stayed silent ``patience`` seconds."""
    onTerminal = out.isatty()
    lastKey, lastAnswer = None, clock()
    while True:
        result = fetch(calibrationID)
        if not result["OK"]:
            if lastKey is None or clock() - lastAnswer > patience:
                print(f"ERROR: {failure(result)}", file=sys.stderr)
                return 1
            sleep(interval)
            continue
        lastAnswer = clock()
        row = result["Value"][0]
        if onTerminal:
            out.write(REDRAW + render(row) + "\n")
        elif change_key(row) != lastKey or row["status"] != CalibrationStatus.RUNNING:
            out.write(line(row, time.strftime("%H:%M:%S")) + "\n")
        out.flush()
        lastKey = change_key(row)
        if row["status"] != CalibrationStatus.RUNNING:
            return EXIT_CODES.get(row["status"], 1)
        sleep(interval)
