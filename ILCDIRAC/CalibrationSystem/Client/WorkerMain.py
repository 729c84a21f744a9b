"""Start a worker: shared by the console script and the launcher inside DIRAC jobs."""
from __future__ import annotations

import os
from pathlib import Path

from ILCDIRAC.CalibrationSystem.Client.StatusReport import dirac_job_id, status_reporter
from ILCDIRAC.CalibrationSystem.Client.Worker import Worker, download_lfn, marlin_environment
from ILCDIRAC.CalibrationSystem.Client.Worker import log as worker_log

#: DIRAC's documented switch that stops the job watchdog from killing a payload for a low
#: CPU/wall-clock ratio: a worker legitimately sleeps while it waits for the other workers.
#: The watchdog looks for it in the job's working directory, the launcher's current directory.
WATCHDOG_SWITCH = "DISABLE_WATCHDOG_CPU_WALLCLOCK_CHECK"


def run_worker(calibrationID: int, workerID: int, workDir: Path, owner: tuple[str, str] | None = None) -> int:
    """Run one worker to its end and return its exit code (see ``Worker``).

    Inside a DIRAC job the status goes to the job monitor and Marlin comes from the iLCSoft
    release on CVMFS; elsewhere the status is only logged and ``marlinExecutable`` is run as is.
    Sample files given as LFNs are downloaded in both cases. A worker the agent restarted on its
    own machine has ``owner`` (DN, group): it talks to the service with the host certificate on
    the owner's behalf (DIRAC delegation), as only a TrustedHost may."""
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient

    # A worker's log is read after the fact (stalls, retries): every line with its time and level.
    worker_log.setLevel("INFO")
    worker_log.showHeaders(True)
    jobID = dirac_job_id(os.environ)
    if jobID is not None:
        Path(WATCHDOG_SWITCH).touch()
    credentials = (
        {} if owner is None else {"useCertificates": True, "delegatedDN": owner[0], "delegatedGroup": owner[1]}
    )
    worker = Worker(
        CalibrationClient(**credentials),
        calibrationID,
        workerID,
        workDir,
        report=status_reporter(jobID),
        environment=marlin_environment if jobID is not None else None,
        download=download_lfn,
    )
    return worker.run()
