"""A worker's ApplicationStatus on the DIRAC job monitor, through DIRAC's real JobReport.

There is no WMS here: only the JobStateUpdate client that ``JobReport`` sends with is replaced,
by one that records exactly what would have gone to the JobStateUpdate service.
"""
from __future__ import annotations

import logging

import pytest
from DIRAC.WorkloadManagementSystem.Client import JobReport as job_report_module

from ILCDIRAC.CalibrationSystem.Client import CalibrationClient as client_module
from ILCDIRAC.CalibrationSystem.Client.StatusReport import dirac_job_id, status_reporter
from ILCDIRAC.CalibrationSystem.Client.Worker import EXIT_REFUSED
from ILCDIRAC.CalibrationSystem.Client.WorkerMain import WATCHDOG_SWITCH, run_worker

RUNNING = "Running: stage: 3; phase: 3; step: 19"
WAITING = "PandoraCalib_291: step 19 is finished. Waiting for other jobs"
FINISHED = "PandoraCalib_291: Calibration is finished."


class RecordingJobStateUpdate:
    """JobStateUpdateClient without a WMS: records setJobStatusBulk calls, failing on request."""

    sent: list[tuple[int, list[dict], bool]] = []
    failures = 0

    def setJobStatusBulk(self, jobID, statusDict, force=False):
        if RecordingJobStateUpdate.failures:
            RecordingJobStateUpdate.failures -= 1
            return {"OK": False, "Message": "Cannot connect to JobStateUpdate"}
        records = [statusDict[stamp] for stamp in sorted(statusDict)]
        RecordingJobStateUpdate.sent.append((jobID, records, force))
        return {"OK": True, "Value": ""}


@pytest.fixture
def monitor(monkeypatch):
    RecordingJobStateUpdate.sent, RecordingJobStateUpdate.failures = [], 0
    monkeypatch.setattr(job_report_module, "JobStateUpdateClient", RecordingJobStateUpdate)
    return RecordingJobStateUpdate


def application_status(text):
    return {"Source": "CalibrationWorker", "ApplicationStatus": text}


@pytest.mark.parametrize("environment, expected", [
    ({"JOBID": "1234"}, 1234), ({"JOBID": " 77 "}, 77), ({}, None), ({"JOBID": ""}, None), ({"JOBID": "0"}, None),
    ({"JOBID": "local:123"}, None), ({"JOBID": "-5"}, None),
])
def test_the_job_id_comes_from_the_job_wrapper_environment(environment, expected):
    assert dirac_job_id(environment) == expected


#: DIRAC's gLogger sub-logger of the worker, as a Python logger.
LOGGER = "dirac.CalibrationWorker"


def logged(caplog) -> list[str]:
    """The worker's log lines as gLogger prints them: the constant message, then the variable part."""
    return [f"{r.getMessage()} {r.varmessage}".strip() for r in caplog.records if r.name == LOGGER]


def test_outside_a_job_the_status_is_only_logged(monitor, caplog):
    report = status_reporter(None)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        report(RUNNING)
        report(WAITING)
    assert monitor.sent == []
    assert logged(caplog) == [f"status: {RUNNING}", f"status: {WAITING}"]


def test_inside_a_job_each_changed_status_goes_to_the_monitor_once(monitor, caplog):
    report = status_reporter(1234)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for message in (RUNNING, WAITING, WAITING, WAITING, RUNNING, RUNNING, FINISHED):
            report(message)
    assert monitor.sent == [
        (1234, [application_status(RUNNING)], False),
        (1234, [application_status(WAITING)], False),
        (1234, [application_status(RUNNING)], False),
        (1234, [application_status(FINISHED)], False),
    ]
    assert len([line for line in logged(caplog) if line.startswith("status: ")]) == 7, "every report is logged"


def test_a_status_the_monitor_did_not_take_is_sent_again_at_the_next_report(monitor):
    report = status_reporter(1234)
    monitor.failures = 1
    report(RUNNING)
    assert monitor.sent == []
    report(RUNNING)
    assert monitor.sent == [(1234, [application_status(RUNNING)], False)], "retried once, not queued twice"

    monitor.failures = 1
    report(WAITING)
    report(FINISHED)
    assert monitor.sent[1:] == [(1234, [application_status(WAITING), application_status(FINISHED)], False)], \
        "the missed status goes first, with its own time stamp"
    report(FINISHED)
    assert len(monitor.sent) == 2


class RefusingClient:
    """The Calibration service answering the worker's first request with a refusal."""

    def __init__(self, *args, **kwargs):
        pass

    def getWorkerSetup(self, calibrationID, workerID):
        return {"OK": False, "Errno": 22, "Message": f"calibration {calibrationID} does not exist or does not belong to you"}


def test_run_worker_inside_a_job_disables_the_cpu_check_and_reports_to_the_monitor(tmp_path, monkeypatch, monitor):
    monkeypatch.setattr(client_module, "CalibrationClient", RefusingClient)
    monkeypatch.setenv("JOBID", "4321")
    monkeypatch.chdir(tmp_path)

    assert run_worker(17, 2, tmp_path / "work") == EXIT_REFUSED
    assert (tmp_path / WATCHDOG_SWITCH).is_file()
    assert WATCHDOG_SWITCH == "DISABLE_WATCHDOG_CPU_WALLCLOCK_CHECK"
    assert monitor.sent == [(4321, [application_status(
        "PandoraCalib_17: getWorkerSetup: calibration 17 does not exist or does not belong to you")], False)]


def test_run_worker_outside_a_job_leaves_the_watchdog_and_the_monitor_alone(tmp_path, monkeypatch, monitor):
    monkeypatch.setattr(client_module, "CalibrationClient", RefusingClient)
    monkeypatch.delenv("JOBID", raising=False)
    monkeypatch.chdir(tmp_path)

    assert run_worker(17, 2, tmp_path / "work") == EXIT_REFUSED
    assert not (tmp_path / WATCHDOG_SWITCH).exists()
    assert monitor.sent == []
