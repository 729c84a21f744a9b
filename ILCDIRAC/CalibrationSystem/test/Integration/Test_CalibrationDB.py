"""CalibrationDB on the real MariaDB (and the embedded SQLite default): nothing lost, nothing twice."""
import threading

import pytest

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB, CalibrationDBError, StepClose, mysql_url
from ILCDIRAC.CalibrationSystem.localdirac import mariadb
from ILCDIRAC.CalibrationSystem.logic.calibrations import kill_calibration
from ILCDIRAC.CalibrationSystem.logic.supervision import fail_calibration
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import require_mariadb
from ILCDIRAC.CalibrationSystem.Utilities.lifecycle import IllegalTransition
from ILCDIRAC.CalibrationSystem.Utilities.procedure import ProcedureState, start
from ILCDIRAC.CalibrationSystem.Utilities.validation import Caller
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus, WorkerStatus


@pytest.fixture(params=["mariadb", "sqlite"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'calibration.sqlite'}"
        return
    require_mariadb()
    name = mariadb.create_database("CalibDBUnit")
    try:
        yield mysql_url(mariadb.HOST, mariadb.PORT, mariadb.USER, mariadb.PASSWORD, name)
    finally:
        mariadb.drop_database(name)


def new_calibration(db, workers=4, needed=3):
    return db.insertCalibration(
        ownerDN="/CN=alice", owner="alice", ownerGroup="calibration_user", settings={"numberOfJobs": workers},
        state={"step": 1}, stage=1, phase=0, phases=["1.0"], constants={"CalibrECAL": [37.5, 37.5]},
        numberOfWorkers=workers, resultsNeeded=needed, backend="local", inputFiles={"steering.xml": b"<marlin/>"},
    )


def decision(stored, nextStep=2):
    return StepClose(
        outcome={"workers": [w for w, _ in stored]}, state={"step": nextStep}, status="running", reason="",
        stage=1, phase=0, nextStep=nextStep, nextPhases=["1.0"], nextConstants={"CalibrECAL": [40.0, 40.0]},
        nextInputs={}, files={"note.txt": b"closed"},
    )


def test_create_and_read_back(url):
    db = CalibrationDB(url)
    cid = new_calibration(db)
    row = db.getCalibration(cid)
    assert (row["Owner"], row["Status"], row["Step"], row["ResultsNeeded"]) == ("alice", "running", 1, 3)
    assert db.getStep(cid, 1)["Constants"] == {"CalibrECAL": [37.5, 37.5]}
    assert [w["Status"] for w in db.getWorkers(cid)] == ["created"] * 4
    assert db.getFile(cid, "steering.xml") == b"<marlin/>"
    with pytest.raises(CalibrationDBError, match="does not exist"):
        db.getCalibration(cid + 1000)


def test_results_are_committed_once_and_only_while_the_step_is_open(url):
    db = CalibrationDB(url)
    cid = new_calibration(db)
    assert db.addResult(cid, 1, 0, {"v": 0}) == ("accepted", 1, 3)
    # acknowledged means durable: a second, independent engine (another service process) sees it
    assert CalibrationDB(url).getResults(cid, 1) == [(0, {"v": 0})]
    assert db.addResult(cid, 1, 0, {"v": "again"}) == ("duplicate", 1, 3)
    assert db.getResults(cid, 1) == [(0, {"v": 0})]
    db.addResult(cid, 1, 2, {"v": 2})
    assert db.closeStep(cid, 1, lambda c, s, stored: decision(stored)) is not None
    assert db.addResult(cid, 1, 3, {"v": 3})[0] == "closed"
    assert [w for w, _ in db.getResults(cid, 1)] == [0, 2]
    assert db.getStep(cid, 2)["Status"] == "open"


def test_a_failing_close_changes_nothing(url):
    db = CalibrationDB(url)
    cid = new_calibration(db)
    for worker in range(3):
        db.addResult(cid, 1, worker, {"v": worker})

    def explode(calibration, step, stored):
        raise RuntimeError("estimator crashed")

    with pytest.raises(RuntimeError):
        db.closeStep(cid, 1, explode)
    assert db.getStep(cid, 1)["Status"] == "open"
    assert db.getCalibration(cid)["Step"] == 1
    assert db.readySteps() == [(cid, 1)]
    assert db.closeStep(cid, 1, lambda c, s, stored: decision(stored)).outcome == {"workers": [0, 1, 2]}


def test_two_service_processes_close_a_step_exactly_once_while_reports_race(url):
    """Two engines (as two service replicas) race to close while late workers keep reporting:
    exactly one close happens, and the results it used are exactly those that were counted."""
    first, second = CalibrationDB(url), CalibrationDB(url)
    cid = new_calibration(first, workers=12, needed=6)
    for worker in range(6):
        first.addResult(cid, 1, worker, {"v": worker})
    decisions, verdicts, errors = [], {}, []
    barrier = threading.Barrier(8)

    def closer(db):
        try:
            barrier.wait()
            result = db.closeStep(cid, 1, lambda c, s, stored: decision(stored))
            if result is not None:
                decisions.append(result)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reporter(db, worker):
        try:
            barrier.wait()
            verdicts[worker] = db.addResult(cid, 1, worker, {"v": worker})[0]
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=closer, args=(db,)) for db in (first, second, first, second)]
    threads += [threading.Thread(target=reporter, args=(db, w)) for db, w in zip((first, second) * 2, range(6, 10), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(decisions) == 1
    used = decisions[0].outcome["workers"]
    accepted = sorted(w for w, v in verdicts.items() if v == "accepted")
    assert used == list(range(6)) + accepted
    assert all(v in ("accepted", "closed") for v in verdicts.values())
    assert first.getStep(cid, 1)["NResults"] == len(used)
    assert [s["Step"] for s in second.getSteps(cid)] == [1, 2]


def test_results_for_an_ended_calibration_are_not_stored(url):
    db = CalibrationDB(url)
    cid = new_calibration(db)
    db.addResult(cid, 1, 0, {"v": 0})
    assert db.setCalibrationStatus(cid, "killed", "killed by alice")
    assert db.addResult(cid, 1, 1, {"v": 1})[0] == "ended"
    assert [w for w, _ in db.getResults(cid, 1)] == [0]
    assert db.getStep(cid, 1)["NResults"] == 1


# ------------------------------------------------------------------------------------ claims
def test_claims_race_exactly_one_closer_of_many_replicas_commits(url):
    """Eight closers on two engines (two service replicas) claim the same ready step at once:
    one claim succeeds, the rest get None, and only the claimer can commit."""
    first, second = CalibrationDB(url), CalibrationDB(url)
    cid = new_calibration(first, workers=4, needed=2)
    first.addResult(cid, 1, 0, {"v": 0})
    first.addResult(cid, 1, 1, {"v": 1})
    barrier, claims, errors = threading.Barrier(8), [], []

    def claimer(db, n):
        try:
            barrier.wait()
            claims.append((db, db.claimStep(cid, 1, f"replica-{n}")))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(db, n)) for n, db in enumerate((first, second) * 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    won = [(db, token) for db, token in claims if token is not None]
    assert len(won) == 1 and len(claims) == 8
    step = second.getStep(cid, 1)
    assert (step["Status"], step["ClaimedBy"], step["CloseAttempts"]) == ("closing", won[0][1], 1)
    assert not first.commitClose(cid, 1, "replica-9:not-a-claim", decision([]))
    assert won[0][0].commitClose(cid, 1, won[0][1], decision([(0, None), (1, None)]))
    assert [s["Status"] for s in first.getSteps(cid)] == ["closed", "open"]
    assert not won[0][0].commitClose(cid, 1, won[0][1], decision([])), "a claim commits once"


def test_the_close_computes_without_holding_a_lock(url):
    """While the closer computes, a late report gets its 'closed' answer and a poll its
    progress at once (they would wait for the lock if the close held one)."""
    db, other = CalibrationDB(url), CalibrationDB(url)
    cid = new_calibration(db, workers=4, needed=2)
    db.addResult(cid, 1, 0, {"v": 0})
    db.addResult(cid, 1, 1, {"v": 1})
    computing, answered, verdicts = threading.Event(), threading.Event(), []

    def slow_decide(calibration, step, stored):
        computing.set()
        assert answered.wait(30), "the late report waited for the close"
        return decision(stored)

    closer = threading.Thread(target=lambda: verdicts.append(db.closeStep(cid, 1, slow_decide)))
    closer.start()
    assert computing.wait(30)
    verdicts.append(other.addResult(cid, 1, 2, {"v": 2})[0])
    verdicts.append(other.getStepProgress(cid, 1)["Status"])
    answered.set()
    closer.join(60)
    assert verdicts[:2] == ["closed", "closing"]
    assert verdicts[2].outcome == {"workers": [0, 1]}
    assert [w for w, _ in db.getResults(cid, 1)] == [0, 1], "the late report was not stored"


def test_a_dead_closers_claim_is_taken_over_after_the_timeout(url):
    db, replica = CalibrationDB(url), CalibrationDB(url)
    cid = new_calibration(db, workers=4, needed=1)
    db.addResult(cid, 1, 0, {"v": 0})
    dead = db.claimStep(cid, 1, "host:1:1")
    assert dead is not None
    assert replica.readySteps(claimTimeout=300) == [], "a fresh claim is not ready for anyone else"
    assert replica.claimStep(cid, 1, "host:2:1", claimTimeout=300) is None
    # a negative timeout makes every claim stale at once (as the clock would after the timeout)
    assert replica.readySteps(claimTimeout=-1) == [(cid, 1)]
    result = replica.closeStep(cid, 1, lambda c, s, stored: decision(stored), claimTimeout=-1)
    assert result is not None and db.getStep(cid, 1)["CloseAttempts"] == 2
    assert not db.commitClose(cid, 1, dead, decision([])), "the dead closer's late commit changes nothing"
    assert [s["Step"] for s in db.getSteps(cid)] == [1, 2]
    assert db.getCalibration(cid)["Step"] == 2


def test_a_failed_close_hands_the_step_back_with_its_error_and_attempt_count(url):
    db = CalibrationDB(url)
    cid = new_calibration(db, workers=4, needed=1)
    db.addResult(cid, 1, 0, {"v": 0})

    def explode(calibration, step, stored):
        raise ValueError("no K0L peak")

    with pytest.raises(ValueError):
        db.closeStep(cid, 1, explode)
    step = db.getStep(cid, 1)
    assert (step["Status"], step["ClaimedBy"], step["CloseAttempts"]) == ("open", None, 1)
    assert step["CloseError"] == "ValueError: no K0L peak"
    seen = []
    assert db.closeStep(cid, 1, lambda c, s, stored: seen.append(s["CloseAttempts"]) or decision(stored))
    assert seen == [2]


def test_a_close_for_a_calibration_killed_meanwhile_commits_nothing(url):
    db = CalibrationDB(url)
    cid = new_calibration(db, workers=4, needed=1)
    db.addResult(cid, 1, 0, {"v": 0})
    token = db.claimStep(cid, 1, "host:1:1")
    db.setCalibrationStatus(cid, "killed", "killed by alice")
    assert not db.commitClose(cid, 1, token, decision([]))
    assert db.getCalibration(cid)["Status"] == "killed"
    assert [s["Step"] for s in db.getSteps(cid)] == [1]
    assert db.readySteps(claimTimeout=-1) == []


def test_a_database_made_before_claims_gets_the_claim_columns(url):
    db = CalibrationDB(url)
    cid = new_calibration(db, workers=4, needed=1)
    db.addResult(cid, 1, 0, {"v": 0})
    with db.engine.begin() as conn:
        for column in ("ClaimedBy", "ClaimedAt", "CloseAttempts", "CloseError"):
            conn.exec_driver_sql(f"ALTER TABLE Steps DROP COLUMN {column}")
    upgraded = CalibrationDB(url)
    assert upgraded.getStep(cid, 1)["CloseAttempts"] == 0
    assert upgraded.closeStep(cid, 1, lambda c, s, stored: decision(stored)).outcome == {"workers": [0]}
    assert upgraded.getStep(cid, 1)["CloseAttempts"] == 1


def running_calibration(db):
    """A calibration whose stored state is a real procedure state, as the service creates it."""
    state = start(["1.0", "1.1"], {"CalibrECAL": [37.5, 37.5]}, "fast", 5)
    return db.insertCalibration(
        ownerDN="/CN=alice", owner="alice", ownerGroup="calibration_user", settings={"numberOfJobs": 2},
        state=state.to_dict(), stage=1, phase=0, phases=state.active, constants=state.constants,
        numberOfWorkers=2, resultsNeeded=2, backend="local", inputFiles={},
    )


@pytest.mark.parametrize("end", ["kill", "fail"])
def test_a_killed_or_failed_calibration_says_so_in_its_stored_state_too(url, end):
    db = CalibrationDB(url)
    cid = running_calibration(db)
    alice = Caller(dn="/CN=alice", username="alice", group="calibration_user", properties=frozenset())
    if end == "kill":
        assert kill_calibration(db, alice, cid)
        expected = (CalibrationStatus.KILLED, "killed by alice")
    else:
        assert fail_calibration(db, cid, "only 1 of 2 workers are left")
        expected = (CalibrationStatus.FAILED, "only 1 of 2 workers are left")
    row = db.getCalibration(cid)
    state = ProcedureState.from_dict(row["State"])
    assert (row["Status"], row["Reason"]) == expected
    assert (state.status, state.reason) == expected
    assert not db.setCalibrationStatus(cid, CalibrationStatus.FAILED, "again")
    assert (db.getCalibration(cid)["Status"], ProcedureState.from_dict(db.getCalibration(cid)["State"]).status) == (
        expected[0], expected[0])


def test_a_worker_status_change_its_lifecycle_forbids_stores_nothing(url):
    db = CalibrationDB(url)
    cid = running_calibration(db)
    db.updateWorkers(cid, {0: {"Status": WorkerStatus.DEAD, "ApplicationStatus": "given up"}})
    before = db.getWorkers(cid)
    with pytest.raises(IllegalTransition, match="worker 0 of calibration .* cannot go from dead to running"):
        db.updateWorkers(cid, {1: {"Status": WorkerStatus.RUNNING}, 0: {"Status": WorkerStatus.RUNNING}})
    assert db.getWorkers(cid) == before
    assert [w["Status"] for w in before] == [WorkerStatus.DEAD, WorkerStatus.CREATED]


def test_an_update_naming_a_worker_the_calibration_lacks_stores_nothing(url):
    db = CalibrationDB(url)
    cid = new_calibration(db, workers=2)
    before = db.getWorkers(cid)
    for values in ({"Status": WorkerStatus.SUBMITTED}, {"ApplicationStatus": "hello"}):
        with pytest.raises(CalibrationDBError, match=f"calibration {cid} has no worker 7"):
            db.updateWorkers(cid, {0: values, 7: values, 1: values})
    assert db.getWorkers(cid) == before


def test_a_database_of_an_earlier_version_gets_the_notification_column_and_keeps_its_rows(url):
    db = CalibrationDB(url)
    cid = new_calibration(db)
    with db.engine.begin() as conn:  # the table as the version before end-of-calibration mails made it
        conn.exec_driver_sql("ALTER TABLE Calibrations DROP COLUMN NotificationTime")
    db.engine.dispose()
    upgraded = CalibrationDB(url)
    assert upgraded.getCalibration(cid)["NotificationTime"] is None
    assert upgraded.getCalibration(cid)["Owner"] == "alice"
    assert not upgraded.claimNotification(cid)  # still running: nothing to tell
    assert upgraded.setCalibrationStatus(cid, CalibrationStatus.FAILED, "because")
    assert upgraded.claimNotification(cid) and not upgraded.claimNotification(cid)  # once
    upgraded.releaseNotification(cid)
    assert upgraded.claimNotification(cid)
    CalibrationDB(url)  # a second start (or replica) finds the column there and changes nothing
    assert upgraded.getCalibration(cid)["NotificationTime"] is not None
