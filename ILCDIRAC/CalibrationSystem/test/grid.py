"""A calibration on the test bed's real DIRAC WMS (``Testbed(wms=True)``), as a user runs it.

``GridScenario`` writes the emulated sample files once, uploads them to the test bed's storage
element (registered in its file catalog) as the user, and writes two settings files: the grid
one (``backend: dirac``, samples as LFNs, results to ``outputPath`` on the SE) that ``submit()``
hands to ``dirac-clic-calibration-submit``, and a local one (``backend: local``, the same files
on disk) for comparisons. The helpers read job states as the user sees them in DIRAC.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil
import yaml

from ILCDIRAC.CalibrationSystem.localdirac import wms
from ILCDIRAC.CalibrationSystem.localdirac.scenario import Scenario, ScenarioError

LOCAL_SETTINGS = "settings-local.yaml"


class GridScenario(Scenario):
    """A Scenario whose calibration runs as iLCDirac jobs through the test bed's WMS."""

    @property
    def lfn_base(self) -> str:
        return f"/{wms.VO}/user/{self.user[0]}/{self.user}/{self.folder.name}"

    @property
    def output_lfn(self) -> str:
        return f"{self.lfn_base}/output"

    def prepare(self) -> Path:
        local = super().prepare()
        values = yaml.safe_load(local.read_text())
        local.rename(local.with_name(LOCAL_SETTINGS))
        grid = {
            **values,
            "backend": "dirac",
            "marlinVersion": wms.MARLIN_VERSION,
            "platform": wms.PLATFORM,
            "marlinExecutable": "Marlin",
            "outputPath": self.output_lfn,
            "outputSE": wms.STORAGE_ELEMENT,
        }
        for key in [k for k in values if k.endswith("Files")]:
            grid[key] = self.upload(values[key])
        grid.update(self.settings)
        local.write_text(yaml.safe_dump(grid, sort_keys=False))
        return local

    def upload(self, files: Iterable[str]) -> list[str]:
        """putAndRegister each file on the test bed's SE as the user; their LFNs."""
        from DIRAC.DataManagementSystem.Client.DataManager import DataManager

        lfns = []
        with self.testbed.as_user(self.user):
            manager = DataManager()
            for path in files:
                lfn = f"{self.lfn_base}/samples/{Path(path).name}"
                result = manager.putAndRegister(lfn, path, wms.STORAGE_ELEMENT)
                if not result["OK"] or lfn not in result["Value"]["Successful"]:
                    raise ScenarioError(f"upload of {path} as {lfn}: {result}")
                lfns.append(lfn)
        return lfns

    def local_settings(self) -> Path:
        return self.folder / LOCAL_SETTINGS

    def workers(self, calibrationID: int) -> list[dict[str, Any]]:
        from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB

        return CalibrationDB(self.testbed.db_url).getWorkers(calibrationID)

    def logs(self, calibrationID: int, lines: int = 15) -> str:
        parts = [super().logs(calibrationID, lines)]
        for log in (self.testbed.agent_log, self.testbed.wms.pilotLog):
            parts.append(f"--- {log.name}\n" + "\n".join(_tail_lines(log, lines)))
        return "\n".join(parts)


def _tail_lines(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return [f"({exc})"]


#: How long a test keeps retrying a JobMonitoring call that could not connect (a loaded machine
#: now and then resets a TLS handshake; DIRAC's agents simply try again at their next cycle).
RECONNECT_SECONDS = 30.0


def _monitoring(testbed, user: str, call: Callable[[Any], dict], what: str) -> Any:
    from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient

    deadline = time.monotonic() + RECONNECT_SECONDS
    while True:
        with testbed.as_user(user):
            result = call(JobMonitoringClient())
        if result["OK"] or "Can't connect" not in result["Message"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    if not result["OK"]:
        raise ScenarioError(f"{what}: {result['Message']}")
    return result["Value"]


def job_states(testbed, jobIDs: Iterable[int | str], user: str = "alice") -> dict[int, dict[str, str]]:
    """Job ID -> Status, MinorStatus, ApplicationStatus, as JobMonitoring tells ``user``."""
    ids = [int(j) for j in jobIDs]
    if not ids:
        return {}
    states = _monitoring(testbed, user, lambda client: client.getJobsStates(ids), f"job states of {ids}")
    return {int(k): v for k, v in states.items()}


def job_attributes(testbed, jobID: int | str, user: str = "alice") -> dict[str, str]:
    return _monitoring(testbed, user, lambda client: client.getJobAttributes(int(jobID)), f"attributes of job {jobID}")


def application_statuses(testbed, jobID: int | str, user: str = "alice") -> list[str]:
    """Every ApplicationStatus the job had, in order (DIRAC's job logging records)."""
    records = _monitoring(testbed, user, lambda client: client.getJobLoggingInfo(int(jobID)),
                          f"logging info of job {jobID}")
    return [record[2] for record in records if record[2] not in ("", "idem", "Unknown")]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, evidence: Callable[[], str] = lambda: "",
             interval: float = 1.0) -> Any:
    """Poll ``condition`` until it returns something true (returned), else raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioError(f"{what}: not within {timeout} s\n{evidence()}")
        time.sleep(interval)


def stable_final_state(testbed, jobID: int | str, timeout: float, user: str = "alice", settle: int = 12,
                       seen: list[str] | None = None) -> str:
    """The job's final Status once it has stayed in a final state for ``settle`` readings in a row,
    a second apart (a killed running job flickers Killed -> Running -> Failed until its JobWrapper's
    watchdog acts on the kill, within twice the test bed's 5 s CheckingTime); every reading is
    appended to ``seen``."""
    seen = [] if seen is None else seen

    def settled():
        status = job_states(testbed, [jobID], user)[int(jobID)]["Status"]
        seen.append(status)
        tail = seen[-settle:]
        return len(tail) == settle and len(set(tail)) == 1 and tail[0] in wms.FINAL_JOB_STATES and tail[0]

    return wait_for(settled, timeout, f"job {jobID} reaching a stable final state", lambda: f"seen: {seen}")


def payload_process(testbed, jobID: int | str) -> psutil.Process | None:
    """The calibration worker running as the payload of the test bed's DIRAC job ``jobID`` (in the
    pilot's folder: other test beds on the machine number their jobs from 1 too)."""
    pilot = str(testbed.wms.pilotDir) + os.sep
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if not any(part.endswith("calibration_worker.py") for part in cmdline):
            continue
        try:
            if process.environ().get("JOBID") == str(jobID) and process.cwd().startswith(pilot):
                return process
        except psutil.Error:
            continue
    return None


def worker_jobs(workers: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    return {w["WorkerID"]: w["JobID"] for w in workers}
