"""Issue 11: the ``dirac`` backend end to end on a real DIRAC WMS (``Testbed(wms=True)``).

alice runs ``dirac-clic-calibration-submit`` with her ilc_user proxy; the four workers are real
iLCDirac user jobs (``UserJob`` + ``GenericApplication`` depending on Marlin, through
``DiracILC``), optimized, matched by the pilot and run by DIRAC's JobWrapper with her proxy from
the ProxyManager; each worker finds Marlin (the emulator in the CVMFS stand-in) through
iLCDirac's ``getEnvironmentScript``, downloads its sample files (LFNs on the test bed's storage
element) through the DataManager, and reports its ApplicationStatus through ``JobReport``.

While it runs, alice kills one worker's job with ``dirac-wms-job-kill`` and a worker's payload is
SIGKILLed on its node: the Calibration agent (host certificate, acting with alice's proxy from the
ProxyManager) sees the job states in JobMonitoring and resubmits each of these workers once, at
the current step. With the threshold at 1.0 every step merges all four workers' reports, so the
calibration must end with exactly the constants of the same calibration on the local backend
(same sample files, same settings), which runs beside it. The agent then delivers the results to
alice's ``outputPath`` on the storage element. A second calibration is killed while its jobs wait
for a pilot: the agent kills them in the WMS.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest

from ILCDIRAC.CalibrationSystem.Client.Backends import job_group, job_name
from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.localdirac import mariadb, wms
from ILCDIRAC.CalibrationSystem.localdirac.configurations import ACCURACY, CONFIGURATIONS, SAMPLES
from ILCDIRAC.CalibrationSystem.localdirac.scenario import Scenario
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed
from ILCDIRAC.CalibrationSystem.test.grid import (
    GridScenario,
    application_statuses,
    job_attributes,
    job_states,
    payload_process,
    stable_final_state,
    wait_for,
)
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import FAST_WORKERS, require_mariadb

CLD = next(c for c in CONFIGURATIONS if c.name == "CLD")
WORKERS = 4
#: The delivered folder: the result files and the ready-to-run steering folder (its Pandora files below).
RESULT_FILES = ["constants.json", "constants.png", "convergence.png", "history.json", "steering.xml", "workers.png"]
#: Generous limits for a shared 2-core machine; nothing here waits for a fixed time.
CALIBRATION_TIMEOUT = 900
JOB_TIMEOUT = 180
#: Samples of calibrations that are killed or cut short: only their jobs matter.
FEW_SAMPLES = {"gamma": (1, 50), "kaon": (1, 50), "muon": (1, 50), "zuds": (1, 10)}


@pytest.fixture(scope="module")
def grid():
    """A test bed with the Calibration service and agent and a running WMS (start-up time measured)."""
    require_mariadb()
    started = time.monotonic()
    with Testbed(wms=True, service_options=FAST_WORKERS) as testbed:
        testbed.start_service()
        testbed.start_wms()
        testbed.start_agent()
        testbed.startup_seconds = time.monotonic() - started
        yield testbed


@pytest.fixture(scope="module")
def run(grid, tmp_path_factory):
    """The grid calibration with a job killed and a payload SIGKILLed, and the local one beside it."""
    settings = {"numberOfJobs": WORKERS, "strategy": "fast", "fractionOfFinishedJobsNeededToStartNextStep": 1.0,
                **ACCURACY, **CLD.settings}
    scenario = GridScenario(grid, tmp_path_factory.mktemp("grid"), CLD.truth(), SAMPLES, settings)
    submitted = time.monotonic()
    calibrationID = scenario.submit()
    local = Scenario(grid, scenario.folder, CLD.truth(), SAMPLES, settings)
    done = local.run_command("dirac-clic-calibration-submit", "--workdir", str(scenario.folder / "work"),
                             str(scenario.local_settings()))
    assert done.returncode == 0, done.stderr
    localID = int(done.stdout.split()[-1])
    original = {w["WorkerID"]: w["JobID"] for w in scenario.workers(calibrationID)}

    def evidence():
        return scenario.logs(calibrationID)

    # alice kills worker 1's job while it computes a step (after the first step)
    def computing(workerID):
        def check():
            status = scenario.status(calibrationID)
            worker = next(w for w in scenario.workers(calibrationID) if w["WorkerID"] == workerID)
            state = job_states(grid, [worker["JobID"]])[int(worker["JobID"])]
            running = state["Status"] == "Running" and state["ApplicationStatus"].startswith("Running: stage")
            return status["step"] >= 2 and running and (worker["JobID"], status["step"])
        return check

    killedJob, killedAt = wait_for(computing(1), CALIBRATION_TIMEOUT, "worker 1 computing a step", evidence)
    kill = subprocess.run([str(grid.bin_dir / "dirac-wms-job-kill"), killedJob], env=grid.env("alice"),
                          capture_output=True, text=True, timeout=120)
    assert kill.returncode == 0, kill.stdout + kill.stderr
    # the killed job flickers on its way; it settles as Failed ("Received Kill signal") or Killed
    flicker: list[str] = []
    killedFinal = stable_final_state(grid, killedJob, JOB_TIMEOUT, seen=flicker)
    print(f"job {killedJob} killed with dirac-wms-job-kill, states seen every second: {flicker}")

    # worker 2's payload dies on its node (the OOM killer, say) at a later step
    sigkilledJob, sigkilledAt = wait_for(
        lambda: (c := computing(2)()) and c[1] > killedAt and payload_process(grid, c[0]) and c,
        CALIBRATION_TIMEOUT, "worker 2 computing a later step", evidence, interval=0.5,
    )
    process = payload_process(grid, sigkilledJob)
    process.send_signal(signal.SIGKILL)
    sigkilledFinal = stable_final_state(grid, sigkilledJob, JOB_TIMEOUT)

    status = scenario.wait(calibrationID, timeout=CALIBRATION_TIMEOUT)
    elapsed = time.monotonic() - submitted
    database = CalibrationDB(grid.db_url)
    delivered = wait_for(lambda: database.getCalibration(calibrationID)["DeliveryReport"], JOB_TIMEOUT,
                         "results delivered", evidence)
    localStatus = local.wait(localID, timeout=CALIBRATION_TIMEOUT)
    workers = scenario.workers(calibrationID)
    return {
        "scenario": scenario, "calibrationID": calibrationID, "status": status, "delivered": delivered,
        "local": localStatus, "original": original, "workers": workers, "elapsed": elapsed,
        "killed": (killedJob, killedFinal), "sigkilled": (sigkilledJob, sigkilledFinal),
    }


def test_the_wms_test_bed_starts_in_well_under_a_minute(grid):
    # start_wms raises if a service does not answer within the test bed's start_timeout
    assert len(grid.wms.services) == 10 and all(process.poll() is None for process in grid.wms.processes)
    print(f"WMS test bed start-up (service, WMS, agent): {grid.startup_seconds:.1f} s")


def test_the_grid_calibration_ends_with_the_local_backends_constants(run):
    status, local = run["status"], run["local"]
    assert status["status"] == "finished", run["scenario"].logs(run["calibrationID"])
    assert local["status"] == "finished"
    assert status["constants"] == local["constants"]
    grid_history = run["scenario"].history(run["calibrationID"])
    local_history = run["scenario"].history(local["calibrationID"])
    assert [h["phases"] for h in grid_history] == [h["phases"] for h in local_history]
    assert all(h["results"] == WORKERS for h in grid_history)
    print(f"grid calibration: {len(grid_history)} steps in {run['elapsed']:.0f} s")


def test_every_worker_ran_as_an_ilcdirac_user_job_of_alice(run, grid):
    calibrationID = run["calibrationID"]
    for workerID, jobID in run["original"].items():
        attributes = job_attributes(grid, jobID)
        assert attributes["JobName"] == job_name(calibrationID, workerID)
        assert attributes["JobGroup"] == job_group(calibrationID)
        assert (attributes["Owner"], attributes["OwnerGroup"]) == ("alice", wms.USER_GROUP)
        assert attributes["Site"] == wms.SITE


def test_the_job_monitor_shows_the_talks_application_status(run, grid):
    calibrationID = run["calibrationID"]
    for worker in run["workers"]:
        statuses = application_statuses(grid, worker["JobID"])
        assert any(s.startswith("Running: stage: ") and "; phase: " in s and "; step: " in s for s in statuses)
        assert f"PandoraCalib_{calibrationID}: Calibration is finished." in statuses, statuses
    waiting = [s for w in run["workers"] for s in application_statuses(grid, w["JobID"])
               if s.endswith("is finished. Waiting for other jobs")]
    assert waiting and all(s.startswith(f"PandoraCalib_{calibrationID}: step ") for s in waiting)


def test_the_agent_resubmitted_each_killed_worker_once_with_the_owners_proxy(run, grid):
    workers = {w["WorkerID"]: w for w in run["workers"]}
    killedJob, killedFinal = run["killed"]
    sigkilledJob, sigkilledFinal = run["sigkilled"]
    # DIRAC: a killed running job ends Failed (the watchdog's kill) or Killed; a payload killed by a
    # signal ends Failed, or Done where iLCDirac's /bin/sh wrapper loses the exit code (Debian's dash)
    assert killedFinal in ("Failed", "Killed")
    assert sigkilledFinal in ("Failed", "Done")
    assert workers[1]["Resubmissions"] == 1 and workers[1]["JobID"] != killedJob
    assert workers[2]["Resubmissions"] == 1 and workers[2]["JobID"] != sigkilledJob
    assert [workers[w]["Resubmissions"] for w in (0, 3)] == [0, 0]
    for workerID in (1, 2):
        replacement = job_attributes(grid, workers[workerID]["JobID"])
        # submitted by the agent as alice (her proxy from the ProxyManager), not as the host
        assert (replacement["Owner"], replacement["OwnerGroup"]) == ("alice", wms.USER_GROUP)
        assert replacement["JobName"] == job_name(run["calibrationID"], workerID)
        assert job_states(grid, [workers[workerID]["JobID"]])[int(workers[workerID]["JobID"])]["Status"] == "Done"
    downloads = _proxy_downloads(grid)
    assert ("host", "alice", wms.USER_GROUP) in downloads


def test_the_results_are_delivered_to_the_owners_output_path_on_the_storage_element(run, grid):
    scenario, calibrationID = run["scenario"], run["calibrationID"]
    folder = f"{scenario.output_lfn}/calibration_{calibrationID}"
    pandora = ["PandoraSettingsDefault.xml", f"PandoraLikelihoodData9EBin_calibration{calibrationID}.xml"]
    assert run["delivered"] == f"uploaded {len(RESULT_FILES) + len(pandora)} files to {folder} on {wms.STORAGE_ELEMENT}"
    from DIRAC.Resources.Catalog.FileCatalog import FileCatalog

    with grid.as_user("alice"):
        listings = FileCatalog().listDirectory([folder, f"{folder}/PandoraSettings"])
    assert listings["OK"], listings
    for path, expected in ((folder, RESULT_FILES), (f"{folder}/PandoraSettings", sorted(pandora))):
        files = listings["Value"]["Successful"][path]["Files"]
        assert sorted(name.rsplit("/", 1)[1] for name in files) == expected
        assert all(files[name]["MetaData"]["Owner"] == "alice" for name in files)
    stored = json.loads(grid.wms.se_path(f"{folder}/constants.json").read_text())
    assert stored["constants"] == run["status"]["constants"]


def test_a_killed_calibration_has_its_waiting_jobs_killed_by_the_agent(grid, tmp_path):
    grid.wms.stop_pilot()
    try:
        settings = {"numberOfJobs": 2, **ACCURACY, **CLD.settings}
        scenario = GridScenario(grid, tmp_path, CLD.truth(), FEW_SAMPLES, settings)
        calibrationID = scenario.submit()
        jobs = [w["JobID"] for w in scenario.workers(calibrationID)]
        done = scenario.run_command("dirac-clic-calibration-kill", str(calibrationID))
        assert done.returncode == 0, done.stderr
        finals = {job: stable_final_state(grid, job, JOB_TIMEOUT) for job in jobs}
        assert finals == dict.fromkeys(jobs, "Killed")
        workers = wait_for(lambda: (ws := scenario.workers(calibrationID)) and all(w["Status"] == "killed" for w in ws)
                           and ws, JOB_TIMEOUT, "workers marked killed", lambda: str(scenario.workers(calibrationID)))
        assert [w["JobID"] for w in workers] == jobs
    finally:
        grid.wms.start_pilot()


def _proxy_downloads(grid) -> set[tuple[str, str, str]]:
    """(who, whose, group) of every proxy download the ProxyManager logged."""
    conn = mariadb.connect(database=grid.wms.databases["ProxyDB"])
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT IssuerDN, TargetDN, TargetGroup FROM ProxyDB_Log WHERE Action = 'download proxy'")
            rows = cursor.fetchall()
    finally:
        conn.close()
    name = {identity.dn: key for key, identity in grid.identities.items()}
    return {(name.get(issuer, issuer), name.get(target, target), group) for issuer, target, group in rows}


def test_closing_the_test_bed_leaves_nothing_behind(grid, tmp_path):
    """Last: with a worker job running on the pilot, close() stops every process (payloads too),
    drops every database and removes the folder."""
    scenario = GridScenario(grid, tmp_path, CLD.truth(), FEW_SAMPLES, {"numberOfJobs": 1, **CLD.settings})
    calibrationID = scenario.submit()
    jobID = scenario.workers(calibrationID)[0]["JobID"]
    payload = wait_for(lambda: payload_process(grid, jobID), JOB_TIMEOUT, f"job {jobID} running its payload",
                       lambda: scenario.logs(calibrationID), interval=0.5)
    started = [psutil.Process(pid) for pid in grid.pids if psutil.pid_exists(pid)]
    processes = {payload, *started, *(child for p in started for child in p.children(recursive=True))}
    databases = [grid.db_name, *grid.wms.databases.values()]
    assert len(databases) == 8 and all(mariadb.databases(name) == [name] for name in databases)
    grid.close()
    alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert [name for name in databases if mariadb.databases(name)] == []
    assert not grid.root.exists()
