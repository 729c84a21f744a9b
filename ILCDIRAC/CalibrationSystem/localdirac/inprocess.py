"""A whole calibration in one process, without DIRAC: for physics tests and benchmarks.

The service's own facade (``CalibrationService``, the object the DISET handler calls) runs on an
SQLite CalibrationDB, N ``Worker`` objects do exactly what worker jobs do (steering file, reconstruction,
uproot, reduction, report), one after the other, and the emulator is called in-process instead
of as a command (same steering file in, same files out; it only saves the interpreter start).
Each step is one pass over the samples on the grid, so ``passes`` counts steps.
"""
from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ILCDIRAC.CalibrationSystem.Client.Worker import Worker
from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic
from ILCDIRAC.CalibrationSystem.logic.service import CalibrationService
from ILCDIRAC.CalibrationSystem.Utilities.reconstruction import collect
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict
from ILCDIRAC.CalibrationSystem.Utilities.steering import FolderFiles
from ILCDIRAC.CalibrationSystem.Utilities.validation import Caller
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus, WorkerAction
from marlin_emulator import STEERING
from marlin_emulator.run import RUN_ERRORS, run
from marlin_emulator.samples import make_sample_files
from marlin_emulator.truth import DetectorTruth

#: The one user of a single-machine installation: local workers are theirs to run.
CALLER = Caller(dn="/CN=physicist", username="physicist", group="calibration_user",
                properties=frozenset({"NormalUser"}), localBackend=True)

PARTICLES = {"gamma": ("gamma", 10.0), "kaon": ("kaon0L", 50.0), "muon": ("mu-", 10.0), "zuds": ("zuds", 200.0)}


class LogicRPC:
    """The service's RPCs a Worker calls, answered by the service facade for one caller (the
    same S_OK/S_ERROR answers the DISET handler sends), without a network in between."""

    def __init__(self, db: CalibrationDB, caller: Caller = CALLER):
        self.db, self.caller = db, caller
        self.service = CalibrationService(db)

    def getWorkerSetup(self, calibrationID, workerID) -> dict[str, Any]:
        return self.service.getWorkerSetup(self.caller, calibrationID, workerID)

    def getStepParameters(self, calibrationID, workerID, lastStep) -> dict[str, Any]:
        return self.service.getStepParameters(self.caller, calibrationID, workerID, lastStep)

    def waitForNextStep(self, calibrationID, workerID, lastStep) -> dict[str, Any]:
        return self.service.waitForNextStep(self.caller, calibrationID, workerID, lastStep)

    def submitResult(self, calibrationID, step, workerID, report) -> dict[str, Any]:
        return self.service.submitResult(self.caller, calibrationID, step, workerID, report)

    def getCalibrationFile(self, calibrationID, name) -> dict[str, Any]:
        return self.service.getCalibrationFile(self.caller, calibrationID, name)


class EmulatorRunner:
    """Runs ``<marlinExecutable> steering.xml`` as an in-process call of the emulator, timing its CPU."""

    def __init__(self):
        self.cpuSeconds = 0.0

    def __call__(self, command: list[str], workDir: Path, logFile: Path) -> int:
        started = time.process_time()
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                run(command[-1], workDir)
            code = 0
        except RUN_ERRORS as exc:
            output.write(f"marlin-emulator: error: {exc}\n")
            code = 1
        finally:
            self.cpuSeconds += time.process_time() - started
        logFile.write_text(output.getvalue())
        return code


@dataclass
class Outcome:
    db: CalibrationDB
    calibrationID: int
    status: str
    reason: str
    passes: int
    cpuSeconds: float
    constants: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.status == CalibrationStatus.FINISHED


def make_samples(truth: DetectorTruth, folder: Path, samples: Mapping[str, tuple[int, int]], seed: int = 1) -> dict:
    """Sample files for the given samples ({"gamma": (files, events per file), ...}) as settings keys."""
    values: dict[str, Any] = {}
    for sample, (nFiles, perFile) in samples.items():
        particle, energy = PARTICLES[sample]
        files = make_sample_files(particle, energy, nFiles, perFile, truth, seed, folder / "samples")
        values[f"{sample}Files"] = [str(f) for f in files]
        values[f"{sample}EventsPerFile"] = perFile
    return values


def input_files(settings: Mapping[str, Any], steering: Path = STEERING) -> dict[str, str]:
    """The files a submission of ``steering`` sends (what ``dirac-clic-calibration-submit`` collects)."""
    return collect(FolderFiles(steering.parent), settings, top=steering.name)


def run_calibration(
    settings: Mapping[str, Any],
    folder: Path,
    *,
    workerOrder: Sequence[int] | None = None,
    maxPasses: int = 200,
    steering: Path = STEERING,
    runner: EmulatorRunner | None = None,
) -> Outcome:
    """Create the calibration of ``steering`` (and the files it names) and drive its workers
    until it ends (or ``maxPasses`` steps); ``runner`` runs the reconstruction command."""
    folder.mkdir(parents=True, exist_ok=True)
    resolved = settings_from_dict({**settings, "steeringFile": str(steering), "backend": "local"}).to_dict()
    db = CalibrationDB(f"sqlite+pysqlite:///{folder / 'calibration.sqlite'}")
    rpc = LogicRPC(db)
    calibrationID = logic.create_calibration(db, CALLER, resolved, input_files(resolved, steering))
    runner = runner or EmulatorRunner()
    workers = {}
    for workerID in range(resolved["numberOfJobs"]):
        worker = Worker(rpc, calibrationID, workerID, folder / f"worker_{workerID}", runner=runner)
        worker.prepare(worker.call("getWorkerSetup", calibrationID, workerID))
        workers[workerID] = worker
    lastStep = dict.fromkeys(workers, 0)
    order = list(workerOrder) if workerOrder is not None else list(workers)
    for _ in range(maxPasses):
        ran = False
        for workerID in order:
            params = workers[workerID].call("getStepParameters", calibrationID, workerID, lastStep[workerID])
            if params["action"] != WorkerAction.RUN:
                continue
            report = workers[workerID].reconstruct(params)
            workers[workerID].call("submitResult", calibrationID, params["step"], workerID, report)
            lastStep[workerID] = params["step"]
            ran = True
        if not ran:
            break
    calibration = db.getCalibration(calibrationID)
    steps = db.getSteps(calibrationID)
    return Outcome(
        db=db,
        calibrationID=calibrationID,
        status=calibration["Status"],
        reason=calibration["Reason"],
        passes=len(steps),
        cpuSeconds=runner.cpuSeconds,
        constants=calibration["State"]["constants"],
        steps=steps,
    )
