"""Start a worker: shared by the console script and the launcher inside DIRAC jobs."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ILCDIRAC.CalibrationSystem.Client.StatusReport import status_reporter
from ILCDIRAC.CalibrationSystem.Client.Worker import Worker, marlin_environment

#: DIRAC's documented switch that stops the job watchdog from killing a payload for a low
#: CPU/wall-clock ratio: a worker legitimately sleeps while it waits for the other workers.
WATCHDOG_SWITCH = "DISABLE_WATCHDOG_CPU_WALLCLOCK_CHECK"


def run_worker(calibrationID: int, workerID: int, workDir: Path) -> int:
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    jobID = os.environ.get("JOBID")
    if jobID:
        Path(WATCHDOG_SWITCH).touch()
    worker = Worker(
        CalibrationClient(),
        calibrationID,
        workerID,
        workDir,
        report=status_reporter(jobID),
        environment=marlin_environment if jobID else None,
    )
    return worker.run()
