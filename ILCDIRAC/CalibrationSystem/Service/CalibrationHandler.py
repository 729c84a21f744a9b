"""DISET handler of the Calibration service ``Calibration/Calibration``.

A thin transport shell over ``logic.service.CalibrationService``: DIRAC authenticates the caller,
checks who may call what (the CS's ``Authorization``, and where the CS says nothing about a
method, the ``auth_`` defaults here: users' methods need an authenticated caller, the agent's
need ``TrustedHost``) and the argument types (``types_``, from the facade's ``RPC_TYPES``). This
class reads the service's CS options, turns DIRAC's credentials into a ``Caller`` (with the
caller's grid user folder from the CS) and hands each call to the facade, which checks the
arguments, runs the logic and maps its outcome to S_OK/S_ERROR. *Which* calibration a caller may
touch (their own; administrators, ``AdminProperties``, may also see and kill others') and the
limits (``ServiceLimits``) are checked in the logic.
"""
from __future__ import annotations

import functools

from DIRAC import S_ERROR, S_OK, gLogger
from DIRAC.ConfigurationSystem.Client.Helpers.Operations import Operations
from DIRAC.ConfigurationSystem.Client.Helpers.Registry import getVOForGroup
from DIRAC.Core.DISET.RequestHandler import RequestHandler

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.logic.calibrations import ClosePolicy, woken_answers
from ILCDIRAC.CalibrationSystem.logic.closer import StepCloser
from ILCDIRAC.CalibrationSystem.logic.polling import PollPolicy
from ILCDIRAC.CalibrationSystem.logic.service import RPC_TYPES, CalibrationService
from ILCDIRAC.CalibrationSystem.logic.step_watch import StepWatch
from ILCDIRAC.CalibrationSystem.Utilities.lifecycle import Change, observe
from ILCDIRAC.CalibrationSystem.Utilities.limits import LimitError, ServiceLimits
from ILCDIRAC.CalibrationSystem.Utilities.paths import user_home
from ILCDIRAC.CalibrationSystem.Utilities.validation import Caller

#: Who may call a method when the CS's Authorization section has no line for it: DIRAC asks the
#: handler's ``auth_<method>`` before the section's ``Default``, so a CS that only says
#: ``Default = authenticated`` still keeps the agent's methods to trusted hosts.
USER_AUTH = ["authenticated"]
AGENT_AUTH = ["TrustedHost"]
#: Threads a service keeps for everything but held calls (reports, users, the agent).
FREE_THREADS = 20
#: The longest a call is held (s): below DIRAC's RPC time-out (600 s), after which a worker's
#: client would give up on the call and ask again.
MAX_HOLD_TIME = 540.0


def hold_capacity(option) -> int:
    """How many ``waitForNextStep`` calls this process may hold: ``MaxHeldCalls``, within what
    DIRAC lets run at once (``MaxThreads``, ``MaxWaitingPetitions``: DIRAC's defaults 15 and
    100; ``ThreadLimit/RPC/waitForNextStep``, default 15, below 1 no limit), keeping
    ``FREE_THREADS`` for the other calls. ``option(name, default)`` reads the service's CS section."""
    limits = [int(option("MaxHeldCalls", 1000)),
              int(option("MaxThreads", 15)) - FREE_THREADS,
              int(option("MaxWaitingPetitions", 100)) - FREE_THREADS]
    perMethod = int(option("ThreadLimit/RPC/waitForNextStep", 15))
    if perMethod >= 1:
        limits.append(perMethod)
    return max(0, min(limits))


def log_transition(change: Change) -> None:
    """Every stored status change of a calibration, step or worker, in the service log."""
    gLogger.info("Calibration transition", f"{change.ids}: {change.old} -> {change.new}")


class CalibrationHandler(RequestHandler):
    """Calibration service: calibrations for users, step parameters and results for workers."""

    service: CalibrationService | None = None

    @classmethod
    def initializeHandler(cls, serviceInfoDict):
        observe(log_transition)
        try:
            db = CalibrationDB()
        except Exception as exc:  # noqa: BLE001 - the service must not start without its DB
            return S_ERROR(f"cannot open CalibrationDB: {exc}")
        try:
            limits = ServiceLimits.from_options(cls.srv_getCSOption)
        except LimitError as exc:
            return S_ERROR(f"Calibration service limits: {exc}")
        polling = {
            "minimum": cls.srv_getCSOption("WorkerPollMinimum", 1.0),
            "maximum": cls.srv_getCSOption("WorkerPollMaximum", 120.0),
            "patience": cls.srv_getCSOption("WorkerPatience", 3600.0),
        }
        if cls.service is not None:
            for thread in (cls.service.closer, cls.service.watch):
                if thread is not None:
                    thread.stop()
        capacity = hold_capacity(cls.srv_getCSOption)
        policy = ClosePolicy(claimTimeout=cls.srv_getCSOption("CloseClaimTimeout", 300.0),
                             maxAttempts=cls.srv_getCSOption("MaxCloseAttempts", 3))
        watch = StepWatch(db.getProgress, capacity, answer=functools.partial(woken_answers, db))
        closerLog = gLogger.getSubLogger("StepCloser")

        def closed(line: str) -> None:
            closerLog.notice(line)
            watch.look()

        closer = StepCloser(db, policy, cls.srv_getCSOption("CloserPollingTime", 5.0), closed, process=True)
        cls.service = CalibrationService(
            db,
            limits,
            polling=polling,
            adminProperties=frozenset(cls.srv_getCSOption("AdminProperties", ["JobAdministrator"])),
            localBackendUsers=frozenset(cls.srv_getCSOption("LocalBackendUsers", [])),
            pollPolicy=PollPolicy(minimum=polling["minimum"], maximum=polling["maximum"],
                                  rate=cls.srv_getCSOption("WorkerPollRate", 20.0)),
            closer=closer.start(),
            watch=watch.start(),
            holdSeconds=min(cls.srv_getCSOption("WorkerHoldTime", 240.0), MAX_HOLD_TIME),
        )
        gLogger.notice("Calibration service", f"holds up to {capacity} waiting workers' calls")
        return S_OK()

    def caller(self) -> Caller:
        """The caller as DIRAC authenticated them, with their grid user folder (from their VO)."""
        credentials = self.getRemoteCredentials()
        username, group = credentials.get("username", "anonymous"), credentials.get("group", "")
        vo = getVOForGroup(group) if group else ""
        userHome = user_home(vo, Operations(vo=vo).getValue("LFNUserPrefix", "user"), username) if vo else None
        return self.service.caller(credentials, userHome)

    # ------------------------------------------------------------------ users
    types_createCalibration = list(RPC_TYPES["createCalibration"])
    auth_createCalibration = USER_AUTH

    def export_createCalibration(self, *args):
        """Create a calibration from resolved settings and the input files (steering, Pandora settings)."""
        return self.service.createCalibration(self.caller(), *args)

    types_getCalibrationStatus = list(RPC_TYPES["getCalibrationStatus"])
    auth_getCalibrationStatus = USER_AUTH

    def export_getCalibrationStatus(self, *args):
        """Status of the given calibrations, or of the caller's newest when the list is empty."""
        return self.service.getCalibrationStatus(self.caller(), *args)

    types_getCalibrationHistory = list(RPC_TYPES["getCalibrationHistory"])
    auth_getCalibrationHistory = USER_AUTH

    def export_getCalibrationHistory(self, *args):
        """Every step of a calibration: constants used, estimator outputs, outcome."""
        return self.service.getCalibrationHistory(self.caller(), *args)

    types_killCalibration = list(RPC_TYPES["killCalibration"])
    auth_killCalibration = USER_AUTH

    def export_killCalibration(self, *args):
        """Stop a calibration (its owner, or an administrator)."""
        return self.service.killCalibration(self.caller(), *args)

    types_registerWorkers = list(RPC_TYPES["registerWorkers"])
    auth_registerWorkers = USER_AUTH

    def export_registerWorkers(self, *args):
        """Record which job runs each worker ({workerID: jobID}), once, after submission."""
        return self.service.registerWorkers(self.caller(), *args)

    # ------------------------------------------------------------------ workers
    types_getWorkerSetup = list(RPC_TYPES["getWorkerSetup"])
    auth_getWorkerSetup = USER_AUTH

    def export_getWorkerSetup(self, *args):
        """What a worker needs once: its event slices, the settings and input files."""
        return self.service.getWorkerSetup(self.caller(), *args)

    types_getStepParameters = list(RPC_TYPES["getStepParameters"])
    auth_getStepParameters = USER_AUTH

    def export_getStepParameters(self, *args):
        """Run step N with these constants, wait, or stop; lastStep 0 means none done yet."""
        return self.service.getStepParameters(self.caller(), *args)

    types_waitForNextStep = list(RPC_TYPES["waitForNextStep"])
    auth_waitForNextStep = USER_AUTH

    def export_waitForNextStep(self, *args):
        """getStepParameters, but a wait is held until the calibration moves on or WorkerHoldTime passed."""
        return self.service.waitForNextStep(self.caller(), *args)

    types_submitResult = list(RPC_TYPES["submitResult"])
    auth_submitResult = USER_AUTH

    def export_submitResult(self, *args):
        """A worker's histogram summary for one step; committed before it is acknowledged."""
        return self.service.submitResult(self.caller(), *args)

    types_getCalibrationFile = list(RPC_TYPES["getCalibrationFile"])
    auth_getCalibrationFile = USER_AUTH

    def export_getCalibrationFile(self, *args):
        """A file stored with the calibration (e.g. a merged photon likelihood), as text."""
        return self.service.getCalibrationFile(self.caller(), *args)

    types_getCalibrationResults = list(RPC_TYPES["getCalibrationResults"])
    auth_getCalibrationResults = USER_AUTH

    def export_getCalibrationResults(self, *args):
        """Final constants with uncertainties and the names of the result files of a finished calibration."""
        return self.service.getCalibrationResults(self.caller(), *args)

    # ------------------------------------------------------------------ agent (TrustedHost)
    types_closeReadySteps = list(RPC_TYPES["closeReadySteps"])
    auth_closeReadySteps = AGENT_AUTH

    def export_closeReadySteps(self, *args):
        """Safety net: close every open step that has enough results."""
        return self.service.closeReadySteps(self.caller(), *args)

    types_getAgentWork = list(RPC_TYPES["getAgentWork"])
    auth_getAgentWork = AGENT_AUTH

    def export_getAgentWork(self, *args):
        """Running calibrations and ended ones not yet cleaned up, with their workers."""
        return self.service.getAgentWork(self.caller(), *args)

    types_setWorkerStates = list(RPC_TYPES["setWorkerStates"])
    auth_setWorkerStates = AGENT_AUTH

    def export_setWorkerStates(self, *args):
        """The agent's verdicts on workers: {workerID: {JobID, Status, Resubmissions, LastSeen}}."""
        return self.service.setWorkerStates(self.caller(), *args)

    types_failCalibration = list(RPC_TYPES["failCalibration"])
    auth_failCalibration = AGENT_AUTH

    def export_failCalibration(self, *args):
        """End a running calibration as failed, with the reason."""
        return self.service.failCalibration(self.caller(), *args)

    types_finalizeCalibration = list(RPC_TYPES["finalizeCalibration"])
    auth_finalizeCalibration = AGENT_AUTH

    def export_finalizeCalibration(self, *args):
        """Make sure a finished calibration has its result files."""
        return self.service.finalizeCalibration(self.caller(), *args)

    types_markDelivered = list(RPC_TYPES["markDelivered"])
    auth_markDelivered = AGENT_AUTH

    def export_markDelivered(self, *args):
        """Record that the results were copied to the user's outputPath."""
        return self.service.markDelivered(self.caller(), *args)

    types_claimNotification = list(RPC_TYPES["claimNotification"])
    auth_claimNotification = AGENT_AUTH

    def export_claimNotification(self, *args):
        """Record that the owner is being mailed about the end; True only the first time."""
        return self.service.claimNotification(self.caller(), *args)

    types_releaseNotification = list(RPC_TYPES["releaseNotification"])
    auth_releaseNotification = AGENT_AUTH

    def export_releaseNotification(self, *args):
        """The end-of-calibration mail could not be sent: try again next cycle."""
        return self.service.releaseNotification(self.caller(), *args)

    types_removeCalibrationData = list(RPC_TYPES["removeCalibrationData"])
    auth_removeCalibrationData = AGENT_AUTH

    def export_removeCalibrationData(self, *args):
        """Delete the working data of an ended calibration (history and results stay)."""
        return self.service.removeCalibrationData(self.caller(), *args)
