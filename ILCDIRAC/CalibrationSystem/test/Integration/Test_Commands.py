"""The dirac-clic-calibration-* commands as a user runs them, and the service's guard rails.

Every command runs as a real process with a user's proxy against the real service of the test
bed (or against a test bed whose service was never started). What must hold: ``--dry-run``
validates without any service; a broken settings file lists every problem and creates nothing;
every error is one readable line, never a traceback; status, kill and results work for the
owner (and kill for an administrator) and for nobody else, through the commands and through the
RPC; bad RPC arguments get a specific error and leave the database exactly as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from sqlalchemy import func, select

from ILCDIRAC.CalibrationSystem.Client.Submission import collect_input_files
from ILCDIRAC.CalibrationSystem.DB import CalibrationDB as dbModule
from ILCDIRAC.CalibrationSystem.localdirac.scenario import BIN, Scenario, shifted_truth
from ILCDIRAC.CalibrationSystem.localdirac.testbed import CODE_ROOT, Testbed
from ILCDIRAC.CalibrationSystem.Utilities.detectors import load_detector_model
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.settings import load_settings

DATA = Path(__file__).resolve().parents[1] / "data"
TALK = DATA / "talk_settings.txt"
TRUTH = shifted_truth("FCCee_o1_v04", {"CalibrECAL": 1.15, "ECALEndcapCorrectionFactor": 0.96})
SETTINGS = {"numberOfJobs": 4, "phaseSequence": ["1.0"], "strategy": "legacy"}
#: What DIRAC prints for an RPC whose method the caller's group may not call.
UNAUTHORIZED = "Unauthorized query"


# ------------------------------------------------------------------------------------ helpers
def command(env: dict[str, str], *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return finish(command(env, *args, cwd=cwd))


def assert_one_line_error(done: subprocess.CompletedProcess, expected: str) -> None:
    """Exit code 1, nothing on stdout, and exactly ``ERROR: <expected>`` on stderr."""
    shown = f"{done.args[1:]}: rc={done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode == 1, shown
    assert done.stdout == "", shown
    assert done.stderr.splitlines() == [f"ERROR: {expected}"], shown


def snapshot(testbed: Testbed, calibrationID: int) -> dict:
    """Every database row of the calibration, and the number of calibrations."""
    db = dbModule.CalibrationDB(testbed.db_url)
    with db.engine.connect() as conn:
        rows = {
            table.name: [dict(row) for row in conn.execute(select(table).where(table.c.CalibrationID == calibrationID)).mappings()]
            for table in dbModule.metadata.sorted_tables
        }
        rows["count"] = conn.execute(select(func.count()).select_from(dbModule.calibrations)).scalar()
    db.engine.dispose()
    return rows


def slow_marlin(folder: Path, seconds: float) -> str:
    """A marlinExecutable that takes ``seconds`` per step before running the emulator (a slow site)."""
    script = folder / "slow-marlin.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/bash\nsleep {seconds}\nexec {BIN / 'marlin-emulator'} \"$@\"\n")
    script.chmod(0o755)
    return str(script)


def create_idle(testbed: Testbed, folder: Path, user: str = "alice") -> int:
    """A calibration created through the RPC exactly as the submit command would, but with no
    workers started: nothing changes it unless a test does."""
    path = Scenario(testbed, folder, TRUTH, {"gamma": (4, 100)}, SETTINGS, user=user).prepare()
    resolved = load_settings(path).to_dict()
    created = testbed.rpc(user).createCalibration(resolved, collect_input_files(resolved, folder))
    assert created["OK"], created["Message"]
    return created["Value"]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def down():
    """A complete test bed (configuration, credentials) whose service is never started."""
    with Testbed(database="sqlite") as testbed:
        yield testbed


@pytest.fixture(scope="module")
def idle(testbed, tmp_path_factory):
    return create_idle(testbed, tmp_path_factory.mktemp("idle"))


@pytest.fixture
def talk_folder(tmp_path):
    """The talk's settings file next to the list and steering files it names, and the Pandora
    files that steering file names (those of the CLD-like fixture folder)."""
    for path in DATA.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path)
    for folder in ("PandoraSettingsCLD", "CalibrationPandoraSettings"):
        shutil.copytree(DATA / "configurations" / "CLDLike" / folder, tmp_path / folder)
    return tmp_path


# ------------------------------------------------------------------------------------ submit --dry-run
def test_dry_run_prints_the_resolved_talk_settings_without_any_service(down, talk_folder, tmp_path_factory):
    # a listener on the (never started) service's port notices any attempt to reach it
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as spy:
        spy.bind(("127.0.0.1", down.port))
        spy.listen()
        spy.setblocking(False)
        done = run(down.env("alice"), "dirac-clic-calibration-submit", "--dry-run", "talk_settings.txt", cwd=talk_folder)
        with pytest.raises(BlockingIOError):
            spy.accept()
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    resolved = yaml.safe_load(done.stdout)
    model = load_detector_model("FCCee_01_v04_ecal20_10")
    # the talk's own values
    assert resolved["numberOfJobs"] == 100
    assert resolved["pandoraPFAAccuracy"] == 0.005
    assert resolved["ecalBarrelCosThetaRange"] == [0.0, 0.643]
    assert resolved["DDCaloDigiName"] == "MyDDCaloDigi_10ns"
    # the detector model behind the tarball's name filled in the rest
    assert resolved["detectorModelName"] == model.name
    assert resolved["geometryTarball"] == "FCCee_01_v04_ecal20_10.tgz"
    for key in ("nHcalLayers", "hcalAbsorberThicknessEndcap", "hcalScintillatorThicknessRing", "ecalMipThreshold",
                "hcalMipThreshold", "PfoAnalysisName", "ecalFirstLayerNumber"):
        assert resolved[key] == model.settings_defaults()[key], key
    for name, value in model.constants().items():
        assert resolved["startingConstants"][name] == value, name
    # defaults, and the sample list files expanded to the files they list
    assert resolved["maxIterationsPerPhase"] == 30
    assert resolved["gammaEnergy"] == 10.0 and resolved["kaonEnergy"] == 50.0
    listing = (talk_folder / "fccee_10gev_gamma_FCCee_01_v04_ecal20_10.txt").read_text().splitlines()
    listed = [line for line in listing if line.startswith("/ilc/")]
    assert len(listed) == 5
    assert resolved["gammaFiles"] == listed
    # then, as comments, what the samples can give: 5 x 1000 K0L are too few for 0.5 % on the
    # ECAL hadronic scale (the estimate itself is tested in Test_Power and Test_Coverage)
    power = {line.split()[2]: line for line in done.stdout.splitlines() if line.startswith("#   1.")}
    assert set(power) == {"CalibrECAL", "ECALEndcapCorrectionFactor", "CalibrHCALBarrel", "CalibrHCALEndcap",
                          "CalibrHCALOther", "ECalToEMGeVCalibration", "ECalToHadGeVCalibrationBarrel",
                          "HCalToHadGeVCalibration"}
    assert "too few: about" in power["ECalToHadGeVCalibrationBarrel"] and power["CalibrECAL"].endswith("ok")
    assert "# The kaon sample is too small for the requested accuracy: 5000 events, about " in done.stdout
    # the service's file checks ran on what the submission would send, and say what they found
    assert done.stdout.rstrip().splitlines()[-2:] == [
        "# files that travel: CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml, "
        "PandoraSettingsCLD/PandoraLikelihoodData9EBin.xml, PandoraSettingsCLD/PandoraSettingsDefault.xml, steering.xml",
        "# Pandora processor MyDDMarlinPandora_10ns with PandoraSettingsCLD/PandoraSettingsDefault.xml; "
        "PfoAnalysis MyPfoAnalysis runs"]

    # and on a machine without any DIRAC configuration (no dirac.cfg, no CS) it prints the same
    empty = tmp_path_factory.mktemp("no-dirac")
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("DIRAC", "X509"))}
    bare.update(DIRAC_ROOT_PATH=str(empty), HOME=str(empty), PYTHONPATH=str(CODE_ROOT))
    alone = run(bare, "dirac-clic-calibration-submit", "--dry-run", "talk_settings.txt", cwd=talk_folder)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert alone.stdout == done.stdout


def test_a_broken_settings_file_lists_every_problem_and_creates_nothing(testbed, talk_folder):
    text = (talk_folder / "talk_settings.txt").read_text()
    for old, new in [
        ("numberOfJobs                               100", "numberOfJob 100"),
        ("fractionOfFinishedJobsNeededToStartNextStep 0.9", "fractionOfFinishedJobsNeededToStartNextStep 1.5"),
        ("digitisationAccuracy                        0.02", "digitisationAccuracy two percent"),
        ("ecalBarrelCosThetaRange                     [0.0, 0.643]", "ecalBarrelCosThetaRange [0.643, 0.0]"),
    ]:
        assert old in text
        text = text.replace(old, new)
    (talk_folder / "broken.txt").write_text(text)
    before = testbed.rpc("alice").getCalibrationStatus([])["Value"]
    counted = snapshot(testbed, 0)["count"]
    env = testbed.env("alice")
    runs = [command(env, "dirac-clic-calibration-submit", *extra, "broken.txt", cwd=talk_folder)
            for extra in (["--dry-run"], [])]
    for done in map(finish, runs):
        assert done.returncode == 1
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert lines[0] == "ERROR: broken.txt: 4 problems in the settings:", done.stderr
        assert sorted(lines[1:]) == [
            "  - digitisationAccuracy: must be a finite number, got 'two percent'",
            "  - ecalBarrelCosThetaRange: must be increasing and inside [0, 1], got [0.643, 0.0]",
            "  - fractionOfFinishedJobsNeededToStartNextStep: must be in (0, 1], got 1.5",
            "  - numberOfJob: unknown key (did you mean 'numberOfJobs'?)",
        ]
    assert testbed.rpc("alice").getCalibrationStatus([])["Value"] == before
    assert snapshot(testbed, 0)["count"] == counted


# ------------------------------------------------------------------------------------ one-line errors
def test_every_error_is_one_readable_line(testbed, down, idle, tmp_path):
    valid = Scenario(down, tmp_path / "valid", TRUTH, {"gamma": (4, 100)}, SETTINGS).prepare()
    other = f"calibration {idle} does not exist or does not belong to"
    cases = [
        # unknown calibration IDs
        (testbed, "alice", ["dirac-clic-calibration-status", "999999"], "calibration 999999 does not exist or does not belong to alice"),
        (testbed, "alice", ["dirac-clic-calibration-kill", "999999"], "calibration 999999 does not exist or does not belong to alice"),
        (testbed, "alice", ["dirac-clic-calibration-results", "999999"], "calibration 999999 does not exist or does not belong to alice"),
        # another user's calibration: indistinguishable from a missing one
        (testbed, "bob", ["dirac-clic-calibration-status", str(idle)], f"{other} bob"),
        (testbed, "bob", ["dirac-clic-calibration-kill", str(idle)], f"{other} bob"),
        (testbed, "bob", ["dirac-clic-calibration-results", str(idle)], f"{other} bob"),
        # not an ID
        (testbed, "alice", ["dirac-clic-calibration-status", "12", "abc"], "a calibration ID is a whole number, not 'abc'"),
        (testbed, "alice", ["dirac-clic-calibration-kill", "1.5"], "a calibration ID is a whole number, not '1.5'"),
        (testbed, "alice", ["dirac-clic-calibration-results", "x1"], "a calibration ID is a whole number, not 'x1'"),
        # no settings file
        (testbed, "alice", ["dirac-clic-calibration-submit", "nowhere.yaml"], "settings file nowhere.yaml does not exist"),
        (down, "alice", ["dirac-clic-calibration-submit", "--dry-run", "nowhere.yaml"], "settings file nowhere.yaml does not exist"),
        # results of a calibration that has not finished
        (testbed, "alice", ["dirac-clic-calibration-results", str(idle)], f"calibration {idle} is running: results exist once it finished"),
        # a certificate the Registry does not know
        (testbed, "mallory", ["dirac-clic-calibration-status"],
         f"the Calibration service at {testbed.url} does not allow you to call getCalibrationStatus: "
         f"{UNAUTHORIZED} ( 1111 : {UNAUTHORIZED})"),
    ]
    refused = f"the Calibration service at {down.url} does not answer: Connection refused"
    cases += [
        (down, "alice", ["dirac-clic-calibration-status"], refused),
        (down, "alice", ["dirac-clic-calibration-status", "--json"], refused),
        (down, "alice", ["dirac-clic-calibration-kill", "3"], refused),
        (down, "alice", ["dirac-clic-calibration-results", "3"], refused),
        (down, "alice", ["dirac-clic-calibration-submit", "--workdir", str(tmp_path / "work"), str(valid)],
         f"calibration not created: {refused}"),
    ]
    processes = [command(bed.env(user), *args, cwd=tmp_path) for bed, user, args, _ in cases]
    for process, (_, _, _, expected) in zip(processes, cases, strict=True):
        assert_one_line_error(finish(process), expected)
    assert not (tmp_path / "work").exists()  # no worker was started for the refused submission


# ------------------------------------------------------------------------------------ status
def test_status_lists_only_the_callers_calibrations(testbed, idle, tmp_path):
    second = create_idle(testbed, tmp_path / "second")
    env = testbed.env("alice")
    table, asJson, one, bobs, admins = map(finish, [
        command(env, "dirac-clic-calibration-status", cwd=tmp_path),
        command(env, "dirac-clic-calibration-status", "--json", cwd=tmp_path),
        command(env, "dirac-clic-calibration-status", str(idle), cwd=tmp_path),
        command(testbed.env("bob"), "dirac-clic-calibration-status", "--json", cwd=tmp_path),
        command(testbed.env("admin"), "dirac-clic-calibration-status", "--json", str(idle), cwd=tmp_path),
    ])
    for done in (table, asJson, one, bobs, admins):
        assert done.returncode == 0 and done.stderr == "", done.stderr

    rows = json.loads(asJson.stdout)
    ids = [row["calibrationID"] for row in rows]
    assert {idle, second} <= set(ids) and ids == sorted(ids, reverse=True)  # newest first
    assert {row["owner"] for row in rows} == {"alice"}
    mine = next(row for row in rows if row["calibrationID"] == idle)
    assert (mine["status"], mine["step"], mine["phases"], mine["resultsNeeded"]) == ("running", 1, ["1.0"], 4)

    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "Owner", "Status", "Stage", "Phase", "Step", "Results", "Workers", "Last", "update"]
    assert len(lines) == 1 + len(rows)
    assert lines[1 + ids.index(idle)].split()[:7] == [str(idle), "alice", "running", "1", "0", "1", "0/4"]

    # with an ID: the row, then the constants the current step runs with
    assert one.stdout.splitlines()[1].split()[0] == str(idle)
    assert f"Calibration {idle}, constants of step 1:" in one.stdout
    assert "  CalibrECAL" in one.stdout

    assert all(row["owner"] == "bob" for row in json.loads(bobs.stdout))
    assert [row["owner"] for row in json.loads(admins.stdout)] == ["alice"]  # an admin may look


# ------------------------------------------------------------------------------------ kill
def test_kill_is_refused_to_others_and_stops_the_owners_workers(testbed, tmp_path):
    settings = {**SETTINGS, "numberOfJobs": 3, "marlinExecutable": slow_marlin(tmp_path, 8)}
    scenario = Scenario(testbed, tmp_path, TRUTH, {"gamma": (3, 100)}, settings)
    calibrationID = scenario.submit()
    workers = scenario.wait_for_workers(calibrationID, {"running"}, timeout=60)
    pids = [int(w["JobID"].removeprefix("local:")) for w in workers]

    refused = scenario.run_command("dirac-clic-calibration-kill", str(calibrationID), user="bob")
    assert_one_line_error(refused, f"calibration {calibrationID} does not exist or does not belong to bob")
    assert scenario.status(calibrationID)["status"] == "running"

    killed = scenario.run_command("dirac-clic-calibration-kill", str(calibrationID))
    assert (killed.returncode, killed.stdout, killed.stderr) == (0, f"calibration {calibrationID} killed\n", "")
    # each worker learns it at its next contact, after its current (slow) step, and ends
    scenario.wait_for_workers(calibrationID, {"killed"}, timeout=60)
    _, alive = psutil.wait_procs([p for p in map(_process, pids) if p is not None], timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], scenario.logs(calibrationID)

    status = scenario.run_command("dirac-clic-calibration-status", "--json", str(calibrationID))
    row = json.loads(status.stdout)[0]
    assert (row["status"], row["reason"], row["workers"]) == ("killed", "killed by alice", {"killed": 3})
    again = scenario.run_command("dirac-clic-calibration-kill", str(calibrationID))
    assert_one_line_error(again, f"calibration {calibrationID} is already killed")


def test_an_administrator_may_kill_any_calibration(testbed, tmp_path):
    calibrationID = create_idle(testbed, tmp_path)
    done = run(testbed.env("admin"), "dirac-clic-calibration-kill", str(calibrationID), cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"calibration {calibrationID} killed\n", "")
    row = testbed.rpc("alice").getCalibrationStatus([calibrationID])["Value"][0]
    assert (row["status"], row["reason"]) == ("killed", "killed by admin")


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


# ------------------------------------------------------------------------------------ RPC guard rails
def test_only_the_owner_reaches_a_calibration_through_the_rpc(testbed, idle):
    before = snapshot(testbed, idle)
    bob = testbed.rpc("bob")
    calls = {
        "getCalibrationStatus": ([idle],),
        "getCalibrationHistory": (idle,),
        "getWorkerSetup": (idle, 0),
        "getStepParameters": (idle, 0, 0),
        "waitForNextStep": (idle, 0, 0),
        "submitResult": (idle, 1, 0, {"phases": {}}),
        "getCalibrationFile": (idle, "steering.xml"),
        "getCalibrationResults": (idle,),
        "registerWorkers": (idle, {"0": "local:1"}),
        "killCalibration": (idle,),
    }
    for method, args in calls.items():
        result = getattr(bob, method)(*args)
        assert not result["OK"], method
        assert result["Message"] == f"calibration {idle} does not exist or does not belong to bob", method
    assert snapshot(testbed, idle) == before

    # the owner is served, and an administrator may look
    setup = testbed.rpc("alice").getWorkerSetup(idle, 0)
    assert setup["OK"] and setup["Value"]["workerID"] == 0, setup
    steering = testbed.rpc("alice").getCalibrationFile(idle, "steering.xml")
    assert steering["OK"] and "MyDDCaloDigi_10ns" in steering["Value"]["content"]
    admin = testbed.rpc("admin")
    assert admin.getCalibrationStatus([idle])["Value"][0]["owner"] == "alice"
    assert [h["step"] for h in admin.getCalibrationHistory(idle)["Value"]] == [1]
    assert snapshot(testbed, idle) == before


def test_bad_rpc_arguments_get_a_specific_error_and_change_nothing(testbed, idle):
    settings = testbed.rpc("alice").getWorkerSetup(idle, 0)["Value"]["settings"]
    valid = {"phases": {"1.0": phase_for("1.0").spec(PhaseContext.from_settings(settings)).empty().to_payload()}}

    def report(**changes):
        summary = {**valid["phases"]["1.0"], **changes}
        return {"phases": {"1.0": summary}}

    workers = f"is not one of the 4 workers of calibration {idle}"
    cases = [
        ("getStepParameters", ("1", 0, 0), "Type mismatch in parameter 0"),
        ("submitResult", (idle, 1, 0, "my report"), "Type mismatch in parameter 3"),
        ("killCalibration", (str(idle),), "Type mismatch in parameter 0"),
        ("getCalibrationStatus", ([idle, "x"],), "calibration IDs are integers from 1 to 2147483647, not 'x'"),
        ("getWorkerSetup", (idle, 4), f"worker ID 4 {workers}"),
        ("getWorkerSetup", (idle, -1), f"worker ID -1 {workers}"),
        ("getStepParameters", (idle, 99, 0), f"worker ID 99 {workers}"),
        ("getStepParameters", (idle, 0, -2), "last step must be a non-negative integer or None, not -2"),
        ("waitForNextStep", (idle, 0, -2), "last step must be a non-negative integer or None, not -2"),
        ("submitResult", (idle, 1, 7, valid), f"worker ID 7 {workers}"),
        ("submitResult", (idle, 0, 0, valid), "step must be a positive integer, not 0"),
        ("submitResult", (idle, 3, 0, valid), f"calibration {idle} has not reached step 3 (current 1)"),
        ("submitResult", (idle, 1, 0, {"summary": valid["phases"]}),
         "a worker report must be {'phases': {'<stage>.<phase>': summary, ...}}"),
        ("submitResult", (idle, 1, 0, {"phases": {"1.1": valid["phases"]["1.0"]}}),
         "the report covers phases ['1.1'], but the step measures ['1.0']"),
        ("submitResult", (idle, 1, 0, report(version=99)), "bad report for phase 1.0: summary version 99 is not"),
        ("submitResult", (idle, 1, 0, report(nEvents=-5)),
         "bad report for phase 1.0: summary nEvents must be a non-negative integer up to 2^53, not -5"),
        ("submitResult", (idle, 1, 0, report(hists={})), "bad report for phase 1.0: summary histograms do not match"),
        ("registerWorkers", (idle, {"first": "local:1"}), "worker ID 'first' is not an integer"),
        ("registerWorkers", (idle, {"9": "local:1"}), f"worker ID 9 {workers}"),
        ("getCalibrationFile", (idle, "../../etc/passwd"), f"calibration {idle} has no file '../../etc/passwd'"),
        ("createCalibration", ({**settings, "numberOfJobs": "four"}, {}), "invalid settings: numberOfJobs"),
        ("createCalibration", (settings, {"notes.txt": "hello"}),
         "input files must contain the Marlin steering file as 'steering.xml'"),
        # the agent's methods need a host certificate
        ("closeReadySteps", (), UNAUTHORIZED),
        ("failCalibration", (idle, "because"), UNAUTHORIZED),
        ("setWorkerStates", (idle, {"0": {"Status": "failed"}}), UNAUTHORIZED),
        ("removeCalibrationData", (idle,), UNAUTHORIZED),
    ]
    before = snapshot(testbed, idle)
    alice = testbed.rpc("alice")
    for method, args, expected in cases:
        result = getattr(alice, method)(*args)
        assert not result["OK"], (method, args)
        assert result["Message"].startswith(expected), (method, args, result["Message"])
    assert snapshot(testbed, idle) == before


def test_the_service_holds_a_waiting_workers_call_until_the_calibration_moves_on(testbed, tmp_path):
    """waitForNextStep over DISET/TLS: held while the step is open, answered within a second of
    the kill (the step watch's look), not after WorkerHoldTime."""
    calibrationID = create_idle(testbed, tmp_path)
    alice = testbed.rpc("alice")
    settings = alice.getWorkerSetup(calibrationID, 0)["Value"]["settings"]
    empty = phase_for("1.0").spec(PhaseContext.from_settings(settings)).empty().to_payload()
    assert alice.submitResult(calibrationID, 1, 0, {"phases": {"1.0": empty}})["Value"]["verdict"] == "accepted"
    answer = {}

    def wait():
        began = time.monotonic()
        answer.update(result=testbed.rpc("alice").waitForNextStep(calibrationID, 0, 1), after=time.monotonic() - began)

    waiting = threading.Thread(target=wait, daemon=True)
    waiting.start()
    time.sleep(3.0)
    assert waiting.is_alive(), f"answered at once: {answer}"
    assert dbModule.CalibrationDB(testbed.db_url).getWorker(calibrationID, 0)["Status"] == "waiting"
    killed = time.monotonic()
    assert alice.killCalibration(calibrationID)["OK"]
    waiting.join(30)
    assert answer["result"]["OK"] and answer["result"]["Value"]["action"] == "killed", answer
    assert time.monotonic() - killed < 2.0 and answer["after"] < 10.0
