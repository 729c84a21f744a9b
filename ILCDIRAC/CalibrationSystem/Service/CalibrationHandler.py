"""DISET handler of the Calibration service ``Calibration/Calibration``.

A thin transport layer: DIRAC authenticates the caller and checks argument types (``types_``),
this class turns the caller into a ``Caller`` (with what the CS allows them: administrator,
grid user folder, local backend) and delegates to ``logic.calibrations``, whose
``CalibrationError`` messages go back as S_ERROR unchanged. Who may call what is in the CS
(``Authorization``; agent-only methods need ``TrustedHost``); *which* calibration a caller may
touch (their own; administrators, ``AdminProperties``, may also see and kill others') and the
limits (``ServiceLimits``) are checked in the logic. Any other error is answered with an error
ID only; its details go to the service log under that ID.
"""
from __future__ import annotations

import errno
import functools
import inspect

from DIRAC import S_ERROR, S_OK, gLogger
from DIRAC.ConfigurationSystem.Client.Helpers.Operations import Operations
from DIRAC.ConfigurationSystem.Client.Helpers.Registry import getVOForGroup
from DIRAC.Core.DISET.RequestHandler import RequestHandler

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic
from ILCDIRAC.CalibrationSystem.logic import supervision
from ILCDIRAC.CalibrationSystem.logic.calibrations import CalibrationError, Caller, new_error_id
from ILCDIRAC.CalibrationSystem.Utilities.limits import LimitError, ServiceLimits
from ILCDIRAC.CalibrationSystem.Utilities.paths import user_home


def refusal(message: str) -> dict:
    """S_ERROR for a request that will never succeed as sent: Errno EINVAL tells workers not to
    retry, while the message stays exactly the logic's (DIRAC would prefix the errno text)."""
    result = S_ERROR(message, callStack=[])
    result["Errno"] = errno.EINVAL
    return result


def _delegate(method):
    """Map the logic's outcome to DIRAC's return structure. DIRAC checks the types of the
    arguments ``types_`` names, but lets more arguments through: they are refused here."""
    name = method.__name__.removeprefix("export_")
    expected = len(inspect.signature(method).parameters) - 1

    @functools.wraps(method)
    def wrapper(self, *args):
        if len(args) != expected:
            return refusal(f"{name} takes {expected} arguments, not {len(args)}")
        try:
            return S_OK(method(self, *args))
        except CalibrationError as exc:
            return refusal(str(exc))
        except Exception as exc:  # noqa: BLE001 - the details (SQL, paths) are for the log only
            errorID = new_error_id()
            gLogger.exception(f"Calibration service: internal error {errorID} in {name}", lException=exc)
            return S_ERROR(f"internal error {errorID} in {name}: the details are in the service log")

    return wrapper


class CalibrationHandler(RequestHandler):
    """Calibration service: calibrations for users, step parameters and results for workers."""

    db: CalibrationDB | None = None
    adminProperties: frozenset[str] = frozenset()
    localBackendUsers: frozenset[str] = frozenset()
    limits: ServiceLimits = ServiceLimits()
    polling: dict[str, float] = {}

    @classmethod
    def initializeHandler(cls, serviceInfoDict):
        if cls.db is None:
            try:
                cls.db = CalibrationDB()
            except Exception as exc:  # noqa: BLE001 - the service must not start without its DB
                return S_ERROR(f"cannot open CalibrationDB: {exc}")
        cls.adminProperties = frozenset(cls.srv_getCSOption("AdminProperties", ["JobAdministrator"]))
        cls.localBackendUsers = frozenset(cls.srv_getCSOption("LocalBackendUsers", []))
        try:
            cls.limits = ServiceLimits.from_options(cls.srv_getCSOption)
        except LimitError as exc:
            return S_ERROR(f"Calibration service limits: {exc}")
        cls.polling = {
            "minimum": cls.srv_getCSOption("WorkerPollMinimum", 5.0),
            "maximum": cls.srv_getCSOption("WorkerPollMaximum", 120.0),
            "patience": cls.srv_getCSOption("WorkerPatience", 3600.0),
        }
        return S_OK()

    def caller(self) -> Caller:
        creds = self.getRemoteCredentials()
        properties = frozenset(creds.get("properties", []))
        username, group = creds.get("username", "anonymous"), creds.get("group", "")
        vo = getVOForGroup(group) if group else ""
        return Caller(
            dn=creds.get("DN", ""),
            username=username,
            group=group,
            properties=properties,
            isAdmin=bool(properties & (self.adminProperties | {"TrustedHost"})),
            userHome=user_home(vo, Operations(vo=vo).getValue("LFNUserPrefix", "user"), username) if vo else None,
            localBackend=username in self.localBackendUsers,
        )

    # ------------------------------------------------------------------ users
    types_createCalibration = [dict, dict]

    @_delegate
    def export_createCalibration(self, settings, inputFiles):
        """Create a calibration from resolved settings and the input files (steering, Pandora settings)."""
        return logic.create_calibration(self.db, self.caller(), settings, inputFiles, self.limits)

    types_getCalibrationStatus = [list]

    @_delegate
    def export_getCalibrationStatus(self, calibrationIDs):
        """Status of the given calibrations, or of the caller's newest when the list is empty."""
        return logic.calibration_status(self.db, self.caller(), calibrationIDs, self.limits)

    types_getCalibrationHistory = [int]

    @_delegate
    def export_getCalibrationHistory(self, calibrationID):
        """Every step of a calibration: constants used, estimator outputs, outcome."""
        return logic.calibration_history(self.db, self.caller(), calibrationID)

    types_killCalibration = [int]

    @_delegate
    def export_killCalibration(self, calibrationID):
        """Stop a calibration (its owner, or an administrator)."""
        return logic.kill_calibration(self.db, self.caller(), calibrationID)

    types_registerWorkers = [int, dict]

    @_delegate
    def export_registerWorkers(self, calibrationID, jobIDs):
        """Record which job runs each worker ({workerID: jobID}), once, after submission."""
        return logic.register_workers(self.db, self.caller(), calibrationID, jobIDs, self.limits)

    # ------------------------------------------------------------------ workers
    types_getWorkerSetup = [int, int]

    @_delegate
    def export_getWorkerSetup(self, calibrationID, workerID):
        """What a worker needs once: its event slices, the settings and input files."""
        return logic.worker_setup(self.db, self.caller(), calibrationID, workerID, self.polling)

    types_getStepParameters = [int, int, int]

    @_delegate
    def export_getStepParameters(self, calibrationID, workerID, lastStep):
        """Run step N with these constants, wait, or stop; lastStep 0 means none done yet."""
        return logic.step_parameters(self.db, self.caller(), calibrationID, workerID, lastStep)

    types_submitResult = [int, int, int, dict]

    @_delegate
    def export_submitResult(self, calibrationID, step, workerID, report):
        """A worker's histogram summary for one step; committed before it is acknowledged."""
        return logic.submit_result(self.db, self.caller(), calibrationID, step, workerID, report, self.limits)

    types_getCalibrationFile = [int, str]

    @_delegate
    def export_getCalibrationFile(self, calibrationID, name):
        """A file stored with the calibration (e.g. a merged photon likelihood), as text."""
        return logic.calibration_file(self.db, self.caller(), calibrationID, name)

    types_getCalibrationResults = [int]

    @_delegate
    def export_getCalibrationResults(self, calibrationID):
        """Final constants with uncertainties and the names of the result files of a finished calibration."""
        return logic.calibration_results(self.db, self.caller(), calibrationID)

    # ------------------------------------------------------------------ agent (TrustedHost)
    types_closeReadySteps = []

    @_delegate
    def export_closeReadySteps(self):
        """Safety net: close every open step that has enough results."""
        return logic.close_ready_steps(self.db)

    types_getAgentWork = []

    @_delegate
    def export_getAgentWork(self):
        """Running calibrations and ended ones not yet cleaned up, with their workers."""
        return supervision.agent_work(self.db)

    types_setWorkerStates = [int, dict]

    @_delegate
    def export_setWorkerStates(self, calibrationID, updates):
        """The agent's verdicts on workers: {workerID: {JobID, Status, Resubmissions, LastSeen}}."""
        return supervision.set_worker_states(self.db, calibrationID, updates, self.limits)

    types_failCalibration = [int, str]

    @_delegate
    def export_failCalibration(self, calibrationID, reason):
        """End a running calibration as failed, with the reason."""
        return supervision.fail_calibration(self.db, calibrationID, reason, self.limits)

    types_finalizeCalibration = [int]

    @_delegate
    def export_finalizeCalibration(self, calibrationID):
        """Make sure a finished calibration has its result files."""
        return logic.finalize_calibration(self.db, calibrationID)

    types_markDelivered = [int, str]

    @_delegate
    def export_markDelivered(self, calibrationID, report):
        """Record that the results were copied to the user's outputPath."""
        return supervision.mark_delivered(self.db, calibrationID, report, self.limits)

    types_claimNotification = [int]

    @_delegate
    def export_claimNotification(self, calibrationID):
        """Record that the owner is being mailed about the end; True only the first time."""
        return supervision.claim_notification(self.db, calibrationID)

    types_releaseNotification = [int]

    @_delegate
    def export_releaseNotification(self, calibrationID):
        """The end-of-calibration mail could not be sent: try again next cycle."""
        return supervision.release_notification(self.db, calibrationID)

    types_removeCalibrationData = [int]

    @_delegate
    def export_removeCalibrationData(self, calibrationID):
        """Delete the working data of an ended calibration (history and results stay)."""
        return supervision.remove_calibration_data(self.db, calibrationID)
