"""Issue 4's proof: calibrations survive trouble on the local test bed, with real processes.

(a) workers killed with SIGKILL in the middle of a step are resubmitted by the agent;
(b) the service killed with SIGKILL in the middle of a step and restarted: the calibration ends
    with exactly the constants of an undisturbed run, and no acknowledged result is missing;
(c) a quarter of the workers hang for ever: with threshold 0.75 every step still closes, with
    0.9 the calibration fails with a clear reason instead of waiting for ever;
(d) two users' calibrations run at once on one service without touching each other.
Worker hangs and slow steps come from a wrapper around the emulator given as marlinExecutable,
the way a broken node or a slow site would look to the system.

Nothing here races a timer: the tests wait on conditions (a gate file the fake Marlin waits for,
the workers' own logs, the database) and assert only what the system guarantees, so they hold on
a loaded machine. The stall timeout is far above a healthy step's run time, so only a worker that
really hangs is ever taken for stalled.
"""
import os
import re
import signal
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.localdirac.scenario import BIN, Scenario, shifted_truth
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import FAST_WORKERS, require_mariadb

TRUTH = {"CalibrECAL": 1.15, "ECALEndcapCorrectionFactor": 0.96}
SAMPLES = {"gamma": (4, 400)}
#: seconds without contact before the agent takes a running worker for stalled: many times a
#: healthy step's Marlin run here (a few seconds), so only the hanging workers of (c) cross it
STALL_TIMEOUT = 20


@pytest.fixture(scope="module")
def bed():
    require_mariadb()
    agent = {"StallTimeout": STALL_TIMEOUT, "DeleteAfterDays": 30}
    with Testbed(service_options=FAST_WORKERS, agent_options=agent, polling_time=1) as testbed:
        testbed.start_service()
        testbed.start_agent()
        yield testbed


def wrapper(folder: Path, *, delay: float = 0.0, hangWorkers: tuple[int, ...] = (), gate: Path | None = None) -> str:
    """A marlinExecutable: the emulator after ``delay`` seconds; workers in ``hangWorkers`` never return.

    With a ``gate`` each run first leaves ``marlin.started`` in its worker folder, then waits until
    the gate file exists: the test knows every worker is mid-step and none can report before it opens."""
    hang = "|".join(f"*/worker_{w}" for w in hangWorkers) or "/nonexistent"
    wait = f'touch "$PWD/marlin.started"; while [ ! -e "{gate}" ]; do sleep 0.1; done' if gate else ""
    script = folder / "marlin.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        case "$PWD" in {hang}) exec sleep 100000 ;; esac
        {wait}
        sleep {delay}
        exec {BIN / 'marlin-emulator'} "$@"
        """))
    script.chmod(0o755)
    return str(script)


def scenario(bed, folder: Path, user="alice", truth=None, **settings) -> Scenario:
    values = {"numberOfJobs": 4, "phaseSequence": ["1.0"], "strategy": "legacy", "maxResubmissionsPerWorker": 1}
    values.update(settings)
    return Scenario(bed, folder, truth or shifted_truth("FCCee_o1_v04", TRUTH), SAMPLES, values, user=user)


def wait_until(condition, timeout, message):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message())
        time.sleep(0.2)


def worker_pids(bed, calibrationID):
    return {w["WorkerID"]: int(w["JobID"].split(":")[1]) for w in CalibrationDB(bed.db_url).getWorkers(calibrationID)}


def test_a_workers_killed_mid_step_are_resubmitted_and_the_calibration_finishes(bed, tmp_path):
    # every step needs all four results, so the steps close only if the killed workers come back;
    # a spare resubmission each keeps a slow node's second job from deciding the outcome
    gate = tmp_path / "gate"
    run = scenario(bed, tmp_path, marlinExecutable=wrapper(tmp_path, gate=gate),
                   fractionOfFinishedJobsNeededToStartNextStep=1.0, maxResubmissionsPerWorker=2)
    calibrationID = run.submit()
    db = CalibrationDB(bed.db_url)
    started = [tmp_path / "work" / f"calibration_{calibrationID}" / f"worker_{w}" / "marlin.started" for w in range(4)]
    wait_until(lambda: all(marker.exists() for marker in started), 120, lambda: run.logs(calibrationID))
    victims = [1, 2]
    pids = worker_pids(bed, calibrationID)
    for worker in victims:
        os.killpg(pids[worker], signal.SIGKILL)
    assert db.getStep(calibrationID, 1)["NResults"] == 0  # every worker is held in Marlin by the gate
    gate.touch()
    status = run.wait(calibrationID, timeout=300)
    assert status["status"] == "finished", run.logs(calibrationID)
    workers = {w["WorkerID"]: w for w in db.getWorkers(calibrationID)}
    for worker in victims:
        assert workers[worker]["Resubmissions"] >= 1, workers[worker]
        assert workers[worker]["JobID"] != f"local:{pids[worker]}"
    assert all(w["Resubmissions"] <= 2 for w in workers.values()), workers
    # the resubmitted workers rejoined: every closed step holds a result of every worker
    steps = db.getSteps(calibrationID)
    assert all(sorted(s["Outcome"]["workers"]) == [0, 1, 2, 3] for s in steps), [s["Outcome"] for s in steps]
    truth = run.truth.trueConstants
    assert status["constants"]["CalibrECAL"][0] == pytest.approx(truth.CalibrECAL[0], rel=0.05)


def acknowledged(folder: Path, calibrationID: int) -> set[tuple[int, int]]:
    """(step, worker) pairs the service acknowledged, from the workers' own logs."""
    seen = set()
    for log in (folder / "work" / f"calibration_{calibrationID}").glob("worker_*/worker.log"):
        worker = int(log.parent.name.split("_")[1])
        for step, verdict in re.findall(r"step (\d+) submitted: (\w+)", log.read_text()):
            if verdict in ("accepted", "duplicate"):
                seen.add((int(step), worker))
    return seen


def retries(folder: Path, calibrationID: int) -> int:
    """How often the workers found the service unreachable and retried, from their own logs."""
    logs = (folder / "work" / f"calibration_{calibrationID}").glob("worker_*/worker.log")
    return sum(len(re.findall(r"call failed, retrying \w+ \(.*\) in", log.read_text())) for log in logs)


def test_b_a_killed_and_restarted_service_changes_nothing(bed, tmp_path):
    settings = {"fractionOfFinishedJobsNeededToStartNextStep": 1.0, "phaseSequence": ["1.0", "1.1", "1.2"],
                "strategy": "legacy"}
    samples = {"gamma": (4, 400), "kaon": (4, 300), "muon": (4, 200)}
    undisturbed = scenario(bed, tmp_path / "undisturbed", marlinExecutable=wrapper(tmp_path / "undisturbed", delay=0.5),
                           **settings)
    undisturbed.samples = samples
    reference = undisturbed.wait(undisturbed.submit(), timeout=300)
    assert reference["status"] == "finished", undisturbed.logs(reference["calibrationID"])

    disturbed = scenario(bed, tmp_path / "disturbed", marlinExecutable=wrapper(tmp_path / "disturbed", delay=0.5),
                         **settings)
    disturbed.samples = samples
    calibrationID = disturbed.submit()
    db = CalibrationDB(bed.db_url)
    # kill the service while step 2 is being reported: some results are in, the step is open
    wait_until(lambda: db.getCalibration(calibrationID)["Step"] >= 2 and db.getStep(calibrationID, 2)["NResults"] >= 1,
               120, lambda: disturbed.logs(calibrationID))
    before = retries(disturbed.folder, calibrationID)
    bed.kill_service(signal.SIGKILL)
    # restart only once a worker has run into the dead service
    wait_until(lambda: retries(disturbed.folder, calibrationID) > before, 60, lambda: disturbed.logs(calibrationID))
    bed.restart_service()
    status = disturbed.wait(calibrationID, timeout=300)
    assert status["status"] == "finished", disturbed.logs(calibrationID)
    # identical constants: the same events, every worker's result, merged in worker order
    assert status["constants"] == reference["constants"]
    assert status["step"] == reference["step"]
    stored = {(s["Step"], w) for s in db.getSteps(calibrationID) for w, _ in db.getResults(calibrationID, s["Step"])}
    acked = acknowledged(disturbed.folder, calibrationID)
    assert acked and acked <= stored
    assert all(s["NResults"] == 4 for s in db.getSteps(calibrationID))


def test_c_hanging_workers_below_the_threshold_do_not_stop_the_steps(bed, tmp_path):
    run = scenario(bed, tmp_path, marlinExecutable=wrapper(tmp_path, hangWorkers=(0,)),
                   fractionOfFinishedJobsNeededToStartNextStep=0.75)
    calibrationID = run.submit()
    status = run.wait(calibrationID, timeout=180)
    assert status["status"] == "finished", run.logs(calibrationID)
    steps = CalibrationDB(bed.db_url).getSteps(calibrationID)
    assert all(0 not in s["Outcome"]["workers"] and s["NResults"] == 3 for s in steps)
    # the agent kills what still hangs once the calibration is over
    wait_until(lambda: not _hanging(tmp_path), 60, lambda: f"hanging processes left: {_hanging(tmp_path)}")


def test_c_hanging_workers_above_the_threshold_fail_the_calibration_with_the_reason(bed, tmp_path):
    run = scenario(bed, tmp_path, marlinExecutable=wrapper(tmp_path, hangWorkers=(0,)),
                   fractionOfFinishedJobsNeededToStartNextStep=0.9)
    calibrationID = run.submit()
    status = run.wait(calibrationID, timeout=240)
    assert status["status"] == "failed", run.logs(calibrationID)
    assert status["reason"].startswith("only 3 of 4 workers are left"), status["reason"]
    assert "needs 4 results" in status["reason"]
    db = CalibrationDB(bed.db_url)
    # the agent records the kill of the hanging job in the same cycle, right after failing it
    wait_until(lambda: db.getWorker(calibrationID, 0)["Status"] in ("dead", "killed"), 30,
               lambda: str(db.getWorker(calibrationID, 0)))
    assert db.getWorker(calibrationID, 0)["Resubmissions"] == 1
    wait_until(lambda: not _hanging(tmp_path), 60, lambda: f"hanging processes left: {_hanging(tmp_path)}")


def _hanging(folder: Path) -> list[int]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            if process.info["cmdline"] and process.info["cmdline"][:1] == ["sleep"] and str(folder) in (process.cwd() or ""):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def test_d_two_users_calibrate_at_once_without_touching_each_other(bed, tmp_path):
    aliceTruth = shifted_truth("FCCee_o1_v04", {"CalibrECAL": 1.15})
    bobTruth = shifted_truth("FCCee_o1_v04", {"CalibrECAL": 0.88})
    alice = scenario(bed, tmp_path / "alice", user="alice", truth=aliceTruth, strategy="fast")
    bob = scenario(bed, tmp_path / "bob", user="bob", truth=bobTruth, strategy="fast")
    aliceID, bobID = alice.submit(), bob.submit()
    aliceStatus, bobStatus = alice.wait(aliceID, timeout=180), bob.wait(bobID, timeout=180)
    assert aliceStatus["status"] == bobStatus["status"] == "finished"
    assert aliceStatus["owner"] == "alice" and bobStatus["owner"] == "bob"
    assert aliceStatus["constants"]["CalibrECAL"][0] == pytest.approx(aliceTruth.trueConstants.CalibrECAL[0], rel=0.05)
    assert bobStatus["constants"]["CalibrECAL"][0] == pytest.approx(bobTruth.trueConstants.CalibrECAL[0], rel=0.05)
    assert aliceID not in {row["calibrationID"] for row in bed.rpc("bob").getCalibrationStatus([])["Value"]}
    assert not bed.rpc("bob").getCalibrationStatus([aliceID])["OK"]
    assert not bed.rpc("alice").getCalibrationHistory(bobID)["OK"]
    # on this single-user installation the agent copies each local calibration's results below
    # its own folder (a grid outputPath would take them to the owner's grid user folder): the
    # ready-to-run folder (phase 1.0 only: with the user's own photon likelihood)
    expected = {"constants.json", "history.json", "steering.xml", "convergence.png", "constants.png", "workers.png",
                "PandoraSettings/PandoraSettingsDefault.xml", "PandoraSettings/PandoraLikelihoodData9EBin.xml"}
    for calibrationID in (aliceID, bobID):
        delivered = bed.local_dir / "results" / f"calibration_{calibrationID}"
        wait_until(lambda folder=delivered: _files(folder) == expected, 60,
                   lambda folder=delivered: f"{folder}: {sorted(_files(folder))}")
        assert (delivered / "convergence.png").read_bytes().startswith(b"\x89PNG")


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
