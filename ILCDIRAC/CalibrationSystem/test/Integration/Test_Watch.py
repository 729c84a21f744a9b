"""``dirac-clic-calibration-status ID --watch`` against a real running calibration.

The command runs as a user's process beside the calibration's own workers; it must follow the
calibration to its end, print a line per change when its output is a pipe (and redraw in place on
a terminal), show what the service measured, and say with its exit code how the calibration ended.
"""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

from ILCDIRAC.CalibrationSystem.Client.Watch import EXIT_CODES, REDRAW
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import PARTICLES
from ILCDIRAC.CalibrationSystem.localdirac.scenario import BIN, Scenario
from ILCDIRAC.CalibrationSystem.test.Integration.Test_Commands import (
    SETTINGS,
    TRUTH,
    slow_marlin,
)

GAMMA_ENERGY = PARTICLES["gamma"][1]  # the emulated photons' energy: the target of phase 1.0


def watch_process(scenario: Scenario, calibrationID: int, **streams) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "dirac-clic-calibration-status"), str(calibrationID), "--watch", "--interval", "1"],
                            cwd=scenario.folder, env=scenario.testbed.env("alice"), text=True, **streams)


def test_watch_follows_a_calibration_to_its_end_one_line_per_change(testbed, tmp_path):
    settings = {**SETTINGS, "numberOfJobs": 3, "marlinExecutable": slow_marlin(tmp_path, 1)}
    scenario = Scenario(testbed, tmp_path, TRUTH, {"gamma": (3, 100)}, settings)
    calibrationID = scenario.submit()
    watcher = watch_process(scenario, calibrationID, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = watcher.communicate(timeout=600)
    final = scenario.status(calibrationID)
    shown = f"rc={watcher.returncode}\n{stdout}\n{stderr}\n{scenario.logs(calibrationID)}"
    assert final["status"] == "finished", shown
    assert (watcher.returncode, stderr) == (EXIT_CODES["finished"], ""), shown

    lines = stdout.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d (running|finished)", text) for text in lines), shown
    assert len(lines) == len(set(lines)) >= 2, shown  # a line per change, never a repeat
    assert " running: stage 1, phase 1.0, step 1, results " in lines[0], shown
    assert "finished" in lines[-1] and "time left" not in lines[-1], shown

    # the last measurement of phase 1.0, as the service's history has it, against its target
    history = scenario.history(calibrationID)
    last = [s for s in history if "1.0" in (s["outcome"] or {}).get("measurements", {})][-1]
    values = last["outcome"]["measurements"]["1.0"]["values"]
    observable = max(values, key=lambda name: abs(values[name] / GAMMA_ENERGY - 1))  # the one farthest off
    expected = f"1.0 {observable}/target {values[observable] / GAMMA_ENERGY:.4f}"
    assert expected in lines[-1], shown
    # every closed step appeared: its results were counted to the needed number
    assert any(f"step {last['step']}, results" in text for text in lines), shown


def test_watch_on_a_terminal_redraws_in_place_and_exits_4_when_killed(testbed, tmp_path):
    settings = {**SETTINGS, "numberOfJobs": 2, "marlinExecutable": slow_marlin(tmp_path, 4)}
    scenario = Scenario(testbed, tmp_path, TRUTH, {"gamma": (2, 100)}, settings)
    calibrationID = scenario.submit()
    controller, terminal = pty.openpty()
    watcher = watch_process(scenario, calibrationID, stdout=terminal, stderr=subprocess.PIPE)
    os.close(terminal)
    screen, deadline = "", time.monotonic() + 120
    while screen.count(REDRAW) < 2 and time.monotonic() < deadline:  # drawn twice: it follows the calibration
        screen += _read(controller, watcher)
    assert screen.count(REDRAW) >= 2, screen
    killed = scenario.run_command("dirac-clic-calibration-kill", str(calibrationID))
    assert killed.returncode == 0, killed.stderr
    deadline = time.monotonic() + 120
    while watcher.poll() is None and time.monotonic() < deadline:
        screen += _read(controller, watcher)
    screen += _read(controller, watcher)
    os.close(controller)
    shown = f"rc={watcher.returncode}\n{screen}\n{watcher.stderr.read()}"
    assert watcher.returncode == EXIT_CODES["killed"], shown
    last = screen.rsplit(REDRAW, 1)[1]
    assert f"Calibration {calibrationID} (alice): killed (killed by alice)" in last, shown
    first = screen.split(REDRAW)[1]
    assert "stage 1, phase 1.0, step 1; results 0/2 of 2 workers" in first, shown
    assert "stragglers: worker 0, 1 (waiting for the first result)" in first, shown


def _read(fd: int, process: subprocess.Popen) -> str:
    """What the terminal received within a second (empty once the process ended and all is read)."""
    ready, _, _ = select.select([fd], [], [], 1.0)
    if not ready:
        return ""
    try:
        return os.read(fd, 65536).decode(errors="replace").replace("\r\n", "\n")
    except OSError:  # the watcher ended and closed its side of the terminal
        return ""
