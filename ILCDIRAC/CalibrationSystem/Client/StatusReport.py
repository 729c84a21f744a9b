"""Where a worker's ApplicationStatus goes: the DIRAC job monitor inside a job, the log anyway.

Inside a DIRAC job (JOBID set by the JobWrapper) the status is sent through DIRAC's ``JobReport``,
so the web job monitor shows lines like ``Running: stage: 3; phase: 3; step: 19``. The service
keeps the same wording per worker in its DB for every backend.
"""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("CalibrationWorker")


def status_reporter(jobID: str | None) -> Callable[[str], None]:
    if not jobID or not jobID.isdigit() or int(jobID) <= 0:
        return lambda message: log.info("status: %s", message)
    from DIRAC.WorkloadManagementSystem.Client.JobReport import JobReport

    jobReport = JobReport(int(jobID), source="CalibrationWorker")
    last = {"message": None}

    def report(message: str) -> None:
        log.info("status: %s", message)
        if message != last["message"]:
            result = jobReport.setApplicationStatus(message)
            if not result["OK"]:
                log.warning("could not set ApplicationStatus: %s", result["Message"])
            last["message"] = message

    return report
