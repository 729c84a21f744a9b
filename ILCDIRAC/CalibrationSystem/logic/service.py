"""The Calibration service as one object: one method per RPC, used by the DISET handler and by
the in-process driver of the tests and benchmarks.

Each RPC method takes the ``Caller`` (whom DIRAC authenticated; the agent's methods, which the
handler restricts to TrustedHost, do not look at it) and the RPC's arguments. It refuses a wrong
number or type of arguments (DIRAC checks the types it is told, ``RPC_TYPES``, but lets extra
arguments through), runs the logic and maps the outcome to DIRAC's result structure: the value
as S_OK; a ``CalibrationError`` as a refusal whose message is the logic's own; anything else as
an internal error whose details (SQL, paths) go to the service log only, under an error ID.
Keeping this in one place means the handler is a thin transport shell and the in-process driver
answers exactly what the real service answers.
"""
from __future__ import annotations

import errno
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

from DIRAC import S_ERROR, S_OK, gLogger

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic
from ILCDIRAC.CalibrationSystem.logic import supervision
from ILCDIRAC.CalibrationSystem.logic.closer import StepCloser
from ILCDIRAC.CalibrationSystem.logic.polling import DEFAULT_POLLING, PollPolicy
from ILCDIRAC.CalibrationSystem.logic.step_watch import Progress, StepWatch
from ILCDIRAC.CalibrationSystem.Utilities.limits import ServiceLimits
from ILCDIRAC.CalibrationSystem.Utilities.validation import NO_LIMITS, CalibrationError, Caller, new_error_id
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import WorkerAction, plain

#: The argument types of every RPC, by name: the handler declares them to DIRAC as ``types_``.
RPC_TYPES: dict[str, tuple[type, ...]] = {}
#: The RPCs only the agent calls (TrustedHost); all others are for authenticated users and workers.
AGENT_RPCS: set[str] = set()


def refusal(message: str) -> dict[str, Any]:
    """S_ERROR for a request that will never succeed as sent: Errno EINVAL tells workers not to
    retry, while the message stays exactly the logic's (DIRAC would prefix the errno text)."""
    result = S_ERROR(message, callStack=[])
    result["Errno"] = errno.EINVAL
    return result


def _rpc(*types: type, agent: bool = False) -> Callable:
    """Declare a method an RPC with these argument types and give it the common answer mapping."""

    def declare(method: Callable) -> Callable:
        name = method.__name__
        RPC_TYPES[name] = types
        if agent:
            AGENT_RPCS.add(name)

        @functools.wraps(method)
        def answer(self: CalibrationService, caller: Caller, *args: Any) -> dict[str, Any]:
            if len(args) != len(types):
                return refusal(f"{name} takes {len(types)} arguments, not {len(args)}")
            for index, (value, expected) in enumerate(zip(args, types, strict=True)):
                if not isinstance(value, expected):
                    return refusal(f"{name}: argument {index} must be a {expected.__name__}, "
                                   f"not a {type(value).__name__}")
            try:
                return S_OK(plain(method(self, caller, *args)))
            except CalibrationError as exc:
                return refusal(str(exc))
            except Exception as exc:  # noqa: BLE001 - the details (SQL, paths) are for the log only
                errorID = new_error_id()
                gLogger.exception("Calibration service: internal error", f"{errorID} in {name}", lException=exc)
                return S_ERROR(f"internal error {errorID} in {name}: the details are in the service log")

        return answer

    return declare


class CalibrationService:
    """The service's RPCs over one CalibrationDB, with the service's configuration."""

    def __init__(
        self,
        db: CalibrationDB,
        limits: ServiceLimits = NO_LIMITS,
        polling: Mapping[str, float] | None = None,
        adminProperties: frozenset[str] = frozenset(),
        localBackendUsers: frozenset[str] = frozenset(),
        pollPolicy: PollPolicy = DEFAULT_POLLING,
        closer: StepCloser | None = None,
        watch: StepWatch | None = None,
        holdSeconds: float = 0.0,
    ):
        """``closer``: the service's step-closer thread; without one (the in-process driver) a
        step is closed right after the answer to the report that completed it is made.
        ``watch``: where ``waitForNextStep`` holds a waiting worker's call, up to
        ``holdSeconds``; without one it answers at once, as ``getStepParameters``."""
        self.db = db
        self.watch, self.holdSeconds = watch, holdSeconds
        self.limits = limits
        self.polling = dict(polling or {})
        self.pollPolicy = pollPolicy
        self.closer = closer
        self.adminProperties = frozenset(adminProperties)
        self.localBackendUsers = frozenset(localBackendUsers)

    def caller(self, credentials: Mapping[str, Any], userHome: str | None) -> Caller:
        """The Caller for DIRAC's credentials of a request: administrators are the
        ``adminProperties`` holders and trusted hosts (the agent); ``userHome`` is their grid
        user folder, which the transport looks up in the CS (None without a VO)."""
        properties = frozenset(credentials.get("properties", []))
        username = credentials.get("username", "anonymous")
        return Caller(
            dn=credentials.get("DN", ""),
            username=username,
            group=credentials.get("group", ""),
            properties=properties,
            isAdmin=bool(properties & (self.adminProperties | {"TrustedHost"})),
            userHome=userHome,
            localBackend=username in self.localBackendUsers,
        )

    def _moved_on(self) -> None:
        """A calibration moved on (killed, failed, a step closed here): held calls learn it now."""
        if self.watch is not None:
            self.watch.look()

    # ------------------------------------------------------------------ users
    @_rpc(dict, dict)
    def createCalibration(self, caller: Caller, settings: Any, inputFiles: Any) -> int:
        return logic.create_calibration(self.db, caller, settings, inputFiles, self.limits)

    @_rpc(list)
    def getCalibrationStatus(self, caller: Caller, calibrationIDs: Any) -> list[dict[str, Any]]:
        return logic.calibration_status(self.db, caller, calibrationIDs, self.limits)

    @_rpc(int)
    def getCalibrationHistory(self, caller: Caller, calibrationID: int) -> list[dict[str, Any]]:
        return logic.calibration_history(self.db, caller, calibrationID)

    @_rpc(int)
    def killCalibration(self, caller: Caller, calibrationID: int) -> bool:
        killed = logic.kill_calibration(self.db, caller, calibrationID)
        self._moved_on()
        return killed

    @_rpc(int, dict)
    def registerWorkers(self, caller: Caller, calibrationID: int, jobIDs: Any) -> int:
        return logic.register_workers(self.db, caller, calibrationID, jobIDs, self.limits)

    # ------------------------------------------------------------------ workers
    @_rpc(int, int)
    def getWorkerSetup(self, caller: Caller, calibrationID: int, workerID: int) -> dict[str, Any]:
        return logic.worker_setup(self.db, caller, calibrationID, workerID, self.polling)

    @_rpc(int, int, int)
    def getStepParameters(self, caller: Caller, calibrationID: int, workerID: int, lastStep: int) -> dict[str, Any]:
        return logic.step_parameters(self.db, caller, calibrationID, workerID, lastStep, self.pollPolicy)

    @_rpc(int, int, int)
    def waitForNextStep(self, caller: Caller, calibrationID: int, workerID: int, lastStep: int) -> dict[str, Any]:
        """``getStepParameters``, but a ``wait`` answer is held until the calibration moves on
        (then the new step's parameters, or its end) or ``holdSeconds`` passed (then ``wait``
        with ``retryAfter`` 0: ask again at once). When the service holds as many calls as it
        may, the answer is the plain poll's ``wait``, with its ``retryAfter``."""
        answer = logic.step_parameters(self.db, caller, calibrationID, workerID, lastStep, self.pollPolicy)
        if self.watch is None or self.holdSeconds <= 0:
            return answer
        deadline = time.monotonic() + self.holdSeconds
        while answer["action"] == WorkerAction.WAIT:
            woken = self.watch.hold(calibrationID, Progress(answer["step"], ended=False),
                                    deadline - time.monotonic(), workerID)
            if woken is None:
                # held for the whole time: ask again at once; not held (full, stopping): as a poll
                return {**answer, "retryAfter": 0.0} if time.monotonic() >= deadline else answer
            if isinstance(woken, CalibrationError):
                raise woken
            answer = woken if isinstance(woken, dict) else logic.step_parameters(
                self.db, caller, calibrationID, workerID, lastStep, self.pollPolicy)
        return answer

    @_rpc(int, int, int, dict)
    def submitResult(self, caller: Caller, calibrationID: int, step: int, workerID: int, report: Any) -> dict[str, Any]:
        answer = logic.submit_result(self.db, caller, calibrationID, step, workerID, report, self.limits)
        if answer["ready"]:
            if self.closer is not None:
                self.closer.wake()
            else:
                logic.close_step(self.db, calibrationID, step)
        return answer

    @_rpc(int, str)
    def getCalibrationFile(self, caller: Caller, calibrationID: int, name: str) -> dict[str, str]:
        return logic.calibration_file(self.db, caller, calibrationID, name)

    @_rpc(int)
    def getCalibrationResults(self, caller: Caller, calibrationID: int) -> dict[str, Any]:
        return logic.calibration_results(self.db, caller, calibrationID)

    # ------------------------------------------------------------------ agent (TrustedHost)
    @_rpc(agent=True)
    def closeReadySteps(self, caller: Caller) -> list[dict[str, Any]]:
        closed = self.closer.close_ready() if self.closer is not None else logic.close_ready_steps(self.db)
        if closed:
            self._moved_on()
        return closed

    @_rpc(agent=True)
    def getAgentWork(self, caller: Caller) -> list[dict[str, Any]]:
        return supervision.agent_work(self.db)

    @_rpc(int, dict, agent=True)
    def setWorkerStates(self, caller: Caller, calibrationID: int, updates: Any) -> int:
        return supervision.set_worker_states(self.db, calibrationID, updates, self.limits)

    @_rpc(int, str, agent=True)
    def failCalibration(self, caller: Caller, calibrationID: int, reason: str) -> bool:
        failed = supervision.fail_calibration(self.db, calibrationID, reason, self.limits)
        self._moved_on()
        return failed

    @_rpc(int, agent=True)
    def finalizeCalibration(self, caller: Caller, calibrationID: int) -> list[str]:
        return logic.finalize_calibration(self.db, calibrationID)

    @_rpc(int, str, agent=True)
    def markDelivered(self, caller: Caller, calibrationID: int, report: str) -> None:
        return supervision.mark_delivered(self.db, calibrationID, report, self.limits)

    @_rpc(int, agent=True)
    def claimNotification(self, caller: Caller, calibrationID: int) -> bool:
        return supervision.claim_notification(self.db, calibrationID)

    @_rpc(int, agent=True)
    def releaseNotification(self, caller: Caller, calibrationID: int) -> None:
        return supervision.release_notification(self.db, calibrationID)

    @_rpc(int, agent=True)
    def removeCalibrationData(self, caller: Caller, calibrationID: int) -> None:
        return supervision.remove_calibration_data(self.db, calibrationID)
