"""Service-side operations for the CalibrationAgent (TrustedHost only): what needs looking
after, and the agent's verdicts about workers and calibrations, stored atomically."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB, CalibrationDBError, now
from ILCDIRAC.CalibrationSystem.logic.calibrations import FAILED, JOB_ID_FORMATS, RUNNING, checked_id
from ILCDIRAC.CalibrationSystem.Utilities.lifecycle import IllegalTransition
from ILCDIRAC.CalibrationSystem.Utilities.limits import ServiceLimits, shown
from ILCDIRAC.CalibrationSystem.Utilities.schema import is_int
from ILCDIRAC.CalibrationSystem.Utilities.stored_files import RESULT_PREFIX
from ILCDIRAC.CalibrationSystem.Utilities.validation import NO_LIMITS, CalibrationError
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import WorkerStatus

#: The settings the agent needs to look after a calibration's workers and deliver its results.
AGENT_SETTINGS = (
    "maxResubmissionsPerWorker",
    "maxFailedWorkerFraction",
    "outputPath",
    "outputSE",
    "marlinVersion",
    "platform",
    "cpuTime",
    "geometryTarball",
    "numberOfJobs",
    "notifyByMail",
)


def agent_work(db: CalibrationDB) -> list[dict[str, Any]]:
    """Running calibrations and ended ones not cleaned up yet, with their workers."""
    work = []
    for row in db.attentionList():
        work.append(
            {
                "calibrationID": row["CalibrationID"],
                "status": row["Status"],
                "step": row["Step"],
                "resultsNeeded": row["ResultsNeeded"],
                "owner": row["Owner"],
                "ownerDN": row["OwnerDN"],
                "ownerGroup": row["OwnerGroup"],
                "backend": row["Backend"],
                "settings": {key: row["Settings"].get(key) for key in AGENT_SETTINGS},
                "endTime": row["EndTime"],
                "deliveryTime": row["DeliveryTime"],
                "deliveryReport": row["DeliveryReport"],
                "reason": row["Reason"],
                "notificationTime": row["NotificationTime"],
                "workers": [
                    {
                        "workerID": w["WorkerID"],
                        "jobID": w["JobID"],
                        "status": w["Status"],
                        "lastSeen": w["LastSeen"],
                        "lastStep": w["LastStep"],
                        "resubmissions": w["Resubmissions"],
                    }
                    for w in db.getWorkers(row["CalibrationID"])
                ],
            }
        )
    return work


def set_worker_states(db: CalibrationDB, calibrationID: int, updates: Any, limits: ServiceLimits = NO_LIMITS) -> int:
    """The agent's verdicts: new job IDs after resubmission, resubmission counts, given-up workers."""
    if not isinstance(updates, Mapping) or not updates:
        raise CalibrationError("worker updates must be a non-empty dict of worker ID -> fields")
    if len(updates) > limits.maxWorkers:
        raise CalibrationError(f"{len(updates)} worker updates are more than {limits.name('maxWorkers')}")
    backend = _calibration(db, calibrationID)["Backend"]
    checked: dict[int, dict[str, Any]] = {}
    for key, fields in updates.items():
        if not isinstance(key, str) or not key.isdigit() or len(key) > 10:
            raise CalibrationError(f"worker ID {shown(key)} is not an integer")
        workerID = int(key)
        if not isinstance(fields, Mapping) or not fields:
            raise CalibrationError(f"fields of worker {workerID} must be a non-empty dict")
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "JobID" and isinstance(value, str) and JOB_ID_FORMATS[backend].fullmatch(value):
                values[name] = value
            elif name == "Status" and isinstance(value, str) and value in tuple(WorkerStatus):
                values[name] = WorkerStatus(value)
            elif name == "ApplicationStatus" and isinstance(value, str):
                values[name] = value[:255]
            elif name == "Resubmissions" and is_int(value) and 0 <= value < 2**31:
                values[name] = value
            elif name == "LastSeen" and value is None:
                values[name] = None
            else:
                raise CalibrationError(f"worker {workerID}: {shown(name)} = {shown(value)} is not a valid update")
        checked[workerID] = values
    try:
        db.updateWorkers(calibrationID, checked)
    except (CalibrationDBError, IllegalTransition) as exc:
        raise CalibrationError(str(exc)) from None
    return len(checked)


def fail_calibration(db: CalibrationDB, calibrationID: int, reason: Any, limits: ServiceLimits = NO_LIMITS) -> bool:
    """End a running calibration as failed with the agent's reason (no-op once it ended)."""
    if not isinstance(reason, str) or not reason.strip():
        raise CalibrationError("a failed calibration needs a reason")
    _short(reason, "the reason", limits)
    _calibration(db, calibrationID)
    return db.setCalibrationStatus(calibrationID, FAILED, reason.strip())


def _short(text: str, what: str, limits: ServiceLimits) -> None:
    if len(text) > limits.maxStringLength:
        raise CalibrationError(f"{what} has {len(text)} characters, more than {limits.name('maxStringLength')}")


def mark_delivered(db: CalibrationDB, calibrationID: int, report: Any, limits: ServiceLimits = NO_LIMITS) -> None:
    """Record that (and where) the results were copied to the user's outputPath."""
    if not isinstance(report, str):
        raise CalibrationError("the delivery report must be a string")
    _short(report, "the delivery report", limits)
    calibration = _calibration(db, calibrationID)
    if calibration["Status"] == RUNNING:
        raise CalibrationError(f"calibration {calibrationID} is still running: nothing to deliver yet")
    db.updateCalibration(calibrationID, DeliveryTime=now(), DeliveryReport=report)


def claim_notification(db: CalibrationDB, calibrationID: int) -> bool:
    """Record that the owner of an ended calibration is being told; True only for the one call
    that recorded it: the agent mails only then, so the mail never goes twice."""
    calibration = _calibration(db, calibrationID)
    if calibration["Status"] == RUNNING:
        raise CalibrationError(f"calibration {calibrationID} is still running: nothing to tell yet")
    return db.claimNotification(calibrationID)


def release_notification(db: CalibrationDB, calibrationID: int) -> None:
    """The mail could not be sent: let the next agent cycle try again."""
    _calibration(db, calibrationID)
    db.releaseNotification(calibrationID)


def remove_calibration_data(db: CalibrationDB, calibrationID: int) -> None:
    """Delete the working data of an ended calibration, keeping its history and results."""
    calibration = _calibration(db, calibrationID)
    if calibration["Status"] == RUNNING:
        raise CalibrationError(f"calibration {calibrationID} is still running: its data is in use")
    db.deleteCalibrationData(calibrationID, keepPrefix=RESULT_PREFIX)


def _calibration(db: CalibrationDB, calibrationID: int) -> dict[str, Any]:
    try:
        return db.getCalibration(checked_id(calibrationID), full=False)
    except CalibrationDBError as exc:
        raise CalibrationError(str(exc)) from None
