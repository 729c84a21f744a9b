"""CalibrationDB on the real MariaDB (and the embedded SQLite default): nothing lost, nothing twice."""
import threading

import pytest

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB, CalibrationDBError, StepClose, mysql_url
from ILCDIRAC.CalibrationSystem.localdirac import mariadb
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import require_mariadb


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
    assert upgraded.setCalibrationStatus(cid, "failed", "because")
    assert upgraded.claimNotification(cid) and not upgraded.claimNotification(cid)  # once
    upgraded.releaseNotification(cid)
    assert upgraded.claimNotification(cid)
    CalibrationDB(url)  # a second start (or replica) finds the column there and changes nothing
    assert upgraded.getCalibration(cid)["NotificationTime"] is not None
