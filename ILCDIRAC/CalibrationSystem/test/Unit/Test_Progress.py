"""The live view's content as pure functions: phase readings against their targets, the time
estimate, the rendering and the watch loop's exit codes (the service's answers are given as the
RPC returns them; the real service is exercised in Integration/Test_Watch.py)."""
from __future__ import annotations

import datetime
import io
import math
from pathlib import Path

from ILCDIRAC.CalibrationSystem.Client.Watch import (
    EXIT_CODES,
    REDRAW,
    change_key,
    line,
    render,
    stragglers,
    watch,
)
from ILCDIRAC.CalibrationSystem.logic.progress import (
    latest_readings,
    progress,
    readings,
    time_left,
)
from ILCDIRAC.CalibrationSystem.Utilities.settings import load_settings

TALK = Path(__file__).resolve().parents[1] / "data" / "talk_settings.txt"

K0L_MASS = 0.497611  # GeV, PDG
T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)


def settings() -> dict:
    return load_settings(TALK).to_dict()


def step(number: int, measurements: dict, opened: float, closed: float | None) -> dict:
    return {"Step": number, "OpenTime": T0 + datetime.timedelta(seconds=opened),
            "CloseTime": None if closed is None else T0 + datetime.timedelta(seconds=closed),
            "Outcome": {"measurements": measurements} if measurements else None}


def measured(values: dict, errors: dict) -> dict:
    return {"values": values, "errors": errors, "ok": True, "reason": ""}


STEPS = [
    step(1, {"1.0": measured({"barrelMean": 9.1, "endcapMean": 11.2, "other": 3.0}, {"barrelMean": 0.05, "endcapMean": 0.07})}, 0, 40),
    step(2, {"1.0": measured({"barrelMean": 9.95, "endcapMean": 10.1}, {"barrelMean": 0.04, "endcapMean": 0.06}),
             "1.1": measured({"barrelMean": 48.0, "endcapMean": 51.0}, {"barrelMean": 0.3, "endcapMean": 0.4})}, 40, 100),
    step(3, {}, 100, None),
]


def test_readings_are_each_phase_observable_against_the_target_its_settings_give():
    values = settings()
    found = readings(STEPS, values)
    # only observables with a target; the per-phase accuracy setting gives the band
    assert {(r.step, r.phase, r.observable) for r in found} == {
        (1, "1.0", "barrelMean"), (1, "1.0", "endcapMean"), (2, "1.0", "barrelMean"), (2, "1.0", "endcapMean"),
        (2, "1.1", "barrelMean"), (2, "1.1", "endcapMean")}
    gamma, kaon = values["gammaEnergy"], values["kaonEnergy"]
    byKey = {(r.step, r.phase, r.observable): r for r in found}
    assert math.isclose(byKey[(1, "1.0", "endcapMean")].ratio, 11.2 / gamma)
    assert math.isclose(byKey[(1, "1.0", "endcapMean")].ratioError, 0.07 / gamma)
    assert math.isclose(byKey[(2, "1.1", "barrelMean")].ratio, 48.0 / (kaon - K0L_MASS), rel_tol=1e-5)
    assert math.isclose(byKey[(2, "1.0", "barrelMean")].band, values["digitisationAccuracy"])
    latest = latest_readings(found)
    assert [(r.phase, r.step, r.observable) for r in latest] == [
        ("1.0", 2, "barrelMean"), ("1.0", 2, "endcapMean"), ("1.1", 2, "barrelMean"), ("1.1", 2, "endcapMean")]


def test_time_left_scales_the_median_step_by_the_phases_left():
    # 3 closed steps for 1 completed phase: 3 steps a phase; 2 phases left of median 20 s; 5 s already run
    assert time_left([10, 20, 30], 3, 1, 2, 5.0) == 2 * 3 * 20 - 5
    assert time_left([10], 1, 0, 4, 0.0) == 4 * 10  # nothing completed yet: one step a phase at least
    assert time_left([], 0, 0, 3, 10.0) is None
    assert time_left([10], 1, 3, 0, 0.0) == 0.0
    assert time_left([10], 1, 1, 1, 50.0) == 0.0  # never negative


def test_progress_reports_durations_phases_and_estimate():
    state = {"sequence": ["1.0", "1.1", "2.2"], "memory": {"completed": ["1.0"]}}
    report = progress(STEPS, settings(), state, T0 + datetime.timedelta(seconds=130))
    assert report["stepSeconds"] == [40.0, 60.0]
    assert (report["phasesDone"], report["phasesToDo"], report["currentStepSeconds"]) == (1, 2, 30.0)
    assert report["secondsLeft"] == 2 * 2 * 50.0 - 30.0
    assert [r["observable"] for r in report["readings"]] == ["barrelMean", "endcapMean", "barrelMean", "endcapMean"]


def row(status="running", results=1, steps=STEPS, reason="") -> dict:
    state = {"sequence": ["1.0", "1.1"], "memory": {"completed": []}}
    report = progress(steps, settings(), state, T0 + datetime.timedelta(seconds=130))
    report["elapsedSeconds"] = 130.0
    return {
        "calibrationID": 7, "owner": "alice", "status": status, "reason": reason, "stage": 1, "phase": 1, "step": 3,
        "phases": ["1.0", "1.1"], "resultsThisStep": results, "resultsNeeded": 3, "numberOfWorkers": 4,
        "progress": report,
        "workerList": [
            {"workerID": 1, "lastStep": 3, "status": "waiting", "resubmissions": 0},
            {"workerID": 2, "lastStep": 2, "status": "running", "resubmissions": 2},
            {"workerID": 3, "lastStep": None, "status": "submitted", "resubmissions": 0},
            {"workerID": 4, "lastStep": 2, "status": "finished", "resubmissions": 0},
        ],
    }


def test_render_shows_where_results_readings_stragglers_and_times():
    view = render(row())
    assert "Calibration 7 (alice): running" in view
    assert "stage 1, phase 1.0, 1.1, step 3; results 1/3 of 4 workers" in view
    assert "elapsed 0:02:10, time left about 0:01:10" in view  # 2 phases x 1 step x 50 s (median) - 30 s
    assert "stragglers: worker 2 (resubmitted 2x), 3 (not reported yet)" in view
    ratio = f"{10.1 / settings()['gammaEnergy']:.4f}"
    assert any(text.split()[:5] == ["1.0", "ECalDigitisation", "2", "endcapMean", ratio] for text in view.splitlines())
    assert [w["workerID"] for w in stragglers(row(status="finished"))] == []


def test_one_line_per_change_ignores_the_clocks():
    first, later = row(), row()
    later["progress"]["elapsedSeconds"] = 999.0
    assert change_key(first) == change_key(later)
    assert change_key(first) != change_key(row(results=2))
    text = line(row(), "12:00:00")
    assert text.startswith("12:00:00 running: stage 1, phase 1.0, 1.1, step 3, results 1/3;")
    assert "waiting for worker 2, 3" in text and "\n" not in text


class Answers:
    """The service's answers to the watch's status calls, one per call (the last one repeats)."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), 0

    def __call__(self, calibrationID):
        assert calibrationID == 7
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


class Terminal(io.StringIO):
    def isatty(self):
        return True


STUB = (("dips://calib.example.org:9199/Calibration/Calibration", {}), "getCalibrationStatus", [[7]])


def ok(value):
    return {"OK": True, "Value": [value]}


def test_watch_appends_a_line_per_change_and_exits_with_how_it_ended():
    for status, code in EXIT_CODES.items():
        out = io.StringIO()
        answers = Answers(ok(row()), ok(row()), ok(row(results=2)), ok(row(status=status, reason="why")))
        assert watch(7, answers, out, sleep=lambda _: None) == code
        lines = out.getvalue().splitlines()
        assert len(lines) == 3 and answers.calls == 4
        assert f" {status} (why): " in lines[-1]
    assert set(EXIT_CODES.values()) == {0, 3, 4}


def test_watch_redraws_on_a_terminal_and_survives_a_silent_service(capsys):
    out = Terminal()
    down = {"OK": False, "Message": "[Errno 111] Connection refused", "rpcStub": STUB}
    answers = Answers(ok(row()), down, ok(row(status="finished")))
    assert watch(7, answers, out, sleep=lambda _: None) == 0
    assert out.getvalue().count(REDRAW) == 2 and capsys.readouterr().err == ""


def test_watch_fails_in_one_line_when_the_service_never_answers(capsys):
    out = io.StringIO()
    down = {"OK": False, "Message": "calibration 7 does not exist or does not belong to bob", "rpcStub": STUB}
    assert watch(7, Answers(down), out, sleep=lambda _: None) == 1
    assert out.getvalue() == ""
    assert capsys.readouterr().err == "ERROR: calibration 7 does not exist or does not belong to bob\n"
    clock = iter(range(0, 10_000, 100))
    assert watch(7, Answers(ok(row()), down), io.StringIO(), patience=250, clock=lambda: next(clock),
                 sleep=lambda _: None) == 1
