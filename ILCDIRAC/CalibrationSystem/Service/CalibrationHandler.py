"""DISET handler of the Calibration service ``Calibration/Calibration``.

A thin transport layer: DIRAC authenticates the caller and checks argument types (``types_``),
this class turns the caller into a ``Caller`` and delegates to ``logic.calibrations``, whose
``CalibrationError`` messages go back as S_ERROR unchanged. Who may call what is in the CS
(``Authorization``; agent-only methods need ``TrustedHost``); *which* calibration a caller may
touch (only their own, unless they hold one of ``AdminProperties``) is checked in the logic.
"""
from __future__ import annotations

import errno
import functools

from DIRAC import S_ERROR, S_OK, gLogger
from DIRAC.Core.DISET.RequestHandler import RequestHandler

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic
from ILCDIRAC.CalibrationSystem.logic import supervision
from ILCDIRAC.CalibrationSystem.logic.calibrations import CalibrationError, Caller


def refusal(message: str) -> dict:
    """S_ERROR for a request that will never succeed as sent: Errno EINVAL tells workers not to
    retry, while the message stays exactly the logic's (DIRAC would prefix the errno text)."""
    result = S_ERROR(message, callStack=[])
    result["Errno"] = errno.EINVAL
    return result


def _delegate(method):
    """Map the logic's outcome to DIRAC's return structure."""

    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return S_OK(method(self, *args))
        except CalibrationError as exc:
            return refusal(str(exc))
        except Exception as exc:  # noqa: BLE001 - log with context, answer without a traceback
            gLogger.exception(f"Calibration service: {method.__name__} failed", lException=exc)
            return S_ERROR(f"internal error in {method.__name__.removeprefix('export_')}: {type(exc).__name__}: {exc}")

    return wrapper


class CalibrationHandler(RequestHandler):
    """Calibration service: calibrations for users, step parameters and results for workers."""

    db: CalibrationDB | None = None
    adminProperties: frozenset[str] = frozenset()
    polling: dict[str, float] = {}

    @classmethod
    def initializeHandler(cls, serviceInfoDict):
        if cls.db is None:
            try:
                cls.db = CalibrationDB()
            except Exception as exc:  # noqa: BLE001 - the service must not start without its DB
                return S_ERROR(f"cannot open CalibrationDB: {exc}")
        cls.adminProperties = frozenset(cls.srv_getCSOption("AdminProperties", ["JobAdministrator"]))
        cls.polling = {
            "minimum": cls.srv_getCSOption("WorkerPollMinimum", 5.0),
            "maximum": cls.srv_getCSOption("WorkerPollMaximum", 120.0),
            "patience": cls.srv_getCSOption("WorkerPatience", 3600.0),
        }
        return S_OK()

    def caller(self) -> Caller:
        creds = self.getRemoteCredentials()
        properties = frozenset(creds.get("properties", []))
        return Caller(
            dn=creds.get("DN", ""),
            username=creds.get("username", "anonymous"),
            group=creds.get("group", ""),
            properties=properties,
            isAdmin=bool(properties & (self.adminProperties | {"TrustedHost"})),
        )

    # ------------------------------------------------------------------ users
    types_createCalibration = [dict, dict]

    @_delegate
    def export_createCalibration(self, settings, inputFiles):
        """Create a calibration from resolved settings and the input files (steering, Pandora settings)."""
        return logic.create_calibration(self.db, self.caller(), settings, inputFiles)

    types_getCalibrationStatus = [list]

    @_delegate
    def export_getCalibrationStatus(self, calibrationIDs):
        """Status of the given calibrations, or of all the caller's when the list is empty."""
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in calibrationIDs):
            raise CalibrationError("calibration IDs must be integers")
        if not calibrationIDs:
            return logic.calibration_status(self.db, self.caller())
        return [row for i in calibrationIDs for row in logic.calibration_status(self.db, self.caller(), i)]

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

    types_registerWorkers = [int, dict, dict]

    @_delegate
    def export_registerWorkers(self, calibrationID, jobIDs, backendInfo):
        """Record which job runs each worker ({workerID: jobID}) and how to reach them, after submission."""
        return logic.register_workers(self.db, self.caller(), calibrationID, jobIDs, backendInfo)

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
        return logic.step_parameters(self.db, self.caller(), calibrationID, workerID, lastStep or None)

    types_submitResult = [int, int, int, dict]

    @_delegate
    def export_submitResult(self, calibrationID, step, workerID, report):
        """A worker's histogram summary for one step; committed before it is acknowledged."""
        return logic.submit_result(self.db, self.caller(), calibrationID, step, workerID, report)

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
        return supervision.set_worker_states(self.db, calibrationID, updates)

    types_failCalibration = [int, str]

    @_delegate
    def export_failCalibration(self, calibrationID, reason):
        """End a running calibration as failed, with the reason."""
        return supervision.fail_calibration(self.db, calibrationID, reason)

    types_finalizeCalibration = [int]

    @_delegate
    def export_finalizeCalibration(self, calibrationID):
        """Make sure a finished calibration has its result files."""
        return logic.finalize_calibration(self.db, calibrationID)

    types_markDelivered = [int, str]

    @_delegate
    def export_markDelivered(self, calibrationID, report):
        """Record that the results were copied to the user's outputPath."""
        return supervision.mark_delivered(self.db, calibrationID, report)

    types_removeCalibrationData = [int]

    @_delegate
    def export_removeCalibrationData(self, calibrationID):
        """Delete the working data of an ended calibration (history and results stay)."""
        return supervision.remove_calibration_data(self.db, calibrationID)
