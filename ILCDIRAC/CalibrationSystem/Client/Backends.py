"""Where calibration workers run: the backend interface and its two implementations.

A backend starts workers, tells the agent what became of them and kills them. A worker is
named by a job ID that the service stores:
- ``local``: detached processes on this machine (a single-user installation, the demo, the
  tests); job IDs ``local:<pid>``.
- ``dirac``: iLCDirac user jobs on the grid, submitted with the owner's proxy; job IDs are DIRAC
  job IDs.
The agent builds a backend from its own configuration and the service's records only (the
backend name and the settings the service validated), never from anything a user sent about
machines, folders or environments.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from DIRAC.WorkloadManagementSystem.Client import JobStatus

from ILCDIRAC.CalibrationSystem.Utilities.jobstates import DONE_JOB, FAILED_JOB, RUNNING_JOB, UNKNOWN_JOB
from ILCDIRAC.CalibrationSystem.Utilities.paths import LFN_PREFIX, folder_below, open_below

PACKAGE_DIR = Path(__file__).resolve().parents[1]
WORKER_SCRIPT = "dirac-clic-calibration-worker"
#: The environment a local worker gets from the process that starts it: credentials, DIRAC and Python set-up.
LOCAL_ENVIRONMENT = ("X509_USER_PROXY", "X509_CERT_DIR", "DIRAC_ROOT_PATH", "PYTHONPATH", "PATH", "HOME", "LANG")


class BackendError(RuntimeError):
    """The backend could not do what was asked (the message says what and why)."""


class WorkerBackend(Protocol):
    name: str

    def submit(self, calibrationID: int, workerIDs: Sequence[int]) -> dict[int, str]:
        """Start the workers; worker ID -> job ID."""

    def states(self, calibrationID: int, jobs: Mapping[int, str]) -> dict[str, str]:
        """For the workers' jobs ({worker ID: job ID}): job ID -> running / done / failed / unknown."""

    def kill(self, calibrationID: int, jobs: Mapping[int, str]) -> None:
        """Stop these workers' jobs (already ended ones are fine)."""


# ------------------------------------------------------------------------------------ local
class LocalBackend:
    """Workers as detached local processes (own session), each in its own folder with its log.

    The submit command starts them as its user, below the user's ``--workdir``, with the user's
    environment and proxy. The agent (only where LocalBackendDir enables it: a single-user
    installation) restarts lost ones below its own folder, with its own environment, and they
    authenticate with the host certificate on the owner's behalf (``owner``: DIRAC's delegation,
    which only a TrustedHost may use). Folders and logs are created without following links.

    A ``local:<pid>`` job counts as a worker's only while that process runs the worker command of
    that very calibration and worker: any other process, whoever registered its PID, is neither
    watched as one nor killed."""

    name = "local"

    def __init__(self, workDir: str | Path | None, *, owner: tuple[str, str] | None = None):
        self.workDir = Path(workDir).resolve() if workDir is not None else None
        self.owner = owner
        self.environment = {key: os.environ[key] for key in LOCAL_ENVIRONMENT if key in os.environ}
        binDir = str(Path(sys.executable).parent)
        if binDir not in self.environment.get("PATH", "").split(os.pathsep):
            self.environment["PATH"] = os.pathsep.join(p for p in (binDir, self.environment.get("PATH")) if p)

    def submit(self, calibrationID: int, workerIDs: Sequence[int]) -> dict[int, str]:
        if self.workDir is None:
            raise BackendError("this agent starts no local workers (its LocalBackendDir is not set)")
        self.workDir.mkdir(parents=True, exist_ok=True)
        jobs = {}
        script = Path(sys.executable).with_name(WORKER_SCRIPT)
        for workerID in workerIDs:
            folders = [f"calibration_{calibrationID}", f"worker_{workerID}"]
            directory = folder_below(self.workDir, folders)
            command = [str(script), *worker_arguments(calibrationID, workerID), "--workdir", str(directory)]
            if self.owner is not None:
                command += ["--owner-dn", self.owner[0], "--owner-group", self.owner[1]]
            log = open_below(self.workDir, folders, "worker.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(log, "ab") as logFile:
                process = subprocess.Popen(
                    command, cwd=directory, env=self.environment, stdin=subprocess.DEVNULL, stdout=logFile,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            jobs[workerID] = f"local:{process.pid}"
        return jobs

    def states(self, calibrationID: int, jobs: Mapping[int, str]) -> dict[str, str]:
        states = {}
        for workerID, jobID in jobs.items():
            pid = _local_pid(jobID)
            if pid is None:
                states[jobID] = UNKNOWN_JOB
                continue
            alive = _worker_process(pid, calibrationID, workerID) is not None
            if not alive:
                _reap(pid)
            states[jobID] = RUNNING_JOB if alive else DONE_JOB
        return states

    def kill(self, calibrationID: int, jobs: Mapping[int, str]) -> None:
        for workerID, jobID in jobs.items():
            pid = _local_pid(jobID)
            process = _worker_process(pid, calibrationID, workerID) if pid is not None else None
            if process is None:
                continue
            try:
                # the worker leads its own session: its reconstruction goes with it
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    process.kill()
            except (ProcessLookupError, PermissionError, OSError):
                continue
            _reap(pid)


def worker_arguments(calibrationID: int, workerID: int) -> list[str]:
    """The arguments that name a worker, right after the worker command (how its process is recognised)."""
    return ["--calibration", str(calibrationID), "--worker", str(workerID)]


def _worker_process(pid: int, calibrationID: int, workerID: int):
    """The live process ``pid`` if it runs the worker command of this calibration and worker, else None."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = process.cmdline()
    except psutil.Error:
        return None
    # the worker command is the program itself, or the script its Python interpreter runs
    interpreted = len(cmdline) > 1 and Path(cmdline[0]).name.startswith("python")
    index = 1 if interpreted else 0
    if len(cmdline) <= index or Path(cmdline[index]).name != WORKER_SCRIPT:
        return None
    expected = worker_arguments(calibrationID, workerID)
    return process if cmdline[index + 1:index + 1 + len(expected)] == expected else None


def _local_pid(jobID: str) -> int | None:
    prefix, _, pid = str(jobID).partition(":")
    return int(pid) if prefix == "local" and pid.isdigit() and 0 < int(pid) < 2**22 else None


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
        (JobStatus.RECEIVED, JobStatus.CHECKING, JobStatus.STAGING, JobStatus.WAITING, JobStatus.MATCHED,
         JobStatus.RESCHEDULED, JobStatus.RUNNING, JobStatus.COMPLETING),
        RUNNING_JOB,
    ),
    **dict.fromkeys((JobStatus.DONE, JobStatus.COMPLETED), DONE_JOB),
    **dict.fromkeys((JobStatus.FAILED, JobStatus.KILLED, JobStatus.DELETED, JobStatus.STALLED), FAILED_JOB),
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
    """This project's package (without its tests and local-run tools) as the tarball the launcher puts first on
    ``ILCDIRAC.__path__`` in the job: ``calibration_code/ILCDIRAC/CalibrationSystem/...``, with no
    ``ILCDIRAC/__init__.py`` of its own (the pilot's iLCDirac stays the package)."""
    bundle = folder / BUNDLE_NAME

    def keep(info: tarfile.TarInfo):
        parts = Path(info.name).parts
        return None if "__pycache__" in parts or {"test", "localdirac"} & set(parts[3:4]) else info

    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(PACKAGE_DIR, arcname=f"{BUNDLE_ROOT}/ILCDIRAC/CalibrationSystem", filter=keep)
    return bundle


class DiracBackend:
    """Workers as iLCDirac user jobs: one long-lived job per worker, in one job group per calibration.

    The job runs the launcher from the input sandbox (with this project's package as a tarball)
    inside a GenericApplication that depends on the ``marlin`` release of ``marlinVersion``, so
    iLCDirac's software set-up provides Marlin, DDCaloDigi and DDMarlinPandora from CVMFS.
    ``dirac`` is a ``DiracILC`` instance (submission uses the caller's proxy: the submit command
    runs as the user; the agent runs this backend under the owner's proxy).

    ``localFiles``: whether a geometry tarball may come from this machine's disk (the submitting
    user's machine). The agent builds the backend without: it never reads a path a user chose."""

    name = "dirac"

    def __init__(self, settings: Mapping[str, Any], *, dirac: Any = None, sandboxFolder: Path | None = None,
                 localFiles: bool = True):
        self.settings = settings
        self.dirac = dirac
        self.sandboxFolder = Path(sandboxFolder or tempfile.mkdtemp(prefix="calibration-sandbox-"))
        self.localFiles = localFiles

    def sandbox(self) -> list[str]:
        files = [str(LAUNCHER), str(make_worker_bundle(self.sandboxFolder))]
        tarball = self.settings.get("geometryTarball")
        if tarball and tarball.startswith(LFN_PREFIX):
            files.append(tarball)
        elif tarball and not self.localFiles:
            raise BackendError(
                f"the geometry tarball {tarball} is not an LFN: only the submitting user's machine has it"
            )
        elif tarball:
            files.append(os.path.abspath(tarball))
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
                raise BackendError(
                    f"submitting worker {workerID} of calibration {calibrationID} failed: {result['Message']}"
                )
            jobs[workerID] = str(result["Value"])
        return jobs

    def states(self, calibrationID: int, jobs: Mapping[int, str]) -> dict[str, str]:
        from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient

        jobIDs = list(jobs.values())
        ids = [int(j) for j in jobIDs]
        result = JobMonitoringClient().getJobsStatus(ids) if ids else {"OK": True, "Value": {}}
        if not result["OK"]:
            raise BackendError(f"cannot read job states: {result['Message']}")
        seen = {
            str(jobID): DIRAC_STATES.get(info.get("Status"), UNKNOWN_JOB) for jobID, info in result["Value"].items()
        }
        return {jobID: seen.get(str(jobID), UNKNOWN_JOB) for jobID in jobIDs}

    def kill(self, calibrationID: int, jobs: Mapping[int, str]) -> None:
        """Kill the jobs through the WMS, which lets the owner's proxy kill only the owner's jobs."""
        from DIRAC.WorkloadManagementSystem.Client.WMSClient import WMSClient

        jobIDs = list(jobs.values())
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


def backend_for(name: str, settings: Mapping[str, Any], *, localDir: Path | None,
                owner: tuple[str, str]) -> WorkerBackend:
    """The agent's backend of a calibration: from its own configuration (``localDir``, where it
    may start local workers, None if it may not) and the service's records (backend, settings,
    owner), nothing else."""
    if name == "local":
        return LocalBackend(localDir, owner=owner)
    if name == "dirac":
        return DiracBackend(settings, localFiles=False)
    raise ValueError(f"unknown backend {name!r}")


__all__ = ["BackendError", "DiracBackend", "LocalBackend", "WorkerBackend", "backend_for", "backend_named"]
