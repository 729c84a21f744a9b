"""Where calibration workers run: the backend interface and its two implementations.

A backend starts workers, tells the agent what became of them and kills them. A worker is
named by a job ID that the service stores:
- ``local``: detached processes on this machine (a single-machine installation, the demo, the
  tests); job IDs ``local:<pid>``.
- ``dirac``: iLCDirac user jobs on the grid, submitted with the owner's proxy; job IDs are DIRAC
  job IDs.
``info()`` is what the agent needs to rebuild the backend later (stored with the calibration).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from ILCDIRAC.CalibrationSystem.logic.health import DONE_JOB, FAILED_JOB, RUNNING_JOB, UNKNOWN_JOB

PACKAGE_DIR = Path(__file__).resolve().parents[1]
WORKER_SCRIPT = "dirac-clic-calibration-worker"
#: The environment a local worker needs from its submitter: credentials, DIRAC and Python set-up.
LOCAL_ENVIRONMENT = ("X509_USER_PROXY", "X509_CERT_DIR", "DIRAC_ROOT_PATH", "PYTHONPATH", "PATH", "HOME", "LANG")


class BackendError(RuntimeError):
    """The backend could not do what was asked (the message says what and why)."""


class WorkerBackend(Protocol):
    name: str

    def submit(self, calibrationID: int, workerIDs: Sequence[int]) -> dict[int, str]:
        """Start the workers; worker ID -> job ID."""

    def states(self, jobIDs: Sequence[str]) -> dict[str, str]:
        """Job ID -> running / done / failed / unknown."""

    def kill(self, jobIDs: Sequence[str]) -> None:
        """Stop these jobs (already ended ones are fine)."""

    def info(self) -> dict[str, Any]:
        """What is needed to rebuild this backend in the agent."""


# ------------------------------------------------------------------------------------ local
class LocalBackend:
    """Workers as detached local processes (own session), each in its own folder with its log."""

    name = "local"

    def __init__(self, workDir: str | Path, environment: Mapping[str, str] | None = None):
        self.workDir = Path(workDir).resolve()
        source = os.environ if environment is None else environment
        self.environment = {key: source[key] for key in LOCAL_ENVIRONMENT if key in source}
        binDir = str(Path(sys.executable).parent)
        if binDir not in self.environment.get("PATH", "").split(os.pathsep):
            self.environment["PATH"] = os.pathsep.join(p for p in (binDir, self.environment.get("PATH")) if p)

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> "LocalBackend":
        return cls(info["workDir"], info["environment"])

    def info(self) -> dict[str, Any]:
        return {"workDir": str(self.workDir), "environment": dict(self.environment)}

    def worker_dir(self, calibrationID: int, workerID: int) -> Path:
        return self.workDir / f"calibration_{calibrationID}" / f"worker_{workerID}"

    def submit(self, calibrationID: int, workerIDs: Sequence[int]) -> dict[int, str]:
        jobs = {}
        script = Path(sys.executable).with_name(WORKER_SCRIPT)
        for workerID in workerIDs:
            directory = self.worker_dir(calibrationID, workerID)
            directory.mkdir(parents=True, exist_ok=True)
            command = [str(script), "--calibration", str(calibrationID), "--worker", str(workerID),
                       "--workdir", str(directory)]
            with open(directory / "worker.log", "ab") as logFile:
                process = subprocess.Popen(
                    command, cwd=directory, env=self.environment, stdin=subprocess.DEVNULL, stdout=logFile,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            jobs[workerID] = f"local:{process.pid}"
        return jobs

    def states(self, jobIDs: Sequence[str]) -> dict[str, str]:
        import psutil

        states = {}
        for jobID in jobIDs:
            pid = _local_pid(jobID)
            if pid is None:
                states[jobID] = UNKNOWN_JOB
                continue
            try:
                process = psutil.Process(pid)
                alive = process.status() != psutil.STATUS_ZOMBIE and WORKER_SCRIPT in " ".join(process.cmdline())
            except psutil.Error:
                alive = False
            if not alive:
                _reap(pid)
            states[jobID] = RUNNING_JOB if alive else DONE_JOB
        return states

    def kill(self, jobIDs: Sequence[str]) -> None:
        for jobID in jobIDs:
            pid = _local_pid(jobID)
            if pid is None:
                continue
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            _reap(pid)


def _local_pid(jobID: str) -> int | None:
    prefix, _, pid = str(jobID).partition(":")
    return int(pid) if prefix == "local" and pid.isdigit() else None


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (it is when the agent restarted it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ------------------------------------------------------------------------------------ DIRAC grid
#: DIRAC job states seen by the agent: still queued or running, ended, or ended badly.
DIRAC_STATES = {
    **dict.fromkeys(
        ("Received", "Checking", "Staging", "Waiting", "Matched", "Rescheduled", "Running", "Completing"), RUNNING_JOB
    ),
    **dict.fromkeys(("Done", "Completed"), DONE_JOB),
    **dict.fromkeys(("Failed", "Killed", "Deleted", "Stalled"), FAILED_JOB),
}
BUNDLE_NAME = "ilcdirac-calibration.tar.gz"
#: The bundle's top folder. DIRAC's JobWrapper unpacks every tarball of the input sandbox into
#: the job's directory, which is also the launcher's first import path: a top-level ``ILCDIRAC``
#: folder there would shadow the pilot's iLCDirac (and its ``extension_metadata``).
BUNDLE_ROOT = "calibration_code"
LAUNCHER = PACKAGE_DIR / "Client" / "calibration_worker.py"


def job_name(calibrationID: int, workerID: int) -> str:
    return f"PandoraCaloCalibration_calid_{calibrationID}_workerid_{workerID}"


def job_group(calibrationID: int) -> str:
    return f"PandoraCaloCalibration_calid_{calibrationID}"


def make_worker_bundle(folder: Path) -> Path:
    """This project's package (without tests) as the tarball the launcher puts first on
    ``ILCDIRAC.__path__`` in the job: ``calibration_code/ILCDIRAC/CalibrationSystem/...``, with no
    ``ILCDIRAC/__init__.py`` of its own (the pilot's iLCDirac stays the package)."""
    bundle = folder / BUNDLE_NAME

    def keep(info: tarfile.TarInfo):
        parts = Path(info.name).parts
        return None if "__pycache__" in parts or "test" in parts[3:4] else info

    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(PACKAGE_DIR, arcname=f"{BUNDLE_ROOT}/ILCDIRAC/CalibrationSystem", filter=keep)
    return bundle


class DiracBackend:
    """Workers as iLCDirac user jobs: one long-lived job per worker, in one job group per calibration.

    The job runs the launcher from the input sandbox (with this project's package as a tarball)
    inside a GenericApplication that depends on the ``marlin`` release of ``marlinVersion``, so
    iLCDirac's software set-up provides Marlin, DDCaloDigi and DDMarlinPandora from CVMFS.
    ``dirac`` is a ``DiracILC`` instance (submission uses the caller's proxy: the submit command
    runs as the user; the agent runs this backend under the owner's proxy)."""

    name = "dirac"

    def __init__(self, settings: Mapping[str, Any], *, dirac: Any = None, sandboxFolder: Path | None = None):
        self.settings = settings
        self.dirac = dirac
        self.sandboxFolder = Path(sandboxFolder or tempfile.mkdtemp(prefix="calibration-sandbox-"))

    @classmethod
    def from_info(cls, info: Mapping[str, Any], settings: Mapping[str, Any], **kwargs) -> "DiracBackend":
        return cls(settings, **kwargs)

    def info(self) -> dict[str, Any]:
        return {}

    def sandbox(self) -> list[str]:
        files = [str(LAUNCHER), str(make_worker_bundle(self.sandboxFolder))]
        tarball = self.settings.get("geometryTarball")
        if tarball:
            files.append(tarball if tarball.startswith("LFN:") or os.path.isabs(tarball) else os.path.abspath(tarball))
        return files

    def job(self, calibrationID: int, workerID: int, sandbox: Sequence[str]):
        """The iLCDirac job of one worker (not yet submitted)."""
        from ILCDIRAC.Interfaces.API.NewInterface.Applications import GenericApplication
        from ILCDIRAC.Interfaces.API.NewInterface.UserJob import UserJob

        job = UserJob()
        job.check = False
        _checked(job.setName(job_name(calibrationID, workerID)), "job name")
        _checked(job.setJobGroup(job_group(calibrationID)), "job group")
        _checked(job.setCPUTime(int(self.settings["cpuTime"])), "CPU time")
        _checked(job.setPlatform(self.settings["platform"]), "platform")
        _checked(job.setInputSandbox(list(sandbox)), "input sandbox")
        _checked(job.setOutputSandbox(["*.log"]), "output sandbox")
        application = GenericApplication()
        _checked(application.setScript(str(LAUNCHER)), "worker script")
        _checked(application.setArguments(f"--calibration {calibrationID} --worker {workerID}"), "arguments")
        _checked(application.setDependency({"marlin": self.settings["marlinVersion"]}), "Marlin release")
        _checked(job.append(application), "application")
        return job

    def submit(self, calibrationID: int, workerIDs: Sequence[int]) -> dict[int, str]:
        if self.dirac is None:
            from ILCDIRAC.Interfaces.API.DiracILC import DiracILC

            self.dirac = DiracILC(True, str(self.sandboxFolder / "calibration_jobs.rep"))
        sandbox = self.sandbox()
        jobs = {}
        for workerID in workerIDs:
            result = self.job(calibrationID, workerID, sandbox).submit(self.dirac, mode="wms")
            if not result["OK"]:
                raise BackendError(f"submitting worker {workerID} of calibration {calibrationID} failed: {result['Message']}")
            jobs[workerID] = str(result["Value"])
        return jobs

    def states(self, jobIDs: Sequence[str]) -> dict[str, str]:
        from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient

        ids = [int(j) for j in jobIDs]
        result = JobMonitoringClient().getJobsStatus(ids) if ids else {"OK": True, "Value": {}}
        if not result["OK"]:
            raise BackendError(f"cannot read job states: {result['Message']}")
        seen = {str(jobID): DIRAC_STATES.get(info.get("Status"), UNKNOWN_JOB) for jobID, info in result["Value"].items()}
        return {jobID: seen.get(str(jobID), UNKNOWN_JOB) for jobID in jobIDs}

    def kill(self, jobIDs: Sequence[str]) -> None:
        from DIRAC.WorkloadManagementSystem.Client.WMSClient import WMSClient

        if jobIDs:
            result = WMSClient().killJob([int(j) for j in jobIDs])
            if not result["OK"]:
                raise BackendError(f"cannot kill jobs {list(jobIDs)}: {result['Message']}")


def _checked(result: Mapping[str, Any], what: str) -> None:
    if not result["OK"]:
        raise BackendError(f"cannot set the job's {what}: {result['Message']}")


def backend_named(name: str, settings: Mapping[str, Any], **options: Any) -> WorkerBackend:
    if name == "local":
        return LocalBackend(**options)
    if name == "dirac":
        return DiracBackend(settings, **options)
    raise ValueError(f"unknown backend {name!r}; known: ['dirac', 'local']")


def backend_for(name: str, info: Mapping[str, Any], settings: Mapping[str, Any]) -> WorkerBackend:
    """Rebuild a calibration's backend from what was stored at submission (the agent's view)."""
    if name == "local":
        return LocalBackend.from_info(info)
    if name == "dirac":
        return DiracBackend.from_info(info, settings)
    raise ValueError(f"unknown backend {name!r}")


__all__ = ["BackendError", "DiracBackend", "LocalBackend", "WorkerBackend", "backend_for", "backend_named"]
