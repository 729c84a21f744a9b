"""The calibration worker: the loop that runs inside every job (or local process).

Once: ask the service for the set-up (event slices, settings, the user's reconstruction files in
their folder layout) and download the sample files that are not on this machine (LFNs, through
the DIRAC DataManager). Per step: write the user's files with the step's constants (the top
steering file as ``step<N>_<sample>.xml`` beside them, so its includes and the Pandora files
resolve as in the user's folder), run ``<marlinExecutable> step<N>_<sample>.xml`` there, read
the PfoAnalysis output with uproot, reduce it to each
active phase's summary and submit it; then wait for the next step with ``waitForNextStep``, which
the service holds open until the step opens (or its hold time passed), asking again when its
``wait`` answer says (``retryAfter``; a jittered back-off when it says nothing). The
worker relies on nothing but the reconstruction contract, so real Marlin, the
emulator or any other command honouring it can be calibrated.

Exit codes: 0 the calibration ended (finished, killed or failed: the service decided),
2 the service stayed unreachable longer than the patience, 3 the service refused a request (or
answered something this worker does not understand), 4 the reconstruction (or getting its input
files) failed.
"""
from __future__ import annotations

import errno
import math
import os
import random
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from DIRAC import gLogger

from ILCDIRAC.CalibrationSystem.Utilities.paths import (
    LFN_PREFIX,
    PathError,
    confined,
    is_url,
    normal_lfn,
    relative_path,
    sample_file,
)
from ILCDIRAC.CalibrationSystem.Utilities.pfoanalysis import ReconstructionOutputError, read_outputs
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.phases.photon_training import MERGED_LIKELIHOOD, TRAINING_OUTPUT
from ILCDIRAC.CalibrationSystem.Utilities.reconstruction import Run, run_files, trained_likelihood_path
from ILCDIRAC.CalibrationSystem.Utilities.slicing import Slice
from ILCDIRAC.CalibrationSystem.Utilities.steering import STEERING_FILE, SteeringError
from ILCDIRAC.CalibrationSystem.Utilities.stored_files import decode_file
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import WorkerAction

#: The worker's log (shared with StatusReport): quiet below NOTICE where a Worker runs inside
#: another program (the in-process driver, benchmarks); the worker program shows INFO.
log = gLogger.getSubLogger("CalibrationWorker")
log.setLevel("NOTICE")

EXIT_ENDED, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_RECONSTRUCTION = 0, 2, 3, 4
#: Where downloaded sample files go, below the work directory (mirroring their LFN folders).
INPUT_DIR = "inputs"
#: Workers of one calibration that start per second at most: worker N asks for its set-up N/START_RATE
#: seconds after it started, so a thousand jobs a site starts at once reach the service over 50 s
#: instead of in one burst (one service process answers some 60 calls a second).
START_RATE = 20.0
#: Answers of waitForNextStep that end the worker: the service decided the calibration's fate.
END_ACTIONS = (WorkerAction.FINISHED, WorkerAction.KILLED, WorkerAction.FAILED)
#: DIRAC's job monitor stores ApplicationStatus in 255 characters.
STATUS_LENGTH = 255


class ServiceUnreachable(Exception):
    """The service did not answer for longer than the worker's patience."""


class ServiceRefused(Exception):
    """The service answered with an error: retrying the same request cannot help."""


class ReconstructionFailed(Exception):
    """The reconstruction command failed or left no usable output."""


@dataclass(frozen=True)
class Polling:
    """How a worker waits: jittered exponential back-off between ``minimum`` and ``maximum``
    seconds, and how long (``patience``) it keeps trying while the service is unreachable."""

    minimum: float = 5.0
    maximum: float = 120.0
    factor: float = 1.6
    patience: float = 3600.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Polling:
        return cls(**{k: float(v) for k, v in (data or {}).items() if k in cls.__dataclass_fields__})


class Backoff:
    """Delays that grow by ``factor`` up to ``maximum``, each jittered to 50-150 % so hundreds of
    workers do not poll in lockstep, and never longer than ``maximum`` (the service's
    WorkerPollMaximum promises that a waiting worker looks again within that time)."""

    def __init__(self, polling: Polling, rng: random.Random):
        self.polling, self.rng, self.current = polling, rng, polling.minimum

    def next(self) -> float:
        delay = min(self.current * self.rng.uniform(0.5, 1.5), self.polling.maximum)
        self.current = min(self.current * self.polling.factor, self.polling.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.polling.minimum


class Worker:
    """One calibration worker; ``rpc`` is a CalibrationClient (or anything with its methods).

    ``sleep`` and ``clock`` are how the worker waits and measures its patience (replaceable so a
    test can run an hour of back-off in no time); ``download`` fetches one LFN into a folder and
    returns the local path (``download_lfn``; without it a worker cannot use LFNs);
    ``startDelay``: seconds before its first call (by default its share of ``START_RATE``)."""

    def __init__(
        self,
        rpc: Any,
        calibrationID: int,
        workerID: int,
        workDir: Path,
        *,
        report: Callable[[str], None] = lambda message: None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        environment: Callable[[Mapping[str, Any]], str] | None = None,
        runner: Callable[[list[str], Path, Path], int] | None = None,
        download: Callable[[str, Path], Path] | None = None,
        startDelay: float | None = None,
    ):
        self.rpc, self.calibrationID, self.workerID = rpc, calibrationID, workerID
        self.workDir = Path(workDir)
        self.report, self.sleep, self.clock = report, sleep, clock
        self.download = download
        self.downloaded: dict[str, str] = {}
        self.likelihoods: dict[str, str] = {}
        self.environment = environment
        self.environmentScript: str | None = None
        self.runner = runner or run_command
        self.rng = rng or random.Random(os.getpid() ^ int(time.time()))
        self.polling = Polling()
        self.startDelay = workerID / START_RATE if startDelay is None else startDelay

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        try:
            if self.startDelay > 0:
                self.sleep(self.startDelay)
            setup = self.call("getWorkerSetup", self.calibrationID, self.workerID)
            self.prepare(setup)
            lastStep, waiting = 0, Backoff(self.polling, self.rng)
            while True:
                params = self.call("waitForNextStep", self.calibrationID, self.workerID, lastStep)
                action = params["action"]
                if action == WorkerAction.RUN:
                    self.report(params["applicationStatus"])
                    report = self.reconstruct(params)
                    answer = self.call("submitResult", self.calibrationID, params["step"], self.workerID, report)
                    log.info("step", f"{params['step']} submitted: {answer['verdict']}")
                    if isinstance(answer.get("applicationStatus"), str):
                        self.report(answer["applicationStatus"])
                    lastStep = params["step"]
                    waiting.reset()
                elif action == WorkerAction.WAIT:
                    self.report(params["applicationStatus"])
                    self.sleep(self.wait_time(params, waiting))
                elif action in END_ACTIONS:
                    self.report(f"PandoraCalib_{self.calibrationID}: Calibration is {action}.")
                    log.info("calibration ended", f"{self.calibrationID} {action} {params.get('reason', '')}")
                    return EXIT_ENDED
                else:
                    raise ServiceRefused(f"waitForNextStep answered the unknown action {action!r}")
        except ServiceUnreachable as exc:
            log.error("giving up:", str(exc))
            self.report(f"PandoraCalib_{self.calibrationID}: service unreachable, worker stopped")
            return EXIT_UNREACHABLE
        except ServiceRefused as exc:
            log.error("service refused:", str(exc))
            self.report(f"PandoraCalib_{self.calibrationID}: {exc}"[:STATUS_LENGTH])
            return EXIT_REFUSED
        except ReconstructionFailed as exc:
            log.error("reconstruction failed:", str(exc))
            self.report(f"PandoraCalib_{self.calibrationID}: reconstruction failed: {exc}"[:STATUS_LENGTH])
            return EXIT_RECONSTRUCTION

    def wait_time(self, params: Mapping[str, Any], waiting: Backoff) -> float:
        """How long to wait before asking again: the service's ``retryAfter`` (when it expects
        the next step, spread over its workers) within WorkerPollMinimum/Maximum, or the
        jittered back-off when the answer has no usable hint."""
        hint = params.get("retryAfter")
        if isinstance(hint, (int, float)) and not isinstance(hint, bool) and math.isfinite(hint):
            return min(max(float(hint), self.polling.minimum), self.polling.maximum)
        return waiting.next()

    def call(self, method: str, *args: Any) -> Any:
        """One RPC, retried with jittered back-off while the service cannot be reached.

        Retries start after at most a second (a dropped connection often works again at once)
        and then follow the service's polling (factor, maximum) until ``patience`` has passed."""
        backoff = Backoff(replace(self.polling, minimum=min(1.0, self.polling.minimum)), self.rng)
        deadline = self.clock() + self.polling.patience
        while True:
            result = getattr(self.rpc, method)(*args)
            if result["OK"]:
                return result["Value"]
            message = result["Message"]
            if result.get("Errno") == errno.EINVAL or "Unauthorized" in message:
                raise ServiceRefused(f"{method}: {message}")
            if self.clock() >= deadline:
                raise ServiceUnreachable(f"{method} failed for {self.polling.patience:.0f} s, last error: {message}")
            delay = backoff.next()
            log.warn("call failed, retrying", f"{method} ({message}) in {delay:.1f} s")
            self.sleep(delay)

    # ------------------------------------------------------------------ set-up
    def prepare(self, setup: Mapping[str, Any]) -> None:
        self.settings = setup["settings"]
        self.ctx = PhaseContext.from_settings(self.settings)
        self.polling = Polling.from_dict(setup.get("polling"))
        self.workDir.mkdir(parents=True, exist_ok=True)
        self.slices = {sample: self.local_slice(Slice.from_dict(s)) for sample, s in setup["samples"].items()}
        try:
            self.files = {relative_path(name): text for name, text in setup["files"].items()}
        except PathError as exc:
            raise ServiceRefused(f"getWorkerSetup sent an unusable file name: {exc}") from None
        if STEERING_FILE not in self.files:
            raise ServiceRefused(f"getWorkerSetup sent no {STEERING_FILE}")
        self.write_files(self.files)
        if self.environment is not None:
            try:
                self.environmentScript = self.environment(self.settings)
            except RuntimeError as exc:
                raise ReconstructionFailed(str(exc)) from None

    def local_slice(self, events: Slice) -> Slice:
        """The slice with its input files on this machine, downloaded once for all the steps.

        ``LFN:...`` is always an LFN; a URL or a file that exists here (relative paths count from
        the work directory, where the reconstruction runs) is used in place; any other name is an
        LFN (grid sample lists name them without the prefix) when this worker can download, and
        is otherwise left for the reconstruction to report. Every name is checked first by the
        path rules (``Utilities.paths``): none climbs out of where it belongs with ``..``."""
        files = []
        for name in events.files:
            try:
                name = sample_file(name)
                here = is_url(name) or (not name.startswith(LFN_PREFIX) and self._exists_here(name))
            except PathError as exc:
                raise ReconstructionFailed(f"sample file refused: {exc}") from None
            explicit = name.startswith(LFN_PREFIX)
            if explicit and self.download is None:
                raise ReconstructionFailed(f"sample file {name} is an LFN, but this worker cannot download "
                                           f"from the grid")
            remote = explicit or (not here and self.download is not None)
            files.append(self.local_copy(name) if remote else name)
        return replace(events, files=tuple(files))

    def _exists_here(self, name: str) -> bool:
        """Whether ``name`` is a file on this machine: absolute, or inside the work directory."""
        return Path(name).exists() if name.startswith("/") else confined(self.workDir, name, "sample file").exists()

    def local_copy(self, name: str) -> str:
        """The local copy of an LFN, downloaded once into inputs/<its LFN folders> (never outside)."""
        try:
            lfn = normal_lfn(name if name.startswith(LFN_PREFIX) else "/" + name.lstrip("/"), "sample LFN")
            folder = confined(self.workDir / INPUT_DIR, lfn, "sample LFN").parent
        except PathError as exc:
            raise ReconstructionFailed(f"sample file refused: {exc}") from None
        if lfn not in self.downloaded:
            self.downloaded[lfn] = str(self.download(lfn, folder))
        return self.downloaded[lfn]

    # ------------------------------------------------------------------ one step
    def reconstruct(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run the reconstruction once per sample the active phases need and reduce it per phase."""
        phases = {key: phase_for(key) for key in params["phases"]}
        samples = sorted({sample for phase in phases.values() for sample in phase.samples})
        outputs = {}
        for sample in samples:
            users = [p for p in phases.values() if sample in p.samples]
            training = any(p.pandoraSettings == "training" for p in users)
            textFiles = sorted({f for p in users for f in p.outputFiles.get(sample, ())})
            rootFile = self.run_reconstruction(params, sample, training, textFiles)
            branches = sorted({b for p in users for b in p.branches.get(sample, ())})
            histograms = sorted({h for p in users for h in p.rootHistograms.get(sample, ())})
            try:
                outputs[sample] = read_outputs(rootFile, branches, histograms) if branches or histograms else {}
            except ReconstructionOutputError as exc:
                raise ReconstructionFailed(str(exc)) from None
            for name in textFiles:
                path = rootFile.with_name(f"{rootFile.stem}_{name}")
                if not path.is_file():
                    raise ReconstructionFailed(f"the reconstruction left no {path.name}")
                outputs[sample][name] = path.read_text()
        summaries = {}
        for key, phase in phases.items():
            try:
                summaries[key] = phase.reduce({s: outputs[s] for s in phase.samples}, self.ctx).to_payload()
            except (KeyError, ValueError) as exc:
                raise ReconstructionFailed(f"phase {key}: cannot reduce the reconstruction output: {exc}") from None
        return {"phases": summaries}

    def write_files(self, files: Mapping[str, str]) -> None:
        """Write files (relative paths, already checked) below the work directory."""
        for name, text in files.items():
            path = self.workDir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def trained_likelihood(self, params: Mapping[str, Any]) -> tuple[str, str] | None:
        """(path in the user's layout, text) of the photon likelihood stage 2 trained, once it exists."""
        stored = params.get("inputs", {}).get(MERGED_LIKELIHOOD)
        if not stored:
            return None
        if stored not in self.likelihoods:
            answer = self.call("getCalibrationFile", self.calibrationID, stored)
            self.likelihoods[stored] = decode_file(answer).decode()
        path = trained_likelihood_path(self.files, self.settings, self.calibrationID)
        return path, self.likelihoods[stored]

    def files_for(self, params: Mapping[str, Any], sample: str, name: str, training: bool = False) -> dict[str, str]:
        """The user's files for one run: this step's constants, this worker's slice, the output
        file ``<name>.root`` and the Pandora settings of the run (training output ``<name>_<file>``)."""
        events = self.slices[sample]
        try:
            run = Run(
                inputFiles=events.files,
                maxRecordNumber=events.events,
                skipNEvents=events.skip,
                rootFile=f"{name}.root",
                trainingOutput=f"{name}_{TRAINING_OUTPUT}" if training else None,
                likelihood=None if training else self.trained_likelihood(params),
            )
            return run_files(self.files, self.settings, params["constants"], run)
        except SteeringError as exc:
            raise ReconstructionFailed(f"cannot write the steering files: {exc}") from None

    def run_reconstruction(self, params: Mapping[str, Any], sample: str, training: bool, textFiles: list[str]) -> Path:
        step = params["step"]
        name = f"step{step}_{sample}"
        rootFile = self.workDir / f"{name}.root"
        for stale in [rootFile] + [self.workDir / f"{name}_{f}" for f in textFiles]:
            stale.unlink(missing_ok=True)
        files = self.files_for(params, sample, name, training)
        steeringFile = self.workDir / f"{name}.xml"
        steeringFile.write_text(files.pop(STEERING_FILE))
        self.write_files(files)
        command = shlex.split(self.settings["marlinExecutable"]) + [steeringFile.name]
        if self.environmentScript:
            command = ["bash", "-c", f"source {shlex.quote(self.environmentScript)} && exec {shlex.join(command)}"]
        logFile = self.workDir / f"{name}.log"
        started = time.monotonic()
        try:
            returncode = self.runner(command, self.workDir, logFile)
        except OSError as exc:
            raise ReconstructionFailed(f"cannot run {command[0]!r}: {exc}") from None
        if returncode != 0:
            tail = logFile.read_text()[-2000:].strip().splitlines()[-5:]
            raise ReconstructionFailed(f"{shlex.join(command)} exited with {returncode}: {' | '.join(tail)}")
        log.info("step reconstructed", f"{step} {sample} in {time.monotonic() - started:.1f} s")
        return rootFile


def run_command(command: list[str], workDir: Path, logFile: Path) -> int:
    """Run the reconstruction command in the work directory, its output into the log file."""
    with open(logFile, "w") as output:
        return subprocess.run(command, cwd=workDir, stdout=output, stderr=subprocess.STDOUT).returncode


def download_lfn(lfn: str, folder: Path) -> Path:
    """One sample file from the grid into ``folder`` through the DIRAC DataManager (which picks
    the closest replica and checks size and checksum)."""
    from DIRAC.DataManagementSystem.Client.DataManager import DataManager

    folder.mkdir(parents=True, exist_ok=True)
    result = DataManager().getFile(lfn, destinationDir=str(folder))
    if result["OK"] and lfn in result["Value"]["Successful"]:
        return Path(result["Value"]["Successful"][lfn])
    reason = result["Message"] if not result["OK"] else result["Value"]["Failed"].get(lfn, "no answer for this LFN")
    raise ReconstructionFailed(f"cannot download sample file {lfn}: {reason}")


def marlin_environment(settings: Mapping[str, Any]) -> str:
    """The iLCSoft release's environment script for ``marlinVersion`` on this grid node, found
    through iLCDirac's own software set-up (CVMFS), so Marlin, DDCaloDigi and DDMarlinPandora
    come from the release."""
    from DIRAC import S_ERROR

    from ILCDIRAC.Core.Utilities.CombinedSoftwareInstallation import getEnvironmentScript

    version = settings["marlinVersion"]
    result = getEnvironmentScript(
        settings["platform"], "marlin", version, lambda *args: S_ERROR(f"no CVMFS environment for Marlin {version}")
    )
    if not result["OK"]:
        raise RuntimeError(f"cannot set up Marlin {version} on {settings['platform']}: {result['Message']}")
    return result["Value"]
