"""CalibrationAgent: keeps calibrations going without anyone watching them.

Every cycle, for every calibration that needs looking after:
- closes steps the service could not close itself (the state machine's safety net);
- asks the backend what became of each worker's job, resubmits lost or stalled workers with the
  same worker ID (they join at the current step) up to the calibration's
  ``maxResubmissionsPerWorker``, gives up on the rest, and fails the calibration with the reason
  once its threshold can no longer be reached or too many workers failed (``logic.health``);
- kills the jobs of killed, failed and finished calibrations;
- delivers a finished calibration's results to its ``outputPath``: an LFN folder inside the
  owner's grid user folder, on ``outputSE``, through the DIRAC DataManager, as the owner;
- mails the owner once when a calibration finished (after the delivery, saying where the
  results are) or failed (with the reason), unless its settings say ``notifyByMail: false``
  (``logic.notification``; sent as the host through DIRAC's NotificationClient, from ``MailFrom``);
- deletes the working data of calibrations ended more than ``DeleteAfterDays`` ago.
Grid operations run with the owner's proxy (``executeWithUserProxy``); a problem with one
calibration is logged and never stops the others.

The agent runs as the DIRAC host: it never runs a command, uses an environment or touches a
path a user chose. Only where the administrator sets ``LocalBackendDir`` (a single-user
installation) does it start local worker processes (below ``<LocalBackendDir>/workers``, with its
own environment, on the owner's behalf) and copy a local calibration's results below
``<LocalBackendDir>/results``; it creates those folders itself and follows no link in them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from DIRAC import S_OK
from DIRAC.ConfigurationSystem.Client.Helpers.Operations import Operations
from DIRAC.ConfigurationSystem.Client.Helpers.Registry import getUserOption, getVOForGroup
from DIRAC.Core.Base.AgentModule import AgentModule
from DIRAC.Core.Utilities.Proxy import executeWithUserProxy
from DIRAC.Core.Utilities.ReturnValues import convertToReturnValue
from DIRAC.FrameworkSystem.Client.NotificationClient import NotificationClient

from ILCDIRAC.CalibrationSystem.Client.Backends import backend_for
from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient
from ILCDIRAC.CalibrationSystem.logic.health import Limits, review_workers
from ILCDIRAC.CalibrationSystem.logic.notification import compose, due
from ILCDIRAC.CalibrationSystem.Utilities.clock import now, older_than
from ILCDIRAC.CalibrationSystem.Utilities.paths import (
    PathError,
    lfn_within,
    normal_lfn,
    open_below,
    relative_path,
    user_home,
)
from ILCDIRAC.CalibrationSystem.Utilities.stored_files import RESULT_PREFIX, decode_file
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import ENDED_WORKER_STATES, CalibrationStatus, WorkerStatus


class AgentError(RuntimeError):
    """One calibration could not be looked after this cycle."""


class CalibrationAgent(AgentModule):
    """Looks after the steps, worker jobs and results of calibrations."""

    def initialize(self):
        self.client = CalibrationClient(useCertificates=True)
        self.stallTimeout = float(self.am_getOption("StallTimeout", 14400))
        self.deleteAfterDays = float(self.am_getOption("DeleteAfterDays", 30))
        localDir = self.am_getOption("LocalBackendDir", "")
        self.localDir = Path(localDir).resolve() if localDir else None
        self.mailFrom = self.am_getOption("MailFrom", "")
        return S_OK()

    def execute(self):
        closed = self.call("closeReadySteps")
        for item in closed:
            self.log.notice("Closed a step the service left open", str(item))
        for calibration in self.call("getAgentWork"):
            try:
                self.look_after(calibration)
            except Exception as exc:  # noqa: BLE001 - one calibration must not block the others
                self.log.error("Cannot look after calibration",
                               f"{calibration['calibrationID']}: {type(exc).__name__}: {exc}")
        return S_OK()

    def call(self, method: str, *args: Any) -> Any:
        result = getattr(self.client, method)(*args)
        if not result["OK"]:
            raise AgentError(f"{method}{args}: {result['Message']}")
        return result["Value"]

    # ------------------------------------------------------------------ one calibration
    def look_after(self, calibration: dict[str, Any]) -> None:
        calibrationID = calibration["calibrationID"]
        settings = calibration["settings"]
        workers = calibration["workers"]
        active = {w["workerID"]: w["jobID"] for w in workers if w["jobID"] and w["status"] not in ENDED_WORKER_STATES}
        if active:
            backend = backend_for(calibration["backend"], settings,
                                  localDir=self.localDir / "workers" if self.localDir else None,
                                  owner=(calibration["ownerDN"], calibration["ownerGroup"]))
            states = self.on_backend(calibration, backend.states, calibrationID, active)
            limits = Limits(int(settings["maxResubmissionsPerWorker"]), float(settings["maxFailedWorkerFraction"]),
                            self.stallTimeout)
            review = review_workers(calibration, workers, states, now(), limits)
            self.act(calibration, backend, review)
        if calibration["status"] == CalibrationStatus.FINISHED and calibration["deliveryTime"] is None:
            self.deliver(calibration)
        if due(calibration):
            self.notify(calibration)
        ended = calibration["status"] != CalibrationStatus.RUNNING
        if ended and older_than(calibration["endTime"], self.deleteAfterDays, now()):
            self.call("removeCalibrationData", calibrationID)
            self.log.notice("Working data deleted", f"calibration {calibrationID}, after {self.deleteAfterDays} days")

    def act(self, calibration: dict[str, Any], backend, review) -> None:
        calibrationID = calibration["calibrationID"]
        byJob = {w["jobID"]: w for w in calibration["workers"]}
        updates: dict[str, dict[str, Any]] = {}
        if review.kill:
            self.on_backend(calibration, backend.kill, calibrationID, {byJob[j]["workerID"]: j for j in review.kill})
            for jobID in review.kill:
                worker = byJob[jobID]
                if calibration["status"] != CalibrationStatus.RUNNING or review.fail:
                    updates[str(worker["workerID"])] = {"Status": WorkerStatus.KILLED}
            self.log.notice("Killed jobs", f"calibration {calibrationID}: {', '.join(review.kill)}")
        if review.fail:
            self.call("failCalibration", calibrationID, review.fail)
            self.log.warn("Calibration failed", f"{calibrationID}: {review.fail}")
        if review.resubmit:
            jobs = self.on_backend(calibration, backend.submit, calibrationID, review.resubmit)
            workers = {w["workerID"]: w for w in calibration["workers"]}
            for workerID, jobID in jobs.items():
                updates[str(workerID)] = {
                    "JobID": jobID,
                    "Status": WorkerStatus.RESUBMITTED,
                    "Resubmissions": workers[workerID]["resubmissions"] + 1,
                    "LastSeen": None,
                }
            self.log.notice("Resubmitted workers", f"calibration {calibrationID}: {sorted(jobs)}")
        for workerID in review.dead:
            updates[str(workerID)] = {"Status": WorkerStatus.DEAD,
                                      "ApplicationStatus": "given up after repeated failures"}
        if updates:
            self.call("setWorkerStates", calibrationID, updates)

    def on_backend(self, calibration: dict[str, Any], function: Callable, *args: Any) -> Any:
        """Run a backend operation: grid jobs belong to the user (their proxy), local processes
        are this machine's."""
        if calibration["backend"] == "local":
            return function(*args)
        return self.as_owner(calibration, function, *args)

    def as_owner(self, calibration: dict[str, Any], function: Callable, *args: Any) -> Any:
        """Run a grid operation with the owner's proxy (DIRAC's convertToReturnValue turns its
        value or exception into the S_OK/S_ERROR executeWithUserProxy passes on)."""
        result = executeWithUserProxy(convertToReturnValue(function))(
            *args, proxyUserDN=calibration["ownerDN"], proxyUserGroup=calibration["ownerGroup"]
        )
        if not result["OK"]:
            raise AgentError(f"as {calibration['owner']}: {result['Message']}")
        return result["Value"]

    # ------------------------------------------------------------------ results
    def deliver(self, calibration: dict[str, Any]) -> None:
        """Copy the result files to the owner's outputPath (grid) or, for a local calibration on
        a single-user installation, below LocalBackendDir, and record where they went; a
        calibration whose results cannot go anywhere is marked delivered with the reason (the
        results stay with the service), so it is not retried every cycle."""
        calibrationID = calibration["calibrationID"]
        self.call("finalizeCalibration", calibrationID)
        settings = calibration["settings"]
        outputPath = settings.get("outputPath")
        if outputPath:
            problem = self.output_problem(calibration, outputPath)
            if problem:
                self.call("markDelivered", calibrationID, f"{problem}: results stay with the service")
                return
        elif not (calibration["backend"] == "local" and self.localDir):
            self.call("markDelivered", calibrationID, "no outputPath set: results stay with the service")
            return
        folder = Path(tempfile.mkdtemp(prefix=f"calibration_{calibrationID}_"))
        try:
            for name in self.call("getCalibrationResults", calibrationID)["files"]:
                stored = self.call("getCalibrationFile", calibrationID, name)
                path = folder / relative_path(name.removeprefix(RESULT_PREFIX))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(decode_file(stored))
            if outputPath:
                report = self.as_owner(calibration, upload, folder, normal_lfn(outputPath), settings["outputSE"],
                                       calibrationID)
            else:
                report = copy_local(folder, self.localDir / "results", calibrationID)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.call("markDelivered", calibrationID, report)
        self.log.notice("Results delivered", f"calibration {calibrationID}: {report}")

    def notify(self, calibration: dict[str, Any]) -> None:
        """Mail the owner that the calibration ended, once: the service records the mail before
        it goes, and forgets it again if the transport refused it (tried next cycle)."""
        calibrationID, owner = calibration["calibrationID"], calibration["owner"]
        address = getUserOption(owner, "Email")
        if not self.call("claimNotification", calibrationID):
            return
        if not address:
            self.log.warn("Owner not notified", f"calibration {calibrationID}: the Registry has no Email for {owner}")
            return
        mail = compose(calibration)
        sent = NotificationClient().sendMail(address, mail.subject, mail.body, fromAddress=self.mailFrom)
        if not sent["OK"]:
            self.call("releaseNotification", calibrationID)
            raise AgentError(f"mail to {address} not sent (tried again next cycle): {sent['Message']}")
        self.log.notice("Owner notified", f"calibration {calibrationID}: {address}")

    @staticmethod
    def output_problem(calibration: dict[str, Any], outputPath: str) -> str | None:
        """Why the results cannot go to ``outputPath`` (checked again here, where it is used), or None."""
        settings = calibration["settings"]
        vo = getVOForGroup(calibration["ownerGroup"])
        try:
            lfn = normal_lfn(outputPath, "outputPath")
            prefix = Operations(vo=vo).getValue("LFNUserPrefix", "user") if vo else None
            home = user_home(vo, prefix, calibration["owner"]) if vo else None
        except PathError as exc:
            return str(exc)
        if home is None or not lfn_within(lfn, home):
            return f"outputPath {lfn} is not in {calibration['owner']}'s grid user folder"
        if not settings.get("outputSE"):
            return f"outputPath {lfn} is an LFN folder but no outputSE is set"
        return None


def copy_local(folder: Path, root: Path, calibrationID: int) -> str:
    """Copy every file below ``folder`` (the result folder in the user's layout) into
    <root>/calibration_<ID>/ (again on a retry), creating the folders and the files without
    following any link."""
    root.mkdir(parents=True, exist_ok=True)
    files = result_paths(folder)
    for name in files:
        *folders, base = name.split("/")
        fd = open_below(
            root, [f"calibration_{calibrationID}", *folders], base, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
        )
        with os.fdopen(fd, "wb") as target:
            target.write((folder / name).read_bytes())
    return f"copied {len(files)} files to {root / f'calibration_{calibrationID}'}"


def result_paths(folder: Path) -> list[str]:
    """The result files below ``folder``, as relative POSIX paths (the user's layout)."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def upload(folder: Path, outputPath: str, storageElement: str, calibrationID: int) -> str:
    """putAndRegister every result file under <outputPath>/calibration_<ID>/ on the SE.

    Files are overwritten: a delivery that failed half-way is retried at the next cycle, and the
    files it did upload must not make the retry fail with "LFN already exists"."""
    from DIRAC.DataManagementSystem.Client.DataManager import DataManager

    base = f"{outputPath}/calibration_{calibrationID}"
    manager = DataManager()
    files = result_paths(folder)
    for name in files:
        lfn = f"{base}/{name}"
        result = manager.putAndRegister(lfn, str(folder / name), storageElement, overwrite=True)
        if not result["OK"] or lfn in result["Value"].get("Failed", {}):
            reason = result["Message"] if not result["OK"] else result["Value"]["Failed"][lfn]
            raise AgentError(f"upload of {name} to {storageElement} as {lfn} failed: {reason}")
    return f"uploaded {len(files)} files to {base} on {storageElement}"
