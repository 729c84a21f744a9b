"""Issue 8's proof: the attacks tried with ordinary user certificates (and an administrator's)
on the local test bed, replayed as the user who would try them against the real service, agent
and MariaDB. Each asserts the refusal, that nothing ran and nothing was written outside the
agent's own folders, and that the database is unchanged; the guarantees that already held are
checked again.

Two installations: ``shared`` is the production configuration (the default ConfigTemplate: no
local backend, the agent starts no process and writes no file on its machine); ``single`` is a
single-user installation (LocalBackendUsers, LocalBackendDir), where local workers exist.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml
from sqlalchemy import text

from ILCDIRAC.CalibrationSystem.DB import CalibrationDB as dbModule
from ILCDIRAC.CalibrationSystem.localdirac.scenario import (
    BIN,
    Scenario,
    create_via_rpc,
    database_rows,
    shifted_truth,
    wait_for_agent_cycles,
)
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed, dn_string
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import FAST_WORKERS, require_mariadb
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for

TRUTH = shifted_truth("FCCee_o1_v04", {"CalibrECAL": 1.15})
SAMPLES = {"gamma": (2, 100)}
LOCAL = {"numberOfJobs": 2, "phaseSequence": ["1.0"], "strategy": "legacy"}
GRID = {**LOCAL, "backend": "dirac", "marlinVersion": "ILCSoft-2020-02-07_gcc62"}
UNAUTHORIZED = "Unauthorized query"
XML_BOMB = ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a0 "lol">'
            + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
            + ']><marlin><global><parameter name="x">&a9;</parameter></global></marlin>')
AGENT_METHODS = {
    "getAgentWork": (), "closeReadySteps": (), "setWorkerStates": (1, {"0": {"Status": "dead"}}),
    "failCalibration": (1, "because"), "finalizeCalibration": (1,), "markDelivered": (1, "done"),
    "removeCalibrationData": (1,), "claimNotification": (1,), "releaseNotification": (1,),
}


# ------------------------------------------------------------------------------------ installations
@pytest.fixture(scope="module")
def shared():
    """The production configuration: every option from ConfigTemplate.cfg, no local backend."""
    require_mariadb()
    with Testbed(local_backend=False, service_options=FAST_WORKERS, polling_time=1) as testbed:
        testbed.start_service()
        testbed.start_agent()
        yield testbed


@pytest.fixture(scope="module")
def single():
    """A single-user installation: local workers, restarted by the agent below its own folder."""
    require_mariadb()
    with Testbed(service_options=FAST_WORKERS, polling_time=1) as testbed:
        testbed.start_service()
        testbed.start_agent()
        yield testbed


# ------------------------------------------------------------------------------------ helpers
def refused(result: dict, expected: str) -> str:
    """The refusal's message, checked: not OK, one short line, starting with ``expected``."""
    assert not result["OK"], result
    message = result["Message"]
    assert "\n" not in message and len(message) < 600, message[:2000]
    assert "internal error" not in message, message
    assert message.startswith(expected), message
    return message


def marker_script(folder: Path, marker: Path, exitCode: int = 1) -> str:
    """A command that leaves ``marker`` wherever it runs, as proof that it ran."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "attack.sh"
    script.write_text(f"#!/bin/bash\ntouch {marker}\necho ran as $(id -un) >> {marker}\nexit {exitCode}\n")
    script.chmod(0o755)
    return str(script)


def slow_marlin(folder: Path, seconds: float) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "slow-marlin.sh"
    script.write_text(f"#!/bin/bash\nsleep {seconds}\nexec {BIN / 'marlin-emulator'} \"$@\"\n")
    script.chmod(0o755)
    return str(script)


def bystanders(count: int) -> list[subprocess.Popen]:
    """Processes that are nobody's worker (their PIDs are what an attacker would register)."""
    return [subprocess.Popen(["sleep", "600"], start_new_session=True) for _ in range(count)]


def settings_for(testbed: Testbed, folder: Path, **changes) -> tuple[dict, dict]:
    """Resolved settings and input files as the submit command would send them (nothing created)."""
    from ILCDIRAC.CalibrationSystem.Client.Submission import collect_input_files
    from ILCDIRAC.CalibrationSystem.Utilities.settings import load_settings

    values = {**GRID, **changes}
    path = Scenario(testbed, folder, TRUTH, SAMPLES, values).prepare()
    resolved = load_settings(path).to_dict()
    return resolved, collect_input_files(resolved, folder)


def empty_report(testbed: Testbed, calibrationID: int) -> dict:
    settings = testbed.rpc("alice").getWorkerSetup(calibrationID, 0)["Value"]["settings"]
    return {"phases": {"1.0": phase_for("1.0").spec(PhaseContext.from_settings(settings)).empty().to_payload()}}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------------ 1. code on the agent host
def test_backend_local_is_refused_unless_enabled_and_no_user_command_runs_on_the_agent_host(shared, tmp_path):
    """A failing local marlinExecutable was resubmitted by the agent and ran as its account."""
    marker = tmp_path / "ran-on-the-agent-host"
    attack = {**LOCAL, "backend": "local", "marlinExecutable": marker_script(tmp_path / "bin", marker)}
    before = database_rows(shared)
    scenario = Scenario(shared, tmp_path / "bob", TRUTH, SAMPLES, attack, user="bob")
    done = scenario.run_command("dirac-clic-calibration-submit", "--workdir", str(tmp_path / "work"),
                                str(scenario.prepare()))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        "ERROR: calibration not created: backend local is not enabled for you on this service (LocalBackendUsers): "
        "its workers would run on the service's own machine; use backend dirac"]
    # the same through the RPC alone, and the old registration with a work folder and environment
    resolved, files = settings_for(shared, tmp_path / "rpc", **attack)
    refused(shared.rpc("bob").createCalibration(resolved, files), "backend local is not enabled for you")
    refused(shared.rpc("bob").registerWorkers(1, {"0": "local:1"}, {"workDir": str(tmp_path),
                                                                      "environment": {"PYTHONPATH": str(tmp_path)}}),
            "registerWorkers takes 2 arguments, not 3")
    wait_for_agent_cycles(shared, 2)
    assert database_rows(shared) == before
    assert not marker.exists() and not (tmp_path / "work").exists()
    assert files_below(shared.local_dir) == []


def test_the_agent_restarts_local_workers_from_its_own_configuration_only(single, tmp_path):
    """registerWorkers stored any work folder and environment, and the agent restarted 'lost'
    workers with them. Now it stores job IDs only, and the agent's restarts use its own folder,
    environment and the owner's identity."""
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "sitecustomize.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    calibrationID = create_via_rpc(single, tmp_path / "alice", truth=TRUTH, samples=SAMPLES, settings=LOCAL)
    alice = single.rpc("alice")
    refused(alice.registerWorkers(calibrationID, {"0": "local:1", "1": "local:2"},
                                  {"workDir": str(planted), "environment": {"PYTHONPATH": str(planted)}}),
            "registerWorkers takes 2 arguments, not 3")
    others = bystanders(2)
    try:
        assert alice.registerWorkers(calibrationID, {str(w): f"local:{p.pid}" for w, p in enumerate(others)})["OK"]
        # the registered processes are not this calibration's workers: the agent restarts them
        db = dbModule.CalibrationDB(single.db_url)
        deadline = time.monotonic() + 60
        while not all(w["Resubmissions"] == 1 for w in db.getWorkers(calibrationID)):
            assert time.monotonic() < deadline, db.getWorkers(calibrationID)
            time.sleep(0.2)
        for worker in db.getWorkers(calibrationID):
            process = psutil.Process(int(worker["JobID"].removeprefix("local:")))
            folder = single.local_dir / "workers" / f"calibration_{calibrationID}" / f"worker_{worker['WorkerID']}"
            assert process.cwd() == str(folder)
            assert process.environ().get("PYTHONPATH") == single.env()["PYTHONPATH"]
            assert "X509_USER_PROXY" not in process.environ()
            assert process.cmdline()[-4:] == ["--owner-dn", dn_string("alice"), "--owner-group", "calibration_user"]
        # nobody's processes were touched, nothing ran from or was written to the planted folder
        assert all(p.poll() is None for p in others)
        assert files_below(planted) == ["sitecustomize.py"] and not (tmp_path / "imported").exists()
        assert alice.killCalibration(calibrationID)["OK"]
        refused(alice.registerWorkers(calibrationID, {"0": "local:3", "1": "local:4"}),
                f"calibration {calibrationID} is killed: workers are registered only while it starts")
    finally:
        for process in others:
            process.kill()
            process.wait()


# ------------------------------------------------------------------------------------ 2. registration
def test_job_registration_is_the_owners_once_complete_and_in_the_backends_format(single, shared, tmp_path):
    calibrationID = create_via_rpc(single, tmp_path / "local", truth=TRUTH, samples=SAMPLES, settings=LOCAL)
    gridID = create_via_rpc(shared, tmp_path / "grid", truth=TRUTH, samples=SAMPLES, settings=GRID)
    foreign = f"calibration {calibrationID} does not exist or does not belong to"
    before = database_rows(single)
    cases = [
        ("bob", {"0": "local:11", "1": "local:12"}, f"{foreign} bob"),
        ("admin", {"0": "local:11", "1": "local:12"}, f"{foreign} admin"),
        ("alice", {"0": "local:11"}, f"calibration {calibrationID} has 2 workers: register the job of each of them"),
        ("alice", {"0": "local:11", "1": "local:11"}, "each worker needs a job of its own"),
        ("alice", {"0": "local:11", "1": "12"}, "job ID '12' is not a job ID of the local backend"),
        ("alice", {"0": "local:11", "1": "local:1; kill -9 1"}, "job ID 'local:1; kill -9 1' is not a job ID"),
        ("alice", {"0": "local:11", "1": "local:" + "9" * 20}, "job ID 'local:99999999999999999999' is not a job ID"),
        ("alice", {"0": "local:11", "1": "local:" + "9" * 5000},
         "the job IDs has a string of 5006 characters, more than MaxStringLength = 1024"),
        ("alice", {"0": "local:11", "-1": "local:12"}, "worker ID '-1' is not an integer"),
        ("alice", {"0": "local:11", "1": 12}, "job IDs must be a dict of worker ID -> job ID (a string)"),
    ]
    for user, jobs, expected in cases:
        refused(single.rpc(user).registerWorkers(calibrationID, jobs), expected)
    assert database_rows(single) == before
    alice = single.rpc("alice")
    assert alice.registerWorkers(calibrationID, {"0": "local:11", "1": "local:12"})["Value"] == 2
    registered = database_rows(single)
    refused(alice.registerWorkers(calibrationID, {"0": "local:13", "1": "local:14"}),
            f"the workers of calibration {calibrationID} are registered already: registration happens once")
    assert database_rows(single) == registered
    # a grid calibration takes DIRAC job IDs only
    refused(shared.rpc("alice").registerWorkers(gridID, {"0": "local:11", "1": "local:12"}),
            "job ID 'local:11' is not a job ID of the dirac backend")
    assert shared.rpc("alice").killCalibration(gridID)["OK"]
    assert single.rpc("alice").killCalibration(calibrationID)["OK"]  # (a client works while its test bed is active)


def test_one_user_cannot_get_another_users_workers_killed(single, tmp_path):
    """bob registered alice's worker PIDs as the jobs of his own calibration and ended it: the
    agent killed them, since any PID whose command line named the worker script was 'ours'."""
    alice = Scenario(single, tmp_path / "alice", TRUTH, SAMPLES,
                     {**LOCAL, "marlinExecutable": slow_marlin(tmp_path / "bin", 600)})
    aliceID = alice.submit()
    workers = alice.wait_for_workers(aliceID, {"running"}, timeout=60)
    pids = {w["WorkerID"]: int(w["JobID"].removeprefix("local:")) for w in workers}
    bobID = create_via_rpc(single, tmp_path / "bob", user="bob", truth=TRUTH, samples=SAMPLES, settings=LOCAL)
    bob = single.rpc("bob")
    assert bob.registerWorkers(bobID, {str(w): f"local:{pid}" for w, pid in pids.items()})["OK"]
    assert bob.killCalibration(bobID)["OK"]
    wait_for_agent_cycles(single, 3)
    assert all(alive(pid) for pid in pids.values()), alice.logs(aliceID)
    assert alice.status(aliceID)["status"] == "running"
    assert {w["WorkerID"]: w["JobID"] for w in dbModule.CalibrationDB(single.db_url).getWorkers(aliceID)} == {
        w: f"local:{pid}" for w, pid in pids.items()}
    refused(bob.registerWorkers(bobID, {str(w): f"local:{pid}" for w, pid in pids.items()}),
            f"calibration {bobID} is killed: workers are registered only while it starts")
    # alice's own kill still reaches her workers
    assert single.rpc("alice").killCalibration(aliceID)["OK"]
    assert psutil.wait_procs([psutil.Process(p) for p in pids.values() if alive(p)], timeout=90)[1] == []


# ------------------------------------------------------------------------------------ 3. the agent's writes
def test_the_agent_follows_no_link_planted_in_its_work_folder(single, tmp_path):
    """The agent appended worker logs through a symbolic link a user planted in a work folder."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    calibrationID = create_via_rpc(single, tmp_path / "alice", truth=TRUTH, samples=SAMPLES, settings=LOCAL)
    folder = single.local_dir / "workers" / f"calibration_{calibrationID}" / "worker_0"
    folder.mkdir(parents=True)
    (folder / "worker.log").symlink_to(victim)
    others = bystanders(2)
    try:
        assert single.rpc("alice").registerWorkers(
            calibrationID, {str(w): f"local:{p.pid}" for w, p in enumerate(others)})["OK"]
        wait_for_agent_cycles(single, 3)
    finally:
        for process in others:
            process.kill()
            process.wait()
    assert victim.read_text() == "keep me\n"
    assert f"worker.log in {folder} is a symbolic link: refused" in single.agent_log.read_text()
    assert single.rpc("alice").killCalibration(calibrationID)["OK"]


@pytest.mark.parametrize("outputPath, expected", [
    ("/etc", "outputPath '/etc' is not in your grid user folder /ilc/user/a/alice"),
    ("../../..", "invalid settings: outputPath: it must be an absolute LFN"),
    ("/ilc/user/b/bob/calib", "outputPath '/ilc/user/b/bob/calib' is not in your grid user folder"),
    ("/ilc/user/a/alice/../../b/bob", "invalid settings: outputPath: it contains '..'"),
    ("LFN:/ilc/user/a/alice2/calib", "outputPath '/ilc/user/a/alice2/calib' is not in your grid user folder"),
    ("/ilc/user/a/alice/\x00x", "invalid settings: outputPath: it contains control characters"),
])
def test_results_only_go_to_the_owners_grid_user_folder(single, tmp_path, outputPath, expected):
    """The agent delivered results into any outputPath the service accepted (/etc, ../../..)."""
    resolved, files = settings_for(single, tmp_path, **{**LOCAL, "backend": "local"})
    before = database_rows(single)
    refused(single.rpc("alice").createCalibration({**resolved, "outputPath": outputPath, "outputSE": "CERN-DST-EOS"},
                                                  files), expected)
    assert database_rows(single) == before


def test_a_grid_calibration_ships_no_file_from_a_machines_disk(shared, tmp_path):
    resolved, files = settings_for(shared, tmp_path)
    model = resolved["detectorModelName"]
    for tarball in (f"/etc/{model}.tgz", f"{model}.tgz"):
        refused(shared.rpc("alice").createCalibration({**resolved, "detectorModel": tarball,
                                                       "geometryTarball": tarball}, files),
                f"detectorModel '{tarball}': a grid calibration's geometry tarball must be an LFN")


# ------------------------------------------------------------------------------------ 4. roles
def test_administrators_see_and_kill_but_never_feed_a_calibration(single, tmp_path):
    calibrationID = create_via_rpc(single, tmp_path, truth=TRUTH, samples=SAMPLES, settings=LOCAL)
    report = empty_report(single, calibrationID)
    before = database_rows(single)
    admin = single.rpc("admin")
    foreign = f"calibration {calibrationID} does not exist or does not belong to admin"
    refused(admin.submitResult(calibrationID, 1, 0, report), foreign)
    refused(admin.registerWorkers(calibrationID, {"0": "local:11", "1": "local:12"}), foreign)
    refused(admin.getWorkerSetup(calibrationID, 0), foreign)
    refused(admin.getStepParameters(calibrationID, 0, 0), foreign)
    refused(admin.waitForNextStep(calibrationID, 0, 0), foreign)
    assert database_rows(single) == before
    assert admin.getCalibrationStatus([calibrationID])["Value"][0]["owner"] == "alice"
    assert [h["step"] for h in admin.getCalibrationHistory(calibrationID)["Value"]] == [1]
    assert admin.killCalibration(calibrationID)["OK"]
    row = single.rpc("alice").getCalibrationStatus([calibrationID])["Value"][0]
    assert (row["status"], row["reason"]) == ("killed", "killed by admin")


# ------------------------------------------------------------------------------------ 5. limits
def test_every_limit_refuses_in_one_line_that_names_it_and_stores_nothing(shared, tmp_path):
    resolved, files = settings_for(shared, tmp_path)
    idle = create_via_rpc(shared, tmp_path / "idle", truth=TRUTH, samples=SAMPLES, settings=GRID)
    report = empty_report(shared, idle)
    huge = "x" * 10_000_000
    bigReport = {"phases": {"1.0": {**report["phases"]["1.0"], "files": {"x": [huge]}}}}
    alice = shared.rpc("alice")
    before = database_rows(shared)
    cases = [
        ("createCalibration", ({**resolved, "numberOfJobs": 100000}, files),
         "numberOfJobs = 100000 is more than this service allows (MaxWorkersPerCalibration = 1000)"),
        ("createCalibration", ({**resolved, "gammaFiles": [f"/ilc/g{i}.slcio" for i in range(20000)]}, files),
         "the settings has a list of 20000 entries, more than MaxListLength = 10000"),
        ("createCalibration", ({**resolved, "marlinVersion": huge}, files),
         "the settings has a string of 10000000 characters, more than MaxStringLength = 1024"),
        ("createCalibration", ({**resolved, "gammaFiles": [huge]}, files),
         "the settings has a string of 10000000 characters, more than MaxStringLength = 1024"),
        ("createCalibration", ({**resolved, "junk": [[0] * 10000] * 11}, files),
         "the settings holds more than MaxValuesPerArgument = 100000 values"),
        ("createCalibration", ({**resolved, "junk": [[[[[[[[[[[[0]]]]]]]]]]]]}, files),
         "the settings is nested more than 10 levels deep"),
        ("createCalibration", (resolved, {**files, "big.xml": "x" * (16 * 1024 * 1024 + 1)}),
         "input file 'big.xml' has 16777217 bytes, more than MaxFileSize = 16777216"),
        ("createCalibration", (resolved, {**files, **{f"extra{i}.xml": "<x/>" for i in range(100)}}),
         f"{len(files) + 100} input files are more than MaxInputFiles = 100"),
        ("createCalibration", (resolved, {**files, huge: "<x/>"}), "input file name 'xxxxxxxx"),
        # an XML entity bomb as the steering file (expat's amplification limit; the message is the parser's)
        ("createCalibration", (resolved, {**files, "steering.xml": XML_BOMB}), ""),
        ("submitResult", (idle, 1, 0, bigReport),
         f"the report has {len(json.dumps(bigReport, separators=(',', ':')))} bytes, more than MaxReportSize = 8388608"),
        ("getCalibrationStatus", (list(range(1, 22)),),
         "21 distinct calibration IDs are more than MaxIDsPerStatusCall = 20"),
        ("getCalibrationStatus", (list(range(20001)),), "20001 calibration IDs are more than MaxListLength = 10000"),
        ("getCalibrationFile", (idle, huge), f"calibration {idle} has no file 'xxxxxxxx"),
    ]
    for method, args, expected in cases:
        refused(getattr(alice, method)(*args), expected)
    assert database_rows(shared) == before
    # repeated IDs count once: 2000 repeats are one calibration's status
    rows = alice.getCalibrationStatus([idle] * 2000)["Value"]
    assert [row["calibrationID"] for row in rows] == [idle]
    assert alice.killCalibration(idle)["OK"]


def test_a_user_may_run_only_so_many_calibrations_at_once(shared, tmp_path):
    bob = shared.rpc("bob")
    running = [row for row in bob.getCalibrationStatus([])["Value"] if row["status"] == "running"]
    created = [create_via_rpc(shared, tmp_path / str(i), user="bob", truth=TRUTH, samples=SAMPLES, settings=GRID)
               for i in range(10 - len(running))]
    resolved, files = settings_for(shared, tmp_path / "one-more")
    before = database_rows(shared)
    refused(bob.createCalibration(resolved, files),
            "bob has 10 running calibrations already (MaxRunningCalibrationsPerUser = 10): wait for one to end")
    assert database_rows(shared) == before
    assert shared.rpc("alice").createCalibration(resolved, files)["OK"], "the limit is per user"
    assert bob.killCalibration(created[0])["OK"]
    assert bob.createCalibration(resolved, files)["OK"], "a running calibration that ends frees its place"


# ------------------------------------------------------------------------------------ 6. internal errors
def test_an_internal_error_answers_an_error_id_and_only_the_log_has_the_details(shared):
    db = dbModule.CalibrationDB(shared.db_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE Workers RENAME TO WorkersAway"))
        result = shared.rpc("alice").getCalibrationStatus([])
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE WorkersAway RENAME TO Workers"))
        db.engine.dispose()
    assert not result["OK"]
    match = re.fullmatch(r"internal error ([0-9a-f]{12}) in getCalibrationStatus: the details are in the service log",
                         result["Message"])
    assert match, result["Message"]
    logged = [line for line in shared.service_log.read_text().splitlines() if match.group(1) in line]
    assert logged, "the error ID is in the service log"
    assert "Workers" in shared.service_log.read_text().split(match.group(1), 1)[1][:5000], "with the SQL details"
    assert shared.rpc("alice").getCalibrationStatus([])["OK"]


# ------------------------------------------------------------------------------------ 7. client-side traps
def test_settings_file_traps_end_in_one_line_without_a_service(shared, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    # 10^7 sample files once expanded, in 700 bytes
    bomb.write_text("detectorModel: CLD\nsteeringFile: steering.xml\nx0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7)) + "gammaFiles: *a6\n")
    large = tmp_path / "large.yaml"
    with open(large, "w") as out:
        out.write("detectorModel: CLD\nsteeringFile: steering.xml\ngammaFiles:\n")
        line = "  - /ilc/prod/clic/gamma/10GeV/gamma_0000000000000000000000000000.slcio\n"
        out.write(line * (54_000_000 // len(line)))
    env = shared.env("alice")
    for path, expected in ((bomb, "the settings file is refused: it holds more than 100000 values once its aliases "
                                  "are expanded (line "),
                           (large, f"cannot read settings file {large}: larger than the limit of 1024 KiB")):
        for dryRun in (["--dry-run"], []):
            done = subprocess.run([str(BIN / "dirac-clic-calibration-submit"), *dryRun, str(path)], env=env,
                                  cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert (done.returncode, done.stdout) == (1, ""), done.stderr
            assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(f"ERROR: {path}: {expected}"), \
                done.stderr[:2000]


@pytest.mark.parametrize("name", ["../../etc/shadow", "LFN:/../../x", "/ilc/prod/../../etc/passwd", "a/../../b"])
def test_sample_names_that_climb_out_are_refused_over_the_rpc(shared, tmp_path, name):
    resolved, files = settings_for(shared, tmp_path)
    before = database_rows(shared)
    refused(shared.rpc("alice").createCalibration({**resolved, "gammaFiles": [name, "/ilc/prod/g.slcio"]}, files),
            "invalid settings: gammaFiles: file 1 contains '..'")
    assert database_rows(shared) == before


# ------------------------------------------------------------------------------------ what held, holds
def test_other_users_learn_nothing_and_unregistered_users_reach_nothing(shared, tmp_path):
    idle = create_via_rpc(shared, tmp_path, truth=TRUTH, samples=SAMPLES, settings=GRID)
    report = empty_report(shared, idle)
    calls = {
        "getCalibrationStatus": lambda i: ([i],), "getCalibrationHistory": lambda i: (i,),
        "getWorkerSetup": lambda i: (i, 0), "getStepParameters": lambda i: (i, 0, 0),
        "waitForNextStep": lambda i: (i, 0, 0),
        "submitResult": lambda i: (i, 1, 0, report), "getCalibrationFile": lambda i: (i, "steering.xml"),
        "getCalibrationResults": lambda i: (i,), "registerWorkers": lambda i: (i, {"0": "1", "1": "2"}),
        "killCalibration": lambda i: (i,),
    }
    before = database_rows(shared)
    bob, mallory = shared.rpc("bob"), shared.rpc("mallory")
    missing = 2**31 - 1
    for method, args in calls.items():
        theirs = refused(getattr(bob, method)(*args(idle)), f"calibration {idle} does not exist or does not belong to bob")
        nobodys = refused(getattr(bob, method)(*args(missing)), f"calibration {missing} does not exist")
        assert theirs.replace(str(idle), "ID") == nobodys.replace(str(missing), "ID"), method
        refused(getattr(mallory, method)(*args(idle)), UNAUTHORIZED)
    for user in ("alice", "admin", "mallory"):
        for method, args in AGENT_METHODS.items():
            refused(getattr(shared.rpc(user), method)(*args), UNAUTHORIZED)
    assert database_rows(shared) == before


def test_a_cs_that_only_says_default_authenticated_still_keeps_the_agent_methods_to_trusted_hosts():
    """Without the template's per-method lines, DIRAC falls back to the handler's ``auth_``
    defaults before the section's ``Default``: users are refused the agent's methods, the agent
    (a TrustedHost) and users' own methods still work."""
    require_mariadb()
    with Testbed(local_backend=False, service_options=FAST_WORKERS) as testbed:
        section = testbed.cfg["Systems"]["Calibration"][testbed.instance]["Services"]["Calibration"]["Authorization"]
        for method in section.listOptions():
            if method != "Default":
                section.deleteKey(method)
        assert section.listOptions() == ["Default"] and section["Default"] == "authenticated"
        testbed.cfg_path.write_text(str(testbed.cfg))
        testbed.start_service()
        before = database_rows(testbed)
        for user in ("alice", "admin"):
            for method, args in AGENT_METHODS.items():
                refused(getattr(testbed.rpc(user), method)(*args), UNAUTHORIZED)
        assert database_rows(testbed) == before
        agentWork = testbed.rpc("host").getAgentWork()
        assert agentWork["OK"] and agentWork["Value"] == [], agentWork
        status = testbed.rpc("alice").getCalibrationStatus([])
        assert status["OK"] and status["Value"] == [], status


def test_duplicate_and_ended_reports_are_never_counted(shared, tmp_path):
    idle = create_via_rpc(shared, tmp_path, truth=TRUTH, samples=SAMPLES, settings=GRID)
    report = empty_report(shared, idle)
    alice = shared.rpc("alice")
    assert alice.submitResult(idle, 1, 0, report)["Value"]["verdict"] == "accepted"
    assert alice.submitResult(idle, 1, 0, report)["Value"]["verdict"] == "duplicate"
    assert alice.killCalibration(idle)["OK"]
    assert alice.submitResult(idle, 1, 1, report)["Value"]["verdict"] == "ended"
    db = dbModule.CalibrationDB(shared.db_url)
    assert db.getStep(idle, 1)["NResults"] == 1 and [w for w, _ in db.getResults(idle, 1)] == [0]


def test_yaml_tags_and_python_in_the_legacy_format_run_nothing(tmp_path):
    marker = tmp_path / "ran"
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(f"detectorModel: CLD\nsteeringFile: !!python/object/apply:os.system ['touch {marker}']\n")
    legacy = tmp_path / "legacy.txt"
    legacy.write_text(f"detectorModel CLD\nnumberOfJobs __import__('os').system('touch {marker}')\n")
    for path in (tagged, legacy):
        done = subprocess.run([str(BIN / "dirac-clic-calibration-submit"), "--dry-run", str(path)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and done.stdout == "", done.stderr
    assert not marker.exists()
    with pytest.raises(yaml.YAMLError):
        yaml.load(tagged.read_text(), Loader=yaml.SafeLoader)


def test_no_sql_is_built_from_strings():
    """Every statement is SQLAlchemy Core; the only raw SQL is a constant."""
    source = Path(dbModule.__file__).read_text()
    tree = ast.parse(source)
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", getattr(call.func, "id", "")) in (
                "text", "exec_driver_sql", "execute"):
            for argument in call.args:
                assert not isinstance(argument, (ast.JoinedStr, ast.BinOp)), ast.unparse(call)
                if getattr(call.func, "attr", "") == "exec_driver_sql":
                    assert isinstance(argument, ast.Constant), ast.unparse(call)
    assert "from sqlalchemy import text" not in source and "sqlalchemy.text" not in source
