"""Where a worker's ApplicationStatus goes: the DIRAC job monitor inside a job, the log anyway.

Inside a DIRAC job (JOBID set by the JobWrapper) the status is sent through DIRAC's ``JobReport``,
so the web job monitor shows lines like ``Running: stage: 3; phase: 3; step: 19``. The service
keeps the same wording per worker in its DB for every backend.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from DIRAC import gLogger

log = gLogger.getSubLogger("CalibrationWorker")
SOURCE = "CalibrationWorker"


def dirac_job_id(environment: Mapping[str, str]) -> int | None:
    """The DIRAC job this process runs in (the JobWrapper sets JOBID), or None outside a job."""
    jobID = environment.get("JOBID", "").strip()
    return int(jobID) if jobID.isdigit() and int(jobID) > 0 else None


def status_reporter(jobID: int | None) -> Callable[[str], None]:
    """A ``report(message)`` that logs every message and, inside job ``jobID``, sends each new one
    to the job monitor once. A message the JobStateUpdate service did not take stays queued in the
    JobReport and goes with the next attempt (the next report, even if it repeats the message),
    so the monitor catches up after a network hiccup instead of showing a stale status."""
    if jobID is None:
        return lambda message: log.info("status:", message)
    from DIRAC.WorkloadManagementSystem.Client.JobReport import JobReport

    jobReport = JobReport(jobID, source=SOURCE)
    state = {"sent": None, "queued": None}

    def report(message: str) -> None:
        log.info("status:", message)
        if message == state["sent"]:
            return
        if message != state["queued"]:
            jobReport.setApplicationStatus(message, sendFlag=False)
            state["queued"] = message
        result = jobReport.sendStoredStatusInfo()
        if result["OK"]:
            state["sent"] = message
        else:
            log.warn("could not set ApplicationStatus:", result["Message"])

    return report
