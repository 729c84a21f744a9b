"""The worker loop against a scripted service, and real reconstruction steps without DIRAC.

The service is not what is under test: ``ScriptedRPC`` answers the worker's RPC methods from
scripts (S_OK/S_ERROR dicts) and records every call, and ``FakeTime`` records the delays the
worker sleeps and moves a clock by them, so an hour of back-off takes no time. Set-ups come
from the service's own ``worker_setup`` on a real SQLite CalibrationDB. The reconstruction is
the emulator: the ``marlin-emulator`` command for the end-to-end step, the in-process
``EmulatorRunner`` (same steering file in, same files out) where only the loop is at stake.
"""
from __future__ import annotations

import copy
import random
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import uproot

from ILCDIRAC.CalibrationSystem.Client import Worker as worker_module
from ILCDIRAC.CalibrationSystem.Client.Worker import (
    EXIT_ENDED,
    EXIT_RECONSTRUCTION,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    START_RATE,
    ReconstructionFailed,
    Worker,
    download_lfn,
)
from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import CALLER, STEERING, EmulatorRunner, LogicRPC, input_files
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic
from ILCDIRAC.CalibrationSystem.Utilities.pandora_settings import histogram_files
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict
from ILCDIRAC.CalibrationSystem.Utilities.steering import FolderFiles, Steering, read_steering
from marlin_emulator import STEERING_DIR
from marlin_emulator.samples import make_sample_files

MARLIN = Path(sys.executable).with_name("marlin-emulator")
DETECTOR = "FCCee_o1_v04"
#: Starting constants that differ from the shipped steering file, so the steering written for a
#: step can only carry them if the worker put them there.
STARTING = {"CalibrECAL": [41.5, 41.5], "ECALEndcapCorrectionFactor": 1.07, "CalibrHCALBarrel": 48.25,
            "ECalToEMGeVCalibration": 1.09, "HCalToMipCalibration": 38.5}
#: Where each constant lives in a Marlin steering file (DDCaloDigi or DDMarlinPandora).
DIGI_CONSTANTS = {"CalibrECAL", "ECALEndcapCorrectionFactor", "CalibrHCALBarrel", "CalibrHCALEndcap", "CalibrHCALOther"}
PANDORA_CONSTANTS = {"ECalToMipCalibration", "HCalToMipCalibration", "MuonToMipCalibration", "ECalToEMGeVCalibration",
                     "HCalToEMGeVCalibration", "ECalToHadGeVCalibrationBarrel", "ECalToHadGeVCalibrationEndCap",
                     "HCalToHadGeVCalibration", "MaxHCalHitHadronicEnergy"}
#: Gamma: 3 files x 30 events shared by 2 workers: worker 1 reads events 45-89 = file 1 from
#: event 15 on, and file 2.
GAMMA_FILES, GAMMA_EVENTS = 3, 30
ZUDS_FILES, ZUDS_EVENTS = 2, 6
QUICK = {"minimum": 5.0, "maximum": 30.0, "patience": 600.0}


# ------------------------------------------------------------------------------------ doubles
def ok(value):
    return {"OK": True, "Value": value}


def error(message, errno=None):
    result = {"OK": False, "Message": message}
    if errno is not None:
        result["Errno"] = errno
    return result


class ScriptedRPC:
    """The RPC methods a Worker calls; each answers from its script in order (the last answer
    repeats; a callable answer is called with the arguments). Every call is recorded."""

    METHODS = ("getWorkerSetup", "waitForNextStep", "submitResult", "getCalibrationFile")

    def __init__(self, **scripts):
        self.scripts = {name: list(answers) for name, answers in scripts.items()}
        self.scripts.setdefault("submitResult", [ok({"verdict": "accepted", "results": 1, "needed": 2, "closedStep": False})])
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, method):
        if method not in self.METHODS:
            raise AttributeError(method)

        def answer(*args):
            self.calls.append((method, args))
            script = self.scripts[method]
            reply = script.pop(0) if len(script) > 1 else script[0]
            return reply(*args) if callable(reply) else reply

        return answer

    def called(self, method):
        return [args for name, args in self.calls if name == method]


class FakeTime:
    """sleep() records the delay and moves the clock on by it; nothing really waits."""

    def __init__(self):
        self.now, self.delays = 1000.0, []

    def sleep(self, delay):
        assert delay >= 0
        self.delays.append(delay)
        self.now += delay

    def clock(self):
        return self.now


def run_answer(step, key, constants, inputs=None):
    stage, phase = (int(x) for x in key.split("."))
    return ok({"action": "run", "step": step, "stage": stage, "phase": phase, "phases": [key],
               "constants": constants, "inputs": inputs or {},
               "applicationStatus": f"Running: stage: {stage}; phase: {phase}; step: {step}"})


def wait_answer(calibrationID, step):
    return ok({"action": "wait", "step": step + 1,
               "applicationStatus": f"PandoraCalib_{calibrationID}: step {step} is finished. Waiting for other jobs"})


def expected_delays(seed, bases, maximum):
    """The jittered delays a Random(seed) gives for these back-off bases: 50-150 %, capped."""
    rng = random.Random(seed)
    return [min(base * rng.uniform(0.5, 1.5), maximum) for base in bases]


def geometric(first, factor, maximum, count):
    return [min(first * factor**k, maximum) for k in range(count)]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    gamma = make_sample_files("gamma", 10.0, GAMMA_FILES, GAMMA_EVENTS, DETECTOR, 5, folder)
    zuds = make_sample_files("zuds", 200.0, ZUDS_FILES, ZUDS_EVENTS, DETECTOR, 5, folder)
    return {"gamma": [str(p) for p in gamma], "zuds": [str(p) for p in zuds]}


def new_calibration(folder: Path, samples, **overrides):
    """A real calibration (two workers) in a fresh SQLite CalibrationDB."""
    settings = {
        "detectorModel": DETECTOR, "steeringFile": str(STEERING), "backend": "local", "numberOfJobs": 2,
        "phaseSequence": ["1.0", "2.5", "3.0"], "marlinExecutable": str(MARLIN), "startingConstants": STARTING,
        "gammaFiles": samples["gamma"], "gammaEventsPerFile": GAMMA_EVENTS,
        "zudsFiles": samples["zuds"], "zudsEventsPerFile": ZUDS_EVENTS, **overrides,
    }
    db = CalibrationDB(f"sqlite+pysqlite:///{folder / 'calibration.sqlite'}")
    calibrationID = logic.create_calibration(db, CALLER, settings, input_files(settings_from_dict(settings).to_dict()))
    return SimpleNamespace(db=db, id=calibrationID, constants=db.getStep(calibrationID, 1)["Constants"])


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, samples):
    return new_calibration(tmp_path_factory.mktemp("calibration"), samples)


def worker_setup(calibration, workerID=1, polling=None, **settings):
    setup = logic.worker_setup(calibration.db, CALLER, calibration.id, workerID, QUICK if polling is None else polling)
    setup = copy.deepcopy(setup)
    setup["settings"].update(settings)
    return setup


def make_worker(rpc, calibration, workDir, time_, reports, seed=1, **kwargs):
    kwargs.setdefault("runner", EmulatorRunner())
    kwargs.setdefault("startDelay", 0.0)
    return Worker(rpc, calibration.id, 1, workDir, report=reports.append, sleep=time_.sleep, clock=time_.clock,
                  rng=random.Random(seed), **kwargs)


# ------------------------------------------------------------------------------------ steering reading
def run_steering(workDir: Path, step: int, sample: str) -> Steering:
    """A run's steering file read back as Marlin reads it (includes from the work directory)."""
    return read_steering(FolderFiles(workDir), f"step{step}_{sample}.xml")


def global_parameters(parsed: Steering) -> dict[str, str]:
    return {p.name: parsed.global_value(p.name) for p in parsed.globals}


def processor_parameters(parsed: Steering, name: str) -> dict[str, str]:
    return parsed.processors[name].values()


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.split()]


# ------------------------------------------------------------------------------------ service trouble
def test_unreachable_service_is_retried_with_growing_jittered_delays_until_the_patience_is_spent(tmp_path, calibration):
    time_, reports = FakeTime(), []
    rpc = ScriptedRPC(getWorkerSetup=[error("Connection refused")])
    worker = make_worker(rpc, calibration, tmp_path / "w", time_, reports, seed=11)

    assert worker.run() == EXIT_UNREACHABLE

    # before the set-up the worker knows no service options: the defaults (an hour, 120 s cap)
    patience, maximum = 3600.0, 120.0
    delays = time_.delays
    bases = geometric(1.0, 1.6, maximum, len(delays))
    assert all(0.5 * b <= d <= min(1.5 * b, maximum) for d, b in zip(delays, bases, strict=True)), list(zip(delays, bases, strict=True))
    assert delays == pytest.approx(expected_delays(11, bases, maximum), rel=1e-12)
    below = [d for d in delays if d < maximum]
    assert max(delays) == maximum and len(set(below)) == len(below) > 10, "jittered, never above the maximum"
    assert sum(delays) >= patience > sum(delays[:-1]), "gives up at the first failure after the patience"
    assert len(rpc.called("getWorkerSetup")) == len(delays) + 1
    assert reports == [f"PandoraCalib_{calibration.id}: service unreachable, worker stopped"]


def test_patience_and_polling_come_from_the_service_once_it_answered(tmp_path, calibration):
    time_, reports = FakeTime(), []
    polling = {"minimum": 2.0, "maximum": 8.0, "factor": 2.0, "patience": 30.0}
    rpc = ScriptedRPC(getWorkerSetup=[ok(worker_setup(calibration, polling=polling))],
                      waitForNextStep=[error("Connection refused")])
    worker = make_worker(rpc, calibration, tmp_path / "w", time_, reports, seed=5)

    assert worker.run() == EXIT_UNREACHABLE
    delays = time_.delays
    bases = geometric(1.0, 2.0, 8.0, len(delays))  # retries start after at most a second
    assert delays == pytest.approx(expected_delays(5, bases, 8.0), rel=1e-12)
    assert sum(delays) >= 30.0 > sum(delays[:-1])
    assert len(rpc.called("getWorkerSetup")) == 1


def test_a_service_that_comes_back_within_the_patience_is_simply_used(tmp_path, calibration):
    time_, reports = FakeTime(), []
    rpc = ScriptedRPC(
        getWorkerSetup=[error("Connection refused")] * 3 + [ok(worker_setup(calibration))],
        waitForNextStep=[error("timed out"), error("timed out"), ok({"action": "finished", "reason": ""})],
    )
    worker = make_worker(rpc, calibration, tmp_path / "w", time_, reports, seed=3)

    assert worker.run() == EXIT_ENDED
    assert len(time_.delays) == 5
    setupDelays, stepDelays = time_.delays[:3], time_.delays[3:]
    assert all(0.5 * b <= d <= 1.5 * b for d, b in zip(setupDelays, geometric(1.0, 1.6, 120.0, 3), strict=True))
    assert all(0.5 * b <= d <= 1.5 * b for d, b in zip(stepDelays, geometric(1.0, 1.6, 30.0, 2), strict=True)), "back-off per call"
    assert reports == [f"PandoraCalib_{calibration.id}: Calibration is finished."]


def test_the_workers_of_a_calibration_reach_the_service_at_start_rate_at_most(tmp_path, calibration):
    """A thousand jobs started in the same second ask for their set-up spread over 50 s."""
    firstCalls = []
    for workerID in (0, 1, 2, 999):
        time_ = FakeTime()
        rpc = ScriptedRPC(getWorkerSetup=[lambda *args, clock=time_: firstCalls.append(clock.now - 1000.0)
                                          or error("no", 22)])
        Worker(rpc, calibration.id, workerID, tmp_path / f"w{workerID}", sleep=time_.sleep, clock=time_.clock).run()
    assert firstCalls == pytest.approx([0.0, 1 / START_RATE, 2 / START_RATE, 999 / START_RATE])
    assert START_RATE <= 25, "one service process answers some 60 calls a second"


def test_a_refusal_from_the_real_service_logic_is_not_retried(tmp_path, calibration):
    time_, reports = FakeTime(), []
    worker = Worker(LogicRPC(calibration.db), calibration.id, 7, tmp_path / "w", report=reports.append,
                    sleep=time_.sleep, clock=time_.clock)

    assert worker.run() == EXIT_REFUSED
    assert time_.delays == [7 / START_RATE], "its share of the start, then no retry"
    assert len(reports) == 1 and f"worker ID 7 is not one of the 2 workers of calibration {calibration.id}" in reports[0]
    assert reports[0].startswith(f"PandoraCalib_{calibration.id}: getWorkerSetup: ")


@pytest.mark.parametrize("answer", [error("Unauthorized query", errno=1131), error("Unauthorized query"),
                                    error("last step must be a non-negative integer", errno=22)])
def test_unauthorized_or_invalid_requests_end_the_worker_at_once(tmp_path, calibration, answer):
    time_, reports = FakeTime(), []
    rpc = ScriptedRPC(getWorkerSetup=[ok(worker_setup(calibration))], waitForNextStep=[answer])
    worker = make_worker(rpc, calibration, tmp_path / "w", time_, reports)

    assert worker.run() == EXIT_REFUSED
    assert len(rpc.called("waitForNextStep")) == 1 and time_.delays == []
    assert reports == [f"PandoraCalib_{calibration.id}: waitForNextStep: {answer['Message']}"]


def test_an_answer_the_worker_does_not_understand_is_a_refusal(tmp_path, calibration):
    time_, reports = FakeTime(), []
    rpc = ScriptedRPC(getWorkerSetup=[ok(worker_setup(calibration))], waitForNextStep=[ok({"action": "pause"})])

    assert make_worker(rpc, calibration, tmp_path / "w", time_, reports).run() == EXIT_REFUSED
    assert "unknown action 'pause'" in reports[-1]


# ------------------------------------------------------------------------------------ waiting and ending
def test_waiting_sleeps_with_growing_jittered_delays_and_a_run_resets_them(tmp_path, calibration):
    time_, reports = FakeTime(), []
    cid = calibration.id
    rpc = ScriptedRPC(
        getWorkerSetup=[ok(worker_setup(calibration))],
        waitForNextStep=[wait_answer(cid, 0)] * 5 + [run_answer(1, "1.0", calibration.constants)]
        + [wait_answer(cid, 1)] * 3 + [ok({"action": "finished", "reason": ""})],
    )
    worker = make_worker(rpc, calibration, tmp_path / "w", time_, reports, seed=21)

    assert worker.run() == EXIT_ENDED
    bases = geometric(5.0, 1.6, 30.0, 5) + geometric(5.0, 1.6, 30.0, 3)
    assert bases[4] == 30.0, "the fifth wait is at the cap"
    assert time_.delays == pytest.approx(expected_delays(21, bases, 30.0), rel=1e-12)
    assert all(0.5 * b <= d <= min(1.5 * b, 30.0) for d, b in zip(time_.delays, bases, strict=True))
    assert time_.delays[5] <= 7.5 < 0.5 * bases[3], "after the run the back-off starts again at the minimum"

    waiting0 = f"PandoraCalib_{cid}: step 0 is finished. Waiting for other jobs"
    waiting1 = f"PandoraCalib_{cid}: step 1 is finished. Waiting for other jobs"
    assert reports == [waiting0] * 5 + ["Running: stage: 1; phase: 0; step: 1"] + [waiting1] * 3 + [
        f"PandoraCalib_{cid}: Calibration is finished."]
    assert [args[2] for args in rpc.called("waitForNextStep")] == [0] * 6 + [1] * 4
    (submitted,) = rpc.called("submitResult")
    assert submitted[:3] == (cid, 1, 1) and set(submitted[3]["phases"]) == {"1.0"}


def test_waiting_follows_the_services_retry_hint_within_the_polling_bounds(tmp_path, calibration):
    """QUICK polling allows 5-30 s: hints inside are slept as given, outside they are clamped,
    and an answer without a usable hint falls back to the jittered back-off."""
    time_, reports = FakeTime(), []
    cid = calibration.id

    def hinted(hint):
        answer = wait_answer(cid, 0)
        answer["Value"]["retryAfter"] = hint
        return answer

    rpc = ScriptedRPC(
        getWorkerSetup=[ok(worker_setup(calibration))],
        waitForNextStep=[hinted(7.25), hinted(0.01), hinted(500), hinted("soon"), hinted(float("nan")), hinted(True),
                           ok({"action": "finished", "reason": ""})],
    )
    assert make_worker(rpc, calibration, tmp_path / "w", time_, reports, seed=4).run() == EXIT_ENDED
    assert time_.delays[:3] == [7.25, 5.0, 30.0]
    assert time_.delays[3:] == pytest.approx(expected_delays(4, geometric(5.0, 1.6, 30.0, 3), 30.0), rel=1e-12)


@pytest.mark.parametrize("action", ["finished", "killed", "failed"])
def test_an_ended_calibration_ends_the_worker_with_the_talks_wording(tmp_path, calibration, action):
    time_, reports = FakeTime(), []
    rpc = ScriptedRPC(getWorkerSetup=[ok(worker_setup(calibration))],
                      waitForNextStep=[ok({"action": action, "reason": "whatever the service says"})])

    assert make_worker(rpc, calibration, tmp_path / "w", time_, reports).run() == EXIT_ENDED
    assert reports == [f"PandoraCalib_{calibration.id}: Calibration is {action}."]
    assert reports[0] == logic.application_status(calibration.id, action), "the service stores the same words"


def test_the_service_words_running_and_waiting_as_the_talk(calibration):
    assert logic.application_status(291, "run", 19, "3.3") == "Running: stage: 3; phase: 3; step: 19"
    assert logic.application_status(291, "wait", 19) == "PandoraCalib_291: step 19 is finished. Waiting for other jobs"


# ------------------------------------------------------------------------------------ one real step
def test_one_real_step_end_to_end_with_the_marlin_emulator_command(tmp_path, samples):
    """Real service logic on SQLite, the real marlin-emulator command: the worker writes the
    step's steering file, runs it, reduces the ROOT file and the service accepts the report;
    then the owner kills the calibration and the worker stops."""
    assert MARLIN.is_file(), f"{MARLIN} is missing: run `.venv/bin/pip install --no-deps --no-build-isolation .`"
    calibration = new_calibration(tmp_path, samples)
    captured = {}

    class CapturingRPC(LogicRPC):
        def submitResult(self, calibrationID, step, workerID, report):
            answer = super().submitResult(calibrationID, step, workerID, report)
            captured.update(step=step, report=report, answer=answer)
            logic.kill_calibration(self.db, CALLER, calibrationID)
            return answer

    time_, reports = FakeTime(), []
    worker = Worker(CapturingRPC(calibration.db), calibration.id, 1, tmp_path / "worker_1", report=reports.append,
                    sleep=time_.sleep, clock=time_.clock, startDelay=0.0)
    assert worker.run() == EXIT_ENDED, reports
    assert reports == ["Running: stage: 1; phase: 0; step: 1",
                       f"PandoraCalib_{calibration.id}: step 1 is finished. Waiting for other jobs",
                       f"PandoraCalib_{calibration.id}: Calibration is killed."]
    assert captured["answer"]["OK"] and captured["answer"]["Value"]["verdict"] == "accepted"

    workDir = tmp_path / "worker_1"
    root = run_steering(workDir, 1, "gamma")
    glob = global_parameters(root)
    assert glob["LCIOInputFiles"].split() == samples["gamma"][1:3]
    assert (int(glob["SkipNEvents"]), int(glob["MaxRecordNumber"])) == (15, 45)
    settings = calibration.db.getCalibration(calibration.id)["Settings"]
    digi = processor_parameters(root, settings["DDCaloDigiName"])
    pandora = processor_parameters(root, settings["DDPandoraPFANewProcessorName"])
    constants = calibration.db.getStep(calibration.id, 1)["Constants"]
    assert set(constants) <= DIGI_CONSTANTS | PANDORA_CONSTANTS
    for name, value in constants.items():
        where = digi if name in DIGI_CONSTANTS else pandora
        assert numbers(where[name]) == pytest.approx(np.atleast_1d(value).tolist(), rel=1e-9), name
    for name, value in STARTING.items():
        assert numbers((digi if name in DIGI_CONSTANTS else pandora)[name]) == pytest.approx(np.atleast_1d(value))
    assert float(pandora["MaxClusterEnergyToApplySoftComp"]) == 0
    assert pandora["PandoraSettingsXmlFile"] == "PandoraSettings/PandoraSettingsDefault.xml"
    assert processor_parameters(root, settings["PfoAnalysisName"])["RootFile"] == "step1_gamma.root"

    # the summary, recomputed from the ROOT file with the phase-1.0 selection
    with uproot.open(workDir / "step1_gamma.root") as rootFile:
        tree = rootFile["PfoAnalysisTree"]
        eEcal = tree["ECalTotalCaloHitEnergy"].array(library="np").astype(float)
        eTotal = tree["TotalCaloHitEnergy"].array(library="np").astype(float)
        nTargets = tree["nPfoTargetsTotal"].array(library="np")
        nPhotons = tree["nPfoTargetsPhotons"].array(library="np")
        cosTheta = tree["pfoTargetCosTheta"].array(library="np")
    leading = np.abs(np.array([c[0] if len(c) else np.nan for c in cosTheta], dtype=float))
    selected = (nTargets == 1) & (nPhotons == 1) & (eTotal - eEcal < 0.1) & (leading < 0.95)
    summary = captured["report"]["phases"]["1.0"]
    assert summary["nEvents"] == len(eEcal) == 45
    for name, window in (("ecalBarrel", settings["ecalBarrelCosThetaRange"]),
                         ("ecalEndcap", settings["ecalEndcapCosThetaRange"])):
        values = eEcal[selected & (leading > window[0]) & (leading < window[1])]
        inside, _ = np.histogram(values, bins=3000, range=(0.0, 30.0))
        expected = np.array([int(np.sum(values < 0))] + inside.tolist() + [int(np.sum(values >= 30.0))])
        hist = summary["hists"][name]
        assert hist["axes"] == [[3000, 0.0, 30.0, True]]
        # sparse: the filled bins (flow bins included) and their counts
        assert hist["index"] == np.flatnonzero(expected).tolist(), name
        assert hist["values"] == expected[expected > 0].tolist(), name
    assert sum(summary["hists"]["ecalBarrel"]["values"]) + sum(summary["hists"]["ecalEndcap"]["values"]) > 10


# ------------------------------------------------------------------------------------ inputs
def test_the_setup_is_fetched_once_and_local_samples_are_read_in_place(tmp_path, calibration, samples):
    time_, reports = FakeTime(), []
    runner = EmulatorRunner()
    rpc = ScriptedRPC(
        getWorkerSetup=[ok(worker_setup(calibration))],
        waitForNextStep=[run_answer(1, "1.0", calibration.constants), wait_answer(calibration.id, 1),
                           run_answer(2, "1.0", calibration.constants), run_answer(3, "1.0", calibration.constants),
                           ok({"action": "finished", "reason": ""})],
    )
    workDir = tmp_path / "w"
    assert make_worker(rpc, calibration, workDir, time_, reports, runner=runner).run() == EXIT_ENDED

    assert len(rpc.called("getWorkerSetup")) == 1
    assert [args[1] for args in rpc.called("submitResult")] == [1, 2, 3]
    for step in (1, 2, 3):
        files = global_parameters(run_steering(workDir, step, "gamma"))["LCIOInputFiles"].split()
        assert files == samples["gamma"][1:3]
    assert not (workDir / "inputs").exists()
    assert not list(workDir.glob("*.slcio"))


class FakeGrid:
    """Stands in for the grid storage: hands out copies of local files under their LFNs."""

    def __init__(self, files: dict[str, str]):
        self.files, self.fetched = files, []

    def download(self, lfn: str, folder: Path) -> Path:
        self.fetched.append((lfn, folder))
        folder.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.files[lfn], folder / Path(lfn).name))


def test_lfns_are_downloaded_once_per_worker_and_reused_for_every_step(tmp_path, calibration, samples):
    lfns = ["/ilc/user/p/physicist/gamma/gamma_1.slcio", "/ilc/user/p/physicist/gamma/gamma_2.slcio"]
    grid = FakeGrid(dict(zip(lfns, samples["gamma"][1:3], strict=True)))
    setup = worker_setup(calibration)
    setup["samples"]["gamma"]["files"] = ["LFN:" + lfns[0], lfns[1]]  # with and without the prefix
    rpc = ScriptedRPC(getWorkerSetup=[ok(setup)],
                      waitForNextStep=[run_answer(1, "1.0", calibration.constants),
                                         run_answer(2, "1.0", calibration.constants), ok({"action": "finished"})])
    time_, reports, workDir = FakeTime(), [], tmp_path / "w"
    assert make_worker(rpc, calibration, workDir, time_, reports, download=grid.download).run() == EXIT_ENDED, reports

    folder = workDir / "inputs" / "ilc" / "user" / "p" / "physicist" / "gamma"
    assert grid.fetched == [(lfns[0], folder), (lfns[1], folder)]
    for step in (1, 2):
        files = global_parameters(run_steering(workDir, step, "gamma"))["LCIOInputFiles"].split()
        assert files == [str(folder / "gamma_1.slcio"), str(folder / "gamma_2.slcio")]
    assert len(rpc.called("submitResult")) == 2


def test_an_lfn_without_a_way_to_download_it_is_a_clear_error(tmp_path, calibration):
    setup = worker_setup(calibration)
    setup["samples"]["gamma"]["files"] = ["LFN:/ilc/user/p/physicist/gamma_1.slcio"]
    rpc = ScriptedRPC(getWorkerSetup=[ok(setup)], waitForNextStep=[ok({"action": "finished"})])
    reports = []
    assert make_worker(rpc, calibration, tmp_path / "w", FakeTime(), reports).run() == EXIT_RECONSTRUCTION
    assert "LFN:/ilc/user/p/physicist/gamma_1.slcio is an LFN, but this worker cannot download" in reports[-1]
    assert rpc.called("waitForNextStep") == []


class RecordingDataManager:
    """DIRAC's DataManager with the grid storage replaced: getFile copies from a local folder."""

    calls: list[tuple[str, str]] = []
    store: dict[str, Path] = {}

    def getFile(self, lfn, destinationDir=""):
        RecordingDataManager.calls.append((lfn, destinationDir))
        if lfn not in self.store:
            return ok({"Successful": {}, "Failed": {lfn: "No such file or directory"}})
        return ok({"Successful": {lfn: shutil.copy(self.store[lfn], destinationDir)}, "Failed": {}})


def test_download_lfn_goes_through_the_dirac_data_manager(tmp_path, monkeypatch, samples):
    from DIRAC.DataManagementSystem.Client import DataManager as data_manager_module

    RecordingDataManager.calls = []
    RecordingDataManager.store = {"/ilc/user/p/physicist/g.slcio": Path(samples["gamma"][0])}
    monkeypatch.setattr(data_manager_module, "DataManager", RecordingDataManager)

    local = download_lfn("/ilc/user/p/physicist/g.slcio", tmp_path / "inputs" / "x")
    assert local == tmp_path / "inputs" / "x" / Path(samples["gamma"][0]).name
    assert local.read_bytes() == Path(samples["gamma"][0]).read_bytes()
    with pytest.raises(ReconstructionFailed, match=r"cannot download sample file /ilc/missing.slcio: No such file"):
        download_lfn("/ilc/missing.slcio", tmp_path / "inputs")
    assert RecordingDataManager.calls == [("/ilc/user/p/physicist/g.slcio", str(tmp_path / "inputs" / "x")),
                                          ("/ilc/missing.slcio", str(tmp_path / "inputs"))]


# ------------------------------------------------------------------------------------ failures
@pytest.mark.parametrize(
    "command, words",
    [
        ("sh -c 'echo Marlin: cannot open the geometry >&2; exit 1'", ["exited with 1", "cannot open the geometry", "sh -c"]),
        ("/nonexistent/bin/Marlin", ["cannot run '/nonexistent/bin/Marlin'"]),
        ("true", ["reconstruction left no ROOT file", "step1_gamma.root"]),
    ],
)
def test_a_failing_reconstruction_ends_the_worker_with_the_reason(tmp_path, calibration, command, words):
    rpc = ScriptedRPC(getWorkerSetup=[ok(worker_setup(calibration, marlinExecutable=command))],
                      waitForNextStep=[run_answer(1, "1.0", calibration.constants)])
    reports = []
    worker = make_worker(rpc, calibration, tmp_path / "w", FakeTime(), reports, runner=worker_module.run_command)

    assert worker.run() == EXIT_RECONSTRUCTION
    assert reports[0] == "Running: stage: 1; phase: 0; step: 1"
    assert reports[-1].startswith(f"PandoraCalib_{calibration.id}: reconstruction failed: ")
    for word in words:
        assert word in reports[-1], reports[-1]
    assert rpc.called("submitResult") == []


# ------------------------------------------------------------------------------------ Pandora settings
DEFAULT_SETTINGS = "PandoraSettings/PandoraSettingsDefault.xml"
USER_LIKELIHOOD = "PandoraSettings/PandoraLikelihoodData9EBin.xml"
TRAINING_SETTINGS = "CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml"


def without_histogram_files(text: str) -> str:
    """The settings text with every HistogramFile value blanked."""
    for name in set(histogram_files(text)):
        text = text.replace(f">{name}<", "><")
    return text


def test_after_stage_2_the_merged_likelihood_is_fetched_once_and_the_users_settings_point_at_it(tmp_path, calibration):
    likelihood = (STEERING_DIR / USER_LIKELIHOOD).read_text().replace("<NSignalEvents>", "<NSignalEvents> ")
    stored = "step7_PandoraLikelihoodData.xml"
    inputs = {"PandoraLikelihoodData.xml": stored}
    rpc = ScriptedRPC(
        getWorkerSetup=[ok(worker_setup(calibration))],
        waitForNextStep=[run_answer(8, "3.0", calibration.constants, inputs),
                           run_answer(9, "3.0", calibration.constants, inputs), ok({"action": "finished"})],
        getCalibrationFile=[ok({"encoding": "utf-8", "content": likelihood})],
    )
    workDir, reports = tmp_path / "w", []
    assert make_worker(rpc, calibration, workDir, FakeTime(), reports).run() == EXIT_ENDED, reports

    assert rpc.called("getCalibrationFile") == [(calibration.id, stored)]
    trained = f"PandoraSettings/PandoraLikelihoodData9EBin_calibration{calibration.id}.xml"
    assert (workDir / trained).read_text() == likelihood
    # the user's own likelihood stays as it came, beside the trained one
    assert (workDir / USER_LIKELIHOOD).read_text() == (STEERING_DIR / USER_LIKELIHOOD).read_text()
    text = (workDir / DEFAULT_SETTINGS).read_text()
    original = (STEERING_DIR / DEFAULT_SETTINGS).read_text()
    assert histogram_files(text) == [trained] * len(histogram_files(original)) != []
    assert without_histogram_files(text) == without_histogram_files(original)
    settings = calibration.db.getCalibration(calibration.id)["Settings"]
    for step in (8, 9):
        pandora = processor_parameters(run_steering(workDir, step, "gamma"), settings["DDPandoraPFANewProcessorName"])
        assert pandora["PandoraSettingsXmlFile"] == DEFAULT_SETTINGS
    assert [args[1] for args in rpc.called("submitResult")] == [8, 9]


def test_photon_training_runs_with_the_training_settings_and_reports_the_likelihood_file(tmp_path, calibration):
    rpc = ScriptedRPC(getWorkerSetup=[ok(worker_setup(calibration))],
                      waitForNextStep=[run_answer(6, "2.5", calibration.constants), ok({"action": "finished"})])
    workDir, reports = tmp_path / "w", []
    assert make_worker(rpc, calibration, workDir, FakeTime(), reports).run() == EXIT_ENDED, reports

    settings = calibration.db.getCalibration(calibration.id)["Settings"]
    root = run_steering(workDir, 6, "zuds")
    assert processor_parameters(root, settings["DDPandoraPFANewProcessorName"])["PandoraSettingsXmlFile"] == \
        TRAINING_SETTINGS
    assert histogram_files((workDir / TRAINING_SETTINGS).read_text()) == ["step6_zuds_PandoraLikelihoodDataPhotonTraining.xml"]
    glob = global_parameters(root)
    assert glob["LCIOInputFiles"].split() == settings["zudsFiles"][1:]
    ((_, step, _, report),) = rpc.called("submitResult")
    assert step == 6 and set(report["phases"]) == {"2.5"}
    training = (workDir / "step6_zuds_PandoraLikelihoodDataPhotonTraining.xml").read_text()
    assert report["phases"]["2.5"]["files"]["likelihood"] == [training]
    assert "NSignalEvents" in training
    assert (workDir / USER_LIKELIHOOD).read_text() == (STEERING_DIR / USER_LIKELIHOOD).read_text()
    assert rpc.called("getCalibrationFile") == []
