"""Where calibration workers run: the backend interface and its implementations.

A backend starts workers for a calibration and names each by a job ID that the service stores
(and the agent later uses to look after them). ``local`` runs them as processes on this machine
(a single-machine installation, the demo and the tests); the DIRAC grid backend submits iLCDirac
user jobs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Protocol, Sequence


class WorkerBackend(Protocol):
    name: str

    def submit(self, calibrationID: int, workerIDs: Sequence[int]) -> dict[int, str]:
        """Start the workers; return worker ID -> job ID."""


def worker_command(calibrationID: int, workerID: int, workDir: Path) -> list[str]:
    """The console script a worker runs (next to this Python interpreter)."""
    script = Path(sys.executable).with_name("dirac-clic-calibration-worker")
    return [str(script), "--calibration", str(calibrationID), "--worker", str(workerID), "--workdir", str(workDir)]


class LocalBackend:
    """Workers as detached local processes, each in its own work directory with its own log."""

    name = "local"

    def __init__(self, workDir: str | Path, environment: Mapping[str, str] | None = None):
        self.workDir = Path(workDir).resolve()
        self.environment = dict(os.environ if environment is None else environment)
        binDir = str(Path(sys.executable).parent)
        self.environment["PATH"] = binDir + os.pathsep + self.environment.get("PATH", "")

    def worker_dir(self, calibrationID: int, workerID: int) -> Path:
        return self.workDir / f"calibration_{calibrationID}" / f"worker_{workerID}"

    def submit(self, calibrationID: int, workerIDs: Sequence[int]) -> dict[int, str]:
        jobs = {}
        for workerID in workerIDs:
            directory = self.worker_dir(calibrationID, workerID)
            directory.mkdir(parents=True, exist_ok=True)
            with open(directory / "worker.log", "ab") as logFile:
                process = subprocess.Popen(
                    worker_command(calibrationID, workerID, directory),
                    cwd=directory,
                    env=self.environment,
                    stdin=subprocess.DEVNULL,
                    stdout=logFile,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            jobs[workerID] = f"local:{process.pid}"
        return jobs


def backend_named(name: str, **options) -> WorkerBackend:
    if name == "local":
        return LocalBackend(**options)
    raise ValueError(f"unknown backend {name!r}; known: ['local']")
