"""The mail that tells a calibration's owner it ended: when it is due, and what it says.

The agent sends it (as the DIRAC host, through DIRAC's NotificationClient) to the address the
Registry holds for the owner (``Registry/Users/<name>/Email``) once a calibration finished and
its results were delivered, or failed; a killed calibration was stopped by a person and gets
none. The owner switches it off with the setting ``notifyByMail: false``. The service records
the mail before it goes (``claimNotification``), so no restart of the agent or the service ever
sends it twice; a mail the transport refused is released and tried again next cycle.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus

#: Statuses whose owner is told.
NOTIFIED = (CalibrationStatus.FINISHED, CalibrationStatus.FAILED)


@dataclass(frozen=True)
class Mail:
    subject: str
    body: str


def due(calibration: Mapping[str, Any]) -> bool:
    """Whether the agent owes the owner the mail now (from the agent's view of the calibration)."""
    if calibration["notificationTime"] is not None or calibration["settings"].get("notifyByMail") is False:
        return False
    if calibration["status"] == CalibrationStatus.FINISHED:
        return calibration["deliveryTime"] is not None  # then the mail can say where the results are
    return calibration["status"] == CalibrationStatus.FAILED


def compose(calibration: Mapping[str, Any]) -> Mail:
    """Subject and body: how it ended, why, and where the results are (or how to look)."""
    calibrationID, status = calibration["calibrationID"], calibration["status"]
    subject = f"Calibration {calibrationID} {status}"
    lines = [f"Dear {calibration['owner']},", ""]
    if status == CalibrationStatus.FINISHED:
        lines += [f"your calibration {calibrationID} finished after {calibration['step']} steps.", "",
                  f"Results: {calibration['deliveryReport']}.",
                  "The constants with their uncertainties and the result files (ready-to-run steering, plots):",
                  f"  dirac-clic-calibration-results {calibrationID}"]
    else:
        lines += [f"your calibration {calibrationID} failed at step {calibration['step']}.", "",
                  f"Reason: {calibration['reason']}", "",
                  "Its steps so far and every worker's state:",
                  f"  dirac-clic-calibration-status {calibrationID}"]
    lines += ["", "This mail is sent once per calibration; notifyByMail: false in the settings file switches it off.",
              "-- the iLCDirac Calibration service"]
    return Mail(subject, "\n".join(lines) + "\n")
