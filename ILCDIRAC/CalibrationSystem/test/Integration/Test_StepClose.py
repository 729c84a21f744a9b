"""Closing steps off the workers' calls (logic.close_step, logic.closer) on the real MariaDB:
a close that raises is retried and, after its last attempt, fails the calibration with the
reason; a report only wakes the closer thread, which closes the step exactly once."""
import os
import subprocess
import sys
import threading

import pytest

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB, StepClose, closer_name, mysql_url
from ILCDIRAC.CalibrationSystem.localdirac import mariadb
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic
from ILCDIRAC.CalibrationSystem.logic.calibrations import Caller, ClosePolicy
from ILCDIRAC.CalibrationSystem.logic.closer import StepCloser
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import require_mariadb
from ILCDIRAC.CalibrationSystem.Utilities.procedure import start

CONSTANTS = {"CalibrECAL": [37.5, 37.5]}


@pytest.fixture
def db():
    require_mariadb()
    name = mariadb.create_database("CalibStepClose")
    try:
        yield CalibrationDB(mysql_url(mariadb.HOST, mariadb.PORT, mariadb.USER, mariadb.PASSWORD, name))
    finally:
        mariadb.drop_database(name)


def ready_calibration(db, workers=3, needed=2, reported=None):
    state = start(["1.0"], CONSTANTS, "fast", 5)
    cid = db.insertCalibration(
        ownerDN="/CN=alice", owner="alice", ownerGroup="calibration_user", settings={"numberOfJobs": workers},
        state=state.to_dict(), stage=1, phase=0, phases=state.active, constants=state.constants,
        numberOfWorkers=workers, resultsNeeded=needed, backend="local", inputFiles={"steering.xml": b"<marlin/>"},
    )
    for worker in range(needed if reported is None else reported):
        db.addResult(cid, 1, worker, {"phases": {}})
    return cid


def next_step(calibration, step, stored):
    return StepClose(outcome={"workers": [w for w, _ in stored]}, state=calibration["State"], status="running",
                     reason="", stage=1, phase=0, nextStep=step["Step"] + 1, nextPhases=["1.0"],
                     nextConstants=CONSTANTS, nextInputs={}, files={})


class Flaky:
    """A decide_close that raises ``failures`` times, then closes normally."""

    def __init__(self, failures):
        self.failures, self.calls = failures, 0

    def __call__(self, calibration, step, stored):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("estimator crashed")
        return next_step(calibration, step, stored)


def test_a_close_that_raises_once_is_retried_and_then_closes(db, monkeypatch):
    cid = ready_calibration(db)
    flaky = Flaky(failures=1)
    monkeypatch.setattr(logic, "decide_close", flaky)
    assert logic.close_step(db, cid, 1) is None
    assert db.getStep(cid, 1)["Status"] == "open" and db.readySteps() == [(cid, 1)]
    assert db.getCalibration(cid)["Status"] == "running"
    closed = logic.close_ready_steps(db)
    assert closed == [{"calibrationID": cid, "step": 1, "status": "running"}]
    assert flaky.calls == 2 and db.getStep(cid, 1)["CloseAttempts"] == 2
    assert [s["Status"] for s in db.getSteps(cid)] == ["closed", "open"]


def test_a_close_that_always_raises_fails_the_calibration_with_the_reason(db, monkeypatch):
    cid = ready_calibration(db)
    flaky = Flaky(failures=10**6)
    monkeypatch.setattr(logic, "decide_close", flaky)
    policy = ClosePolicy(maxAttempts=3)
    for _ in range(2):
        assert logic.close_ready_steps(db, policy) == []
    assert logic.close_ready_steps(db, policy) == [{"calibrationID": cid, "step": 1, "status": "failed"}]
    assert flaky.calls == 3
    calibration = db.getCalibration(cid)
    assert calibration["Status"] == "failed"
    assert calibration["Reason"].startswith("internal error ") and "while closing step 1" in calibration["Reason"]
    step = db.getStep(cid, 1)
    assert (step["Status"], step["CloseAttempts"], step["Outcome"]["error"]) == ("closed", 3, calibration["Reason"])
    assert db.readySteps() == [] and logic.close_ready_steps(db, policy) == []


def test_a_closer_that_keeps_dying_fails_the_calibration_without_computing_again(db, monkeypatch):
    cid = ready_calibration(db)
    for n in range(3):  # three closers claimed the step and died (their claims time out)
        assert db.claimStep(cid, 1, f"host:{n}:1", claimTimeout=-1) is not None
    flaky = Flaky(failures=0)
    monkeypatch.setattr(logic, "decide_close", flaky)
    decision = logic.close_step(db, cid, 1, ClosePolicy(claimTimeout=-1, maxAttempts=3))
    assert flaky.calls == 0
    assert decision.status == "failed"
    assert db.getCalibration(cid)["Reason"] == "closing step 1 failed 3 times (last: the closer stopped)"


def test_a_claim_of_a_process_of_this_host_that_ended_is_taken_over_at_once(db, monkeypatch):
    """A service killed mid-close and restarted closes the step at once, not after the claim timeout."""
    cid, other = ready_calibration(db), ready_calibration(db)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    host = closer_name().partition(":")[0]
    assert db.claimStep(cid, 1, f"{host}:{ended.pid}:1") is not None
    assert db.claimStep(other, 1, f"{host}:{os.getpid()}:1") is not None, "a live closer: this process"
    monkeypatch.setattr(logic, "decide_close", Flaky(failures=0))
    closed = logic.close_ready_steps(db, ClosePolicy(claimTimeout=300))
    assert closed == [{"calibrationID": cid, "step": 1, "status": "running"}]
    assert db.getStep(cid, 1)["CloseAttempts"] == 2, "the dead closer's attempt counts"
    assert db.getStep(other, 1)["Status"] == "closing", "a live closer's claim is left alone"


def test_the_report_that_completes_a_step_only_wakes_the_closer_thread(db, monkeypatch):
    """submit_result answers 'ready' without closing; the woken closer thread closes the step,
    and its polling fallback closes a step nobody woke it for."""
    cid = ready_calibration(db, workers=3, needed=3, reported=2)
    computing, release = threading.Event(), threading.Event()

    def slow(calibration, step, stored):
        computing.set()
        assert release.wait(30)
        return next_step(calibration, step, stored)

    monkeypatch.setattr(logic, "decide_close", slow)
    # the reports here are placeholders: their validation is Test_Summary's and Test_RPCFuzz's
    monkeypatch.setattr(logic.PhaseContext, "from_settings", staticmethod(lambda settings: None))
    monkeypatch.setattr(logic, "_validate_report", lambda payload, phases, ctx: None)
    owner = Caller(dn="/CN=alice", username="alice", group="calibration_user", properties=frozenset())
    closer = StepCloser(db, interval=3600).start()
    try:
        answer = logic.submit_result(db, owner, cid, 1, 2, {"phases": {}})
        assert answer == {"verdict": "accepted", "results": 3, "needed": 3, "ready": True,
                          "applicationStatus": f"PandoraCalib_{cid}: step 1 is finished. Waiting for other jobs"}
        assert db.getStep(cid, 1)["Status"] == "open", "the reporting call closed nothing"
        closer.wake()
        assert computing.wait(30)
        assert db.getStep(cid, 1)["Status"] == "closing"
        release.set()
        assert wait_for(lambda: db.getCalibration(cid)["Step"] == 2)
    finally:
        release.set()
        closer.stop()
    fallback = StepCloser(db, interval=0.05)
    monkeypatch.setattr(logic, "decide_close", next_step)
    for worker in range(3):
        db.addResult(cid, 2, worker, {"phases": {}})
    fallback.start()
    try:
        assert wait_for(lambda: db.getCalibration(cid)["Step"] == 3)
    finally:
        fallback.stop()
    assert [s["Status"] for s in db.getSteps(cid)] == ["closed", "closed", "open"]


def wait_for(condition, timeout=30.0):
    """Wait on a condition (polling the DB), not a fixed time."""
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not done.is_set():
            if condition():
                return True
            done.wait(0.05)
        return condition()
    finally:
        deadline.cancel()


def test_the_services_closer_computes_in_a_child_process_and_replaces_a_dead_one(db):
    import os
    from concurrent.futures.process import BrokenProcessPool

    closer = StepCloser(db, process=True).start()
    try:
        child = closer.compute(os.getpid)
        assert child != os.getpid()
        with pytest.raises(BrokenProcessPool):
            closer.compute(os._exit, 3)
        replacement = closer.compute(os.getpid)
        assert replacement not in (child, os.getpid())
    finally:
        closer.stop()
