"""Held calls (logic.step_watch, the facade's waitForNextStep) on a real SQLite CalibrationDB:
a waiting worker's call is answered when its calibration moves on (a step closed, the
calibration killed), also when another service replica moved it (nothing in this process knew);
it is answered ``wait`` with ``retryAfter`` 0 when the hold time passed, and as a plain poll
when the service holds as many calls as it may."""
import functools
import threading
import time

import pytest

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB, StepClose
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import CALLER, STEERING, input_files
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic
from ILCDIRAC.CalibrationSystem.logic.service import CalibrationService
from ILCDIRAC.CalibrationSystem.logic.step_watch import MOVED, Progress, StepWatch
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict

INTERVAL = 0.1


@pytest.fixture
def db(tmp_path):
    return CalibrationDB(f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}")


@pytest.fixture
def watch(db):
    watch = StepWatch(db.getProgress, capacity=3, interval=INTERVAL).start()
    yield watch
    watch.stop()


def new_calibration(db, workers=2):
    settings = settings_from_dict({"detectorModel": "CLD", "backend": "local", "numberOfJobs": workers,
                                   "steeringFile": str(STEERING), "phaseSequence": ["1.0"],
                                   "gammaFiles": ["a.slcio", "b.slcio"], "gammaEventsPerFile": 10}).to_dict()
    return logic.create_calibration(db, CALLER, settings, input_files(settings))


def in_thread(function, *args):
    """Run ``function(*args)`` in a thread; returns (thread, result holder with the value and when it came)."""
    began, box = time.monotonic(), {}

    def target():
        box["value"] = function(*args)
        box["after"] = time.monotonic() - began

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_a_held_call_returns_when_the_step_moves_on_even_if_another_process_moved_it(db, watch, tmp_path):
    cid = new_calibration(db)
    thread, box = in_thread(watch.hold, cid, Progress(1, ended=False), 30.0)
    time.sleep(3 * INTERVAL)
    assert thread.is_alive() and watch.held == 1
    # another replica (its own connection, nothing shared in memory) opens step 2
    other = CalibrationDB(f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}")
    with other.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE Calibrations SET Step = 2 WHERE CalibrationID = ?", (cid,))
    moved = time.monotonic()
    thread.join(5.0)
    assert box["value"] is MOVED
    assert time.monotonic() - moved < 3 * INTERVAL + 0.5, "within one look of the watch"
    assert watch.held == 0


def test_an_older_reading_of_the_watch_never_wakes_a_worker_that_saw_more(db, watch):
    cid = new_calibration(db)
    # the worker saw step 3 already (the watch's database still says step 1): it waits on
    thread, box = in_thread(watch.hold, cid, Progress(3, ended=False), 5 * INTERVAL)
    thread.join(5.0)
    assert box["value"] is None and box["after"] >= 5 * INTERVAL


def test_a_killed_calibration_wakes_its_held_calls_and_no_other(db, watch):
    killed, other = new_calibration(db), new_calibration(db)
    threads = [in_thread(watch.hold, cid, Progress(1, ended=False), 20 * INTERVAL) for cid in (killed, other)]
    time.sleep(2 * INTERVAL)
    logic.kill_calibration(db, CALLER, killed)
    (t1, b1), (t2, b2) = threads
    t1.join(5.0)
    t2.join(5.0)
    assert b1["value"] is MOVED and b1["after"] < 10 * INTERVAL
    assert b2["value"] is None and b2["after"] >= 20 * INTERVAL


def test_beyond_its_capacity_the_watch_holds_nothing_and_says_so_at_once(db, watch):
    cid = new_calibration(db)
    held = [in_thread(watch.hold, cid, Progress(1, ended=False), 20 * INTERVAL, worker) for worker in range(3)]
    time.sleep(2 * INTERVAL)
    began = time.monotonic()
    assert watch.hold(cid, Progress(1, ended=False), 10.0, 3) is None
    assert time.monotonic() - began < 0.05
    for thread, _ in held:
        thread.join(5.0)


def test_stopping_the_watch_releases_every_held_call(db):
    watch = StepWatch(db.getProgress, capacity=10, interval=INTERVAL).start()
    cid = new_calibration(db)
    thread, box = in_thread(watch.hold, cid, Progress(1, ended=False), 30.0)
    time.sleep(2 * INTERVAL)
    watch.stop()
    thread.join(5.0)
    assert box["value"] is None and box["after"] < 5.0


# ------------------------------------------------------------------------------------ the RPC
@pytest.fixture
def service(db):
    watch = StepWatch(db.getProgress, capacity=10, interval=INTERVAL,
                      answer=functools.partial(logic.woken_answers, db)).start()
    yield CalibrationService(db, watch=watch, holdSeconds=1.0)
    watch.stop()


def waiting_calibration(service):
    """A calibration whose worker 0 reported step 1 (one more report closes it)."""
    cid = new_calibration(service.db)
    report = {"phases": {"1.0": {}}}
    service.db.addResult(cid, 1, 0, report)
    service.db.updateWorker(cid, 0, LastStep=1)
    return cid


def test_wait_for_next_step_answers_the_new_step_when_it_opens(service):
    cid = waiting_calibration(service)
    thread, box = in_thread(service.waitForNextStep, CALLER, cid, 0, 1)
    time.sleep(3 * INTERVAL)
    assert thread.is_alive(), "a waiting worker's call is held"
    service.killCalibration(CALLER, cid)
    thread.join(5.0)
    assert box["value"]["OK"] and box["value"]["Value"]["action"] == "killed"
    assert box["after"] < 1.0, "answered when the calibration moved on, before the hold time"


def test_a_hold_that_runs_out_answers_wait_and_ask_again_at_once(service):
    cid = waiting_calibration(service)
    began = time.monotonic()
    answer = service.waitForNextStep(CALLER, cid, 0, 1)
    assert 1.0 <= time.monotonic() - began < 2.0
    assert answer["OK"] and answer["Value"]["action"] == "wait" and answer["Value"]["retryAfter"] == 0.0


def test_a_full_service_answers_a_waiting_worker_as_a_plain_poll(db):
    service = CalibrationService(db, watch=StepWatch(db.getProgress, capacity=0).start(), holdSeconds=30.0)
    cid = waiting_calibration(service)
    began = time.monotonic()
    answer = service.waitForNextStep(CALLER, cid, 0, 1)
    assert time.monotonic() - began < 0.5
    assert answer["Value"] == service.getStepParameters(CALLER, cid, 0, 1)["Value"] | {
        "retryAfter": answer["Value"]["retryAfter"]}
    assert answer["Value"]["action"] == "wait" and answer["Value"]["retryAfter"] >= 1.0
    service.watch.stop()


def test_a_worker_with_work_to_do_is_never_held(service):
    cid = new_calibration(service.db)
    began = time.monotonic()
    answer = service.waitForNextStep(CALLER, cid, 1, 0)
    assert time.monotonic() - began < 0.5 and answer["Value"]["action"] == "run"


def test_the_answers_of_all_woken_workers_are_prepared_once(db, monkeypatch):
    """Four workers wait for step 2; the close wakes them with one prepared answer each, made by
    one call that reads the step once and writes all four rows (as step_parameters would)."""
    cid = new_calibration(db, workers=4)
    prepared = []

    def answers(calibrationID, workerIDs):
        prepared.append(list(workerIDs))
        return logic.woken_answers(db, calibrationID, workerIDs)

    watch = StepWatch(db.getProgress, capacity=10, interval=INTERVAL, answer=answers).start()
    service = CalibrationService(db, watch=watch, holdSeconds=30.0)
    try:
        for worker in range(4):
            db.addResult(cid, 1, worker, {"phases": {"1.0": {}}})
            db.updateWorker(cid, worker, LastStep=1)
        held = [in_thread(service.waitForNextStep, CALLER, cid, worker, 1) for worker in range(4)]
        time.sleep(3 * INTERVAL)
        constants = {**db.getStep(cid, 1)["Constants"], "CalibrECAL": [40.0, 40.0]}

        def next_step(calibration, step, stored):
            return StepClose(outcome={}, state=calibration["State"], status="running", reason="", stage=1,
                             phase=0, nextStep=2, nextPhases=["1.0"], nextConstants=constants, nextInputs={},
                             files={})

        db.updateWorker(cid, 3, Status="dead")  # the agent gave worker 3 up while it was held
        assert db.closeStep(cid, 1, next_step) is not None
        for thread, _ in held:
            thread.join(10.0)
    finally:
        watch.stop()
    assert prepared == [[0, 1, 2, 3]]
    answers_ = [box["value"]["Value"] for _, box in held[:3]]
    assert all(a["action"] == "run" and a["step"] == 2 and a["constants"] == constants for a in answers_)
    rows = db.getWorkers(cid)
    assert all(w["Status"] == "running" and w["ApplicationStatus"] == answers_[0]["applicationStatus"]
               for w in rows[:3])
    refused = held[3][1]["value"]
    assert not refused["OK"] and "a worker that was given up gets no more work" in refused["Message"]
    assert rows[3]["Status"] == "dead"


# ------------------------------------------------------------------------------------ capacity
def options(**values):
    return lambda name, default: values.get(name.replace("/", "_"), default)


def test_the_service_holds_no_more_calls_than_dirac_lets_it_run_at_once():
    from ILCDIRAC.CalibrationSystem.Service.CalibrationHandler import FREE_THREADS, hold_capacity

    template = dict(MaxHeldCalls=1000, MaxThreads=1040, MaxWaitingPetitions=1040, ThreadLimit_RPC_waitForNextStep=1000)
    assert hold_capacity(options(**template)) == 1000
    # DIRAC's defaults (15 threads, 100 waiting petitions, 15 per method): nothing can be held
    assert hold_capacity(options(MaxHeldCalls=1000)) == 0
    assert hold_capacity(options(**{**template, "MaxThreads": 500})) == 500 - FREE_THREADS
    assert hold_capacity(options(**{**template, "MaxWaitingPetitions": 300})) == 300 - FREE_THREADS
    # ThreadLimit below 1 is no per-method limit in DIRAC
    assert hold_capacity(options(**{**template, "ThreadLimit_RPC_waitForNextStep": 0, "MaxHeldCalls": 2000})) == 1020
    assert hold_capacity(options(**{**template, "MaxHeldCalls": 0})) == 0


def test_a_newer_call_of_the_same_worker_replaces_its_held_call(db, watch):
    """One held call per worker: a user cannot fill the service's threads with one worker ID,
    and a worker whose connection broke is held again when it asks again."""
    cid = new_calibration(db)
    first = in_thread(watch.hold, cid, Progress(1, ended=False), 30.0, 0)
    time.sleep(2 * INTERVAL)
    second = in_thread(watch.hold, cid, Progress(1, ended=False), 30.0, 0)
    other = in_thread(watch.hold, cid, Progress(1, ended=False), 30.0, 1)
    first[0].join(5.0)
    assert first[1]["value"] is None and first[1]["after"] < 1.0, "the older call is let go at once"
    time.sleep(2 * INTERVAL)
    assert second[0].is_alive() and other[0].is_alive() and watch.held == 2
    logic.kill_calibration(db, CALLER, cid)
    for thread, box in (second, other):
        thread.join(5.0)
        assert box["value"] is MOVED
