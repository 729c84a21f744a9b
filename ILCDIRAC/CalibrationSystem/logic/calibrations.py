"""What the Calibration service does, as plain functions over a CalibrationDB.

The DISET handler only authenticates, checks argument types and calls these; the physics lives
in ``Utilities`` (phases, procedure), the persistence in ``DB``. Every function either returns a
JSON-safe value or raises ``CalibrationError`` with a message meant for the caller, leaving the
stored state unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from DIRAC import gLogger

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import (
    CLAIM_TIMEOUT,
    CalibrationDB,
    CalibrationDBError,
    StepClose,
    closer_host,
    now,
    unpack,
)
from ILCDIRAC.CalibrationSystem.logic.polling import DEFAULT_POLLING, PollPolicy, StepProgress, retry_after
from ILCDIRAC.CalibrationSystem.logic.progress import progress
from ILCDIRAC.CalibrationSystem.logic.results import (
    Timing,
    exceeding_accuracy,
    final_uncertainties,
    history,
    result_files,
)
from ILCDIRAC.CalibrationSystem.logic.uncertainties import step_uncertainties
from ILCDIRAC.CalibrationSystem.Utilities.lifecycle import IllegalTransition
from ILCDIRAC.CalibrationSystem.Utilities.limits import LimitError, ServiceLimits, check_argument, payload_size, shown
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.phases.photon_training import MERGED_LIKELIHOOD
from ILCDIRAC.CalibrationSystem.Utilities.procedure import ProcedureState, advance, start
from ILCDIRAC.CalibrationSystem.Utilities.schema import is_int
from ILCDIRAC.CalibrationSystem.Utilities.settings import SAMPLES
from ILCDIRAC.CalibrationSystem.Utilities.slicing import worker_slice
from ILCDIRAC.CalibrationSystem.Utilities.stored_files import (
    CONSTANTS_FILE,
    MAX_FILE_NAME,
    RESULT_PREFIX,
    encode_file,
    is_input_file,
)
from ILCDIRAC.CalibrationSystem.Utilities.strategies import strategy_named
from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary, SummaryError
from ILCDIRAC.CalibrationSystem.Utilities.validation import (
    NO_LIMITS,
    CalibrationError,
    Caller,
    new_error_id,
    results_needed,
    validate_calibration,
)
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import (
    END_ACTION,
    STOPPED_WORKER,
    CalibrationStatus,
    PhaseKey,
    ReportVerdict,
    StepStatus,
    WorkerAction,
    WorkerStatus,
)

RUNNING, FINISHED, KILLED, FAILED = (
    CalibrationStatus.RUNNING, CalibrationStatus.FINISHED, CalibrationStatus.KILLED, CalibrationStatus.FAILED)
#: Job IDs as each backend makes them: ``local:<pid>`` (a Linux PID) and DIRAC's job IDs.
JOB_ID_FORMATS = {"local": re.compile(r"local:[1-9][0-9]{0,6}"), "dirac": re.compile(r"[1-9][0-9]{0,9}")}


# ------------------------------------------------------------------------------------ creation
def create_calibration(
    db: CalibrationDB, caller: Caller, settingsDict: Any, inputFiles: Any, limits: ServiceLimits = NO_LIMITS
) -> int:
    """Validate settings and input files completely against the limits and the caller's rights,
    then store the calibration and its first step."""
    _bounded(settingsDict, limits, "the settings")
    settings, resolved, files = validate_calibration(settingsDict, inputFiles, limits, caller)
    sequence = [f"{stage}.{phase}" for stage, phase in settings.phases()]
    state = start(sequence, resolved["startingConstants"], resolved["strategy"], resolved["maxIterationsPerPhase"])
    assert state.current is not None, "a valid sequence has a first phase"
    stage, phase = PhaseKey.parse(state.current)
    nWorkers = resolved["numberOfJobs"]
    try:
        return db.insertCalibration(
            ownerDN=caller.dn,
            owner=caller.username,
            ownerGroup=caller.group,
            settings=resolved,
            state=state.to_dict(),
            stage=stage,
            phase=phase,
            phases=state.active,
            constants=state.constants,
            numberOfWorkers=nWorkers,
            resultsNeeded=results_needed(resolved["fractionOfFinishedJobsNeededToStartNextStep"], nWorkers),
            backend=resolved["backend"],
            inputFiles={name: text.encode() for name, text in files.items()},
            maxRunning=limits.maxRunningCalibrations,
        )
    except CalibrationDBError as exc:
        raise CalibrationError(f"{exc} ({limits.name('maxRunningCalibrations')}): wait for one to end or kill one"
                               ) from None


def _bounded(value: Any, limits: ServiceLimits, what: str) -> None:
    try:
        check_argument(value, limits, what)
    except LimitError as exc:
        raise CalibrationError(str(exc)) from None


# ------------------------------------------------------------------------------------ access
def _owned(db: CalibrationDB, caller: Caller, calibrationID: int, *, full: bool = False, admin: bool = True
           ) -> dict[str, Any]:
    """The calibration row (with Settings and State if ``full``) if the caller owns it, or, where
    ``admin`` (seeing and killing), is an administrator; the same error otherwise, so other users
    cannot even learn which IDs exist. Feeding a calibration (its workers' calls) is its owner's only."""
    checked_id(calibrationID)
    try:
        calibration = db.getCalibration(calibrationID, full=full)
    except CalibrationDBError:
        calibration = None
    if calibration is None or not _may_see(caller, calibration, admin):
        raise CalibrationError(f"calibration {calibrationID} does not exist or does not belong to {caller.username}")
    return calibration


def checked_id(calibrationID: Any) -> int:
    """A calibration ID as the database stores them (a positive 32-bit integer), or CalibrationError."""
    if not is_int(calibrationID) or not 0 < calibrationID < 2**31:
        raise CalibrationError(f"calibration IDs are integers from 1 to {2**31 - 1}, not {shown(calibrationID)}")
    return calibrationID


def _may_see(caller: Caller, calibration: Mapping[str, Any], admin: bool = True) -> bool:
    return calibration["Owner"] == caller.username or (admin and caller.isAdmin)


def calibration_status(
    db: CalibrationDB, caller: Caller, calibrationIDs: Any = (), limits: ServiceLimits = NO_LIMITS
) -> list[dict[str, Any]]:
    """The given calibrations (in the order asked, repeats once, each with every worker's state),
    or the caller's newest ``MaxListedCalibrations`` (with worker counts), with step progress."""
    if not isinstance(calibrationIDs, (list, tuple)):
        raise CalibrationError("calibration IDs must be a list of integers")
    if len(calibrationIDs) > limits.maxListLength:
        raise CalibrationError(f"{len(calibrationIDs)} calibration IDs are more than {limits.name('maxListLength')}")
    wanted = list(dict.fromkeys(checked_id(i) for i in calibrationIDs))
    if len(wanted) > limits.maxStatusIDs:
        raise CalibrationError(f"{len(wanted)} distinct calibration IDs are more than {limits.name('maxStatusIDs')}")
    if wanted:
        found = {row["CalibrationID"]: row for row in db.listCalibrations(calibrationIDs=wanted)}
        missing = next((i for i in wanted if i not in found or not _may_see(caller, found[i])), None)
        if missing is not None:
            raise CalibrationError(f"calibration {missing} does not exist or does not belong to {caller.username}")
        rows = [found[i] for i in wanted]
    else:
        rows = db.listCalibrations(owner=caller.username, limit=limits.maxListedCalibrations)
    ids = [r["CalibrationID"] for r in rows]
    counts = db.workerCounts(ids)
    steps = db.getStepsAt([(r["CalibrationID"], r["Step"]) for r in rows])
    ended = db.getStates([r["CalibrationID"] for r in rows if r["Status"] != RUNNING])
    report = []
    for row in rows:
        calibrationID = row["CalibrationID"]
        step = steps[(calibrationID, row["Step"])]
        # a running calibration shows the constants its current step runs with, an ended one the
        # constants it ended with (after the last step's update)
        constants = step["Constants"] if row["Status"] == RUNNING else ended[calibrationID]["constants"]
        entry = {
            "calibrationID": calibrationID,
            "owner": row["Owner"],
            "ownerGroup": row["OwnerGroup"],
            "status": row["Status"],
            "reason": row["Reason"],
            "stage": row["Stage"],
            "phase": row["Phase"],
            "step": row["Step"],
            "phases": step["Phases"],
            "resultsThisStep": step["NResults"],
            "resultsNeeded": row["ResultsNeeded"],
            "numberOfWorkers": row["NumberOfWorkers"],
            "workers": counts.get(calibrationID, {}),
            "backend": row["Backend"],
            "created": row["CreationTime"].isoformat(),
            "lastUpdate": row["LastUpdate"].isoformat(),
            "ended": row["EndTime"].isoformat() if row["EndTime"] else None,
            "constants": constants,
        }
        if wanted:
            entry["workerList"] = [
                {
                    "workerID": w["WorkerID"],
                    "jobID": w["JobID"],
                    "status": w["Status"],
                    "applicationStatus": w["ApplicationStatus"],
                    "resubmissions": w["Resubmissions"],
                    "lastStep": w["LastStep"],
                    "lastSeen": w["LastSeen"].isoformat() if w["LastSeen"] else None,
                }
                for w in db.getWorkers(calibrationID)
            ]
            entry["uncertainties"], entry["exceedingAccuracy"] = _precision(db, calibrationID, constants)
            entry["progress"] = _progress(db, calibrationID)
        report.append(entry)
    return report


def _precision(db: CalibrationDB, calibrationID: int, constants: Mapping[str, Any]) -> tuple[dict, dict]:
    """The uncertainties of the constants shown (from the steps that set them), and which of them
    exceed the accuracy asked of their phase."""
    uncertainties = {
        name: u for name, u in final_uncertainties(db.getSteps(calibrationID)).items() if name in constants
    }
    return uncertainties, exceeding_accuracy(constants, uncertainties, db.getCalibration(calibrationID)["Settings"])


def _progress(db: CalibrationDB, calibrationID: int) -> dict[str, Any]:
    """The live view's readings, step durations and time estimate, and the time since creation."""
    calibration, moment = db.getCalibration(calibrationID), now()
    report = progress(db.getSteps(calibrationID), calibration["Settings"], calibration["State"], moment)
    report["elapsedSeconds"] = ((calibration["EndTime"] or moment) - calibration["CreationTime"]).total_seconds()
    return report


def calibration_history(db: CalibrationDB, caller: Caller, calibrationID: int) -> list[dict[str, Any]]:
    """Every step with the constants it ran with and what its estimators found."""
    _owned(db, caller, calibrationID)
    return history(db.getSteps(calibrationID))


def kill_calibration(db: CalibrationDB, caller: Caller, calibrationID: int) -> bool:
    """Stop a running calibration; its workers learn it at their next poll."""
    calibration = _owned(db, caller, calibrationID)
    if calibration["Status"] != RUNNING:
        raise CalibrationError(f"calibration {calibrationID} is already {calibration['Status']}")
    return db.setCalibrationStatus(calibrationID, KILLED, f"killed by {caller.username}")


# ------------------------------------------------------------------------------------ workers
def _worker(calibration: Mapping[str, Any], workerID: Any) -> int:
    if not is_int(workerID) or not 0 <= workerID < calibration["NumberOfWorkers"]:
        raise CalibrationError(
            f"worker ID {shown(workerID)} is not one of the {calibration['NumberOfWorkers']} workers of "
            f"calibration {calibration['CalibrationID']}"
        )
    return workerID


def worker_setup(
    db: CalibrationDB, caller: Caller, calibrationID: int, workerID: int, polling: Mapping[str, float]
) -> dict[str, Any]:
    """Everything a worker needs once: its event slices, the settings, the steering and Pandora
    files, and how it should poll (the service's WorkerPoll* options)."""
    calibration = _owned(db, caller, calibrationID, full=True, admin=False)
    workerID = _worker(calibration, workerID)
    if calibration["Status"] != RUNNING:
        raise CalibrationError(f"calibration {calibrationID} is {calibration['Status']}: no work for a worker")
    settings = calibration["Settings"]
    nWorkers = calibration["NumberOfWorkers"]
    samples = {}
    for sample in SAMPLES:
        fileList = settings.get(f"{sample}Files") or []
        if fileList:
            samples[sample] = worker_slice(fileList, settings[f"{sample}EventsPerFile"], nWorkers, workerID).to_dict()
    return {
        "calibrationID": calibrationID,
        "workerID": workerID,
        "settings": settings,
        "samples": samples,
        "files": {
            name: db.getFile(calibrationID, name).decode()
            for name in sorted(db.listFiles(calibrationID))
            if is_input_file(name)
        },
        "polling": dict(polling),
    }


def calibration_file(db: CalibrationDB, caller: Caller, calibrationID: int, name: Any) -> dict[str, str]:
    """A stored file of the calibration (input files, merged likelihoods, results): its text, or
    base64 for binary files such as the convergence plot."""
    _owned(db, caller, calibrationID)
    if not isinstance(name, str) or len(name) > MAX_FILE_NAME or name not in db.listFiles(calibrationID):
        raise CalibrationError(f"calibration {calibrationID} has no file {shown(name)}")
    return encode_file(db.getFile(calibrationID, name))


def register_workers(
    db: CalibrationDB, caller: Caller, calibrationID: int, jobIDs: Any, limits: ServiceLimits = NO_LIMITS
) -> int:
    """Record the job each worker runs as ({workerID: jobID}), once, right after the submitting
    client started them: by the owner only, for every worker at once, in the backend's own job-ID
    format, while the calibration runs and none of its workers has a job yet. Afterwards only
    the agent (TrustedHost) changes job IDs, when it resubmits."""
    calibration = _owned(db, caller, calibrationID, admin=False)
    _bounded(jobIDs, limits, "the job IDs")
    if not isinstance(jobIDs, Mapping) or not all(isinstance(j, str) for j in jobIDs.values()):
        raise CalibrationError("job IDs must be a dict of worker ID -> job ID (a string)")
    if calibration["Status"] != RUNNING:
        raise CalibrationError(f"calibration {calibrationID} is {calibration['Status']}: workers are registered "
                               f"only while it starts")
    parsed: dict[int, str] = {}
    for key, jobID in jobIDs.items():
        if not re.fullmatch(r"[0-9]{1,10}", key):
            raise CalibrationError(f"worker ID {shown(key)} is not an integer")
        parsed[_worker(calibration, int(key))] = jobID
    backend = calibration["Backend"]
    bad = next((j for j in parsed.values() if not JOB_ID_FORMATS[backend].fullmatch(j)), None)
    if bad is not None:
        raise CalibrationError(f"job ID {shown(bad)} is not a job ID of the {backend} backend")
    if len(set(parsed.values())) != len(parsed):
        raise CalibrationError("each worker needs a job of its own: the job IDs repeat")
    if len(parsed) != calibration["NumberOfWorkers"]:
        raise CalibrationError(f"calibration {calibrationID} has {calibration['NumberOfWorkers']} workers: register "
                               f"the job of each of them at once, not {len(parsed)}")
    if not db.registerJobs(calibrationID, parsed):
        raise CalibrationError(f"the workers of calibration {calibrationID} are registered already: registration "
                               f"happens once, by the client that submitted them")
    return len(parsed)


def application_status(
    calibrationID: int, action: WorkerAction, step: int | None = None, key: str | None = None
) -> str:
    """The ApplicationStatus wording of the original talk, shown on the DIRAC job monitor."""
    if action == WorkerAction.RUN and key is not None:
        stage, phase = PhaseKey.parse(key)
        return f"Running: stage: {stage}; phase: {phase}; step: {step}"
    if action == WorkerAction.WAIT:
        return f"PandoraCalib_{calibrationID}: step {step} is finished. Waiting for other jobs"
    if action == WorkerAction.FINISHED:
        return f"PandoraCalib_{calibrationID}: Calibration is finished."
    return f"PandoraCalib_{calibrationID}: Calibration is {action}."


def step_parameters(
    db: CalibrationDB, caller: Caller, calibrationID: int, workerID: int, lastStep: int | None,
    polling: PollPolicy = DEFAULT_POLLING,
) -> dict[str, Any]:
    """What a worker does next: run step N with these constants, wait (``retryAfter``: when to
    ask again, from the step's progress), or stop (``lastStep``: the last step it reported, 0 or
    None before its first). Primary-key reads and one short write of the worker's row."""
    calibration = _owned(db, caller, calibrationID, admin=False)
    workerID = _worker(calibration, workerID)
    if lastStep is not None and (not is_int(lastStep) or lastStep < 0):
        raise CalibrationError(f"last step must be a non-negative integer or None, not {shown(lastStep)}")
    if lastStep is not None and lastStep > calibration["Step"]:
        raise CalibrationError(f"last step {shown(lastStep)} is beyond calibration {calibrationID}'s current step "
                               f"{calibration['Step']}")
    if calibration["Status"] != RUNNING:
        return _told(db, calibration, workerID)
    current = calibration["Step"]
    worker = db.getWorker(calibrationID, workerID)
    done = max(s for s in (lastStep, worker["LastStep"], 0) if s is not None)
    if done >= current:
        message = application_status(calibrationID, WorkerAction.WAIT, done)
        wasWaiting = worker["Status"] == WorkerStatus.WAITING
        _poll(db, calibrationID, workerID, WorkerStatus.WAITING, message)
        row = db.getStepProgress(calibrationID, current)
        progress = StepProgress(row["NResults"], calibration["ResultsNeeded"],
                                (now() - row["OpenTime"]).total_seconds())
        return {"action": WorkerAction.WAIT, "step": current, "applicationStatus": message,
                "retryAfter": retry_after(progress, polling, workerID, wasWaiting)}
    return _told(db, calibration, workerID)


def _answer(db: CalibrationDB, calibration: Mapping[str, Any]) -> tuple[dict[str, Any], WorkerStatus, str]:
    """What a worker with nothing left to wait for is told: the calibration's end, or to run
    its current step (phases, constants, inputs); with the status and ApplicationStatus its row
    records for that."""
    calibrationID, status = calibration["CalibrationID"], calibration["Status"]
    if status != RUNNING:
        action = END_ACTION[status]
        return ({"action": action, "reason": calibration["Reason"]}, STOPPED_WORKER[action],
                application_status(calibrationID, action))
    current = calibration["Step"]
    step = db.getStep(calibrationID, current)
    stage, phase = PhaseKey.parse(step["Phases"][0])
    message = application_status(calibrationID, WorkerAction.RUN, current, step["Phases"][0])
    answer = {"action": WorkerAction.RUN, "step": current, "stage": stage, "phase": phase, "phases": step["Phases"],
              "constants": step["Constants"], "inputs": step["Inputs"], "applicationStatus": message}
    return answer, WorkerStatus.RUNNING, message


def _told(db: CalibrationDB, calibration: Mapping[str, Any], workerID: int) -> dict[str, Any]:
    """``_answer`` for one polling worker, recorded in its row."""
    answer, workerStatus, message = _answer(db, calibration)
    _poll(db, calibration["CalibrationID"], workerID, workerStatus, message)
    return answer


def woken_answers(db: CalibrationDB, calibrationID: int, workerIDs: list[int]) -> dict[int, Any]:
    """The answers of waiting workers whose held ``waitForNextStep`` calls the calibration's
    progress woke (logic.step_watch): the new step's parameters, or its end, computed once for
    all of them with one read of the calibration and its step and one write of all their rows.
    Their ownership and worker IDs were checked when they called; a worker the agent gave up
    meanwhile gets its refusal (a CalibrationError) as its answer."""
    answer, workerStatus, message = _answer(db, db.getCalibration(calibrationID, full=False))
    stamp = now()
    answers: dict[int, Any] = {}
    try:
        db.updateWorkers(calibrationID, {w: {"Status": workerStatus, "ApplicationStatus": message, "LastSeen": stamp}
                                         for w in workerIDs})
        answers = dict.fromkeys(workerIDs, answer)
    except IllegalTransition:
        for workerID in workerIDs:  # some worker was given up meanwhile: one by one
            try:
                _poll(db, calibrationID, workerID, workerStatus, message)
                answers[workerID] = answer
            except CalibrationError as exc:
                answers[workerID] = exc
    return answers


def _poll(db: CalibrationDB, calibrationID: int, workerID: int, status: WorkerStatus, message: str) -> None:
    """Record what a polling worker was told; a worker the agent gave up on (dead) gets no more work."""
    try:
        db.updateWorker(calibrationID, workerID, Status=status, ApplicationStatus=message, LastSeen=now())
    except IllegalTransition as exc:
        raise CalibrationError(f"{exc}: a worker that was given up gets no more work") from None


def submit_result(
    db: CalibrationDB, caller: Caller, calibrationID: int, step: int, workerID: int, payload: Any,
    limits: ServiceLimits = NO_LIMITS,
) -> dict[str, Any]:
    """Validate and store one worker's report (only the owner's workers report) and answer at
    once; ``ready`` tells the caller that this report brought the step to its threshold, so the
    service's closer should close it (never inside this call)."""
    calibration = _owned(db, caller, calibrationID, full=True, admin=False)
    workerID = _worker(calibration, workerID)
    if not is_int(step) or step < 1:
        raise CalibrationError(f"step must be a positive integer, not {shown(step)}")
    if step > calibration["Step"]:
        raise CalibrationError(f"calibration {calibrationID} has not reached step {shown(step)} "
                               f"(current {calibration['Step']})")
    try:
        size = payload_size(payload)
    except LimitError as exc:
        raise CalibrationError(str(exc)) from None
    if size > limits.maxReportSize:
        raise CalibrationError(f"the report has {size} bytes, more than {limits.name('maxReportSize')}")
    stepRow = db.getStep(calibrationID, step)
    if stepRow["Status"] == StepStatus.OPEN:
        _validate_report(payload, stepRow["Phases"], PhaseContext.from_settings(calibration["Settings"]))
    verdict, have, needed = db.addResult(calibrationID, step, workerID, payload)
    ready = verdict == ReportVerdict.ACCEPTED and have >= needed
    # what the worker shows while it waits for the next step (its waitForNextStep is held, so no
    # 'wait' answer may come to say it)
    return {"verdict": verdict, "results": have, "needed": needed, "ready": ready,
            "applicationStatus": application_status(calibrationID, WorkerAction.WAIT, step)}


def _validate_report(payload: Any, phases: list[str], ctx: PhaseContext) -> None:
    if not isinstance(payload, Mapping) or set(payload) != {"phases"} or not isinstance(payload["phases"], Mapping):
        raise CalibrationError("a worker report must be {'phases': {'<stage>.<phase>': summary, ...}}")
    reported = set(payload["phases"])
    if reported != set(phases):
        raise CalibrationError(f"the report covers phases {sorted(reported)}, but the step measures {phases}")
    for key in phases:
        try:
            Summary.from_payload(payload["phases"][key], phase_for(key).spec(ctx))
        except SummaryError as exc:
            raise CalibrationError(f"bad report for phase {key}: {exc}") from None


# ------------------------------------------------------------------------------------ closing
@dataclass(frozen=True)
class ClosePolicy:
    """How steps are closed: a claim older than ``claimTimeout`` seconds is taken over (its
    closer died), and a close that raised ``maxAttempts`` times fails the calibration."""

    claimTimeout: float = CLAIM_TIMEOUT
    maxAttempts: int = 3


#: The service's defaults (ConfigTemplate.cfg).
DEFAULT_CLOSE = ClosePolicy()


class CloseFailed(Exception):
    """One attempt at closing a step raised; the step was handed back for another attempt."""


#: How a close's computation is run: ``compute(decide_packed_close, calibration, step, packed results)``.
Compute = Callable[..., StepClose]


def _in_process(function: Callable[..., StepClose], *args: Any) -> StepClose:
    return function(*args)


def close_step(db: CalibrationDB, calibrationID: int, step: int, policy: ClosePolicy = DEFAULT_CLOSE,
               compute: Compute = _in_process) -> StepClose | None:
    """Close the step once (claimed in the DB, computed without locks, by ``compute``: the
    service runs it in a process of its own); None if it was not claimable (someone else closes
    or closed it) or this attempt failed and will be retried. The step that finishes the
    calibration also produces its deliverables."""

    def decide(calibration, stepRow, stored):
        attempt = stepRow["CloseAttempts"]
        if attempt > policy.maxAttempts:
            return failed_close(calibration, stepRow, f"closing step {stepRow['Step']} failed {attempt - 1} times "
                                f"(last: {stepRow['CloseError'] or 'the closer stopped'})")
        try:
            return compute(decide_packed_close, calibration, stepRow, stored)
        except Exception as exc:  # noqa: BLE001 - a failed close is retried or fails the calibration, never lost
            errorID = new_error_id()
            gLogger.exception("Calibration service: internal error while closing a step",
                              f"{errorID}: calibration {calibrationID} step {stepRow['Step']} "
                              f"(attempt {attempt} of {policy.maxAttempts})", lException=exc)
            reason = f"internal error {errorID} while closing step {stepRow['Step']} (details in the service log)"
            if attempt >= policy.maxAttempts:
                return failed_close(calibration, stepRow, reason)
            raise CloseFailed(reason) from exc

    try:
        decision = db.closeStep(calibrationID, step, decide, claimTimeout=policy.claimTimeout, packed=True)
    except CloseFailed:
        return None
    if decision is not None and decision.status == FINISHED:
        finalize_calibration(db, calibrationID)
    return decision


def finalize_calibration(db: CalibrationDB, calibrationID: int) -> list[str]:
    """Store the result files of a finished calibration if they are not there yet (idempotent:
    the agent calls it again after a service crash between the last close and this)."""
    checked_id(calibrationID)
    try:
        calibration = db.getCalibration(calibrationID, full=True)
    except CalibrationDBError as exc:
        raise CalibrationError(str(exc)) from None
    if calibration["Status"] != FINISHED:
        return []
    present = set(db.listFiles(calibrationID))
    if CONSTANTS_FILE in present:
        return []
    inputs = {name: db.getFile(calibrationID, name).decode() for name in present if is_input_file(name)}
    trained = ProcedureState.from_dict(calibration["State"]).inputs.get(MERGED_LIKELIHOOD)
    likelihood = db.getFile(calibrationID, trained).decode() if trained else None
    resubmissions = {w["WorkerID"]: w["Resubmissions"] for w in db.getWorkers(calibrationID)}
    timing = Timing(db.getResultTimes(calibrationID), resubmissions)
    files = result_files(calibration, db.getSteps(calibrationID), inputs, likelihood, timing)
    for name, content in files.items():
        db.putFile(calibrationID, name, content)
    return sorted(files)


def calibration_results(db: CalibrationDB, caller: Caller, calibrationID: int) -> dict[str, Any]:
    """The final constants with uncertainties and the names of the result files."""
    calibration = _owned(db, caller, calibrationID)
    if calibration["Status"] != FINISHED:
        raise CalibrationError(
            f"calibration {calibrationID} is {calibration['Status']}"
            + (f" ({calibration['Reason']})" if calibration["Reason"] else "")
            + ": results exist once it finished"
        )
    finalize_calibration(db, calibrationID)
    summary = json.loads(db.getFile(calibrationID, CONSTANTS_FILE))
    summary["files"] = sorted(name for name in db.listFiles(calibrationID) if name.startswith(RESULT_PREFIX))
    return summary


def close_ready_steps(db: CalibrationDB, policy: ClosePolicy = DEFAULT_CLOSE, compute: Compute = _in_process
                      ) -> list[dict[str, Any]]:
    """Close every step that has enough results (or whose closer died), each exactly once:
    the service's closer thread and the agent's safety net both call this."""
    release_dead_claims(db)
    closed = []
    for calibrationID, step in db.readySteps(policy.claimTimeout):
        decision = close_step(db, calibrationID, step, policy, compute)
        if decision is not None:
            closed.append({"calibrationID": calibrationID, "step": step, "status": decision.status})
    return closed


def release_dead_claims(db: CalibrationDB) -> list[tuple[int, int]]:
    """Hand back at once the steps whose closer was a process of this host that no longer
    exists (a service killed mid-close and restarted), instead of after ``CloseClaimTimeout``;
    the attempt still counts. Claims of other hosts, or of a live process, wait for the timeout."""
    released, here = [], closer_host()
    for calibrationID, step, claim in db.closingClaims():
        host, _, rest = claim.partition(":")
        pid = rest.partition(":")[0]
        if host == here and pid.isdigit() and not process_exists(int(pid)):
            if db.releaseClaim(calibrationID, step, claim, "the closing process ended (service restarted)"):
                released.append((calibrationID, step))
    return released


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def decide_close(calibration: Mapping[str, Any], step: Mapping[str, Any], stored: list[tuple[int, Any]]) -> StepClose:
    """Merge the reports, run each active phase's estimator and advance the state machine.

    Pure apart from its inputs; an unexpected error propagates (``close_step`` retries the
    close and, after its last attempt, fails the calibration with the reason)."""
    state = ProcedureState.from_dict(calibration["State"])
    ctx = PhaseContext.from_settings(calibration["Settings"])
    measurements, merged = {}, {}
    for key in step["Phases"]:
        phase = phase_for(key)
        spec = phase.spec(ctx)
        merged[key] = Summary.merge_payloads((p["phases"][key] for _, p in stored), spec)
        measurements[key] = phase.measure(merged[key], ctx)
        if measurements[key].ok and strategy_named(state.strategy).replaysOffline:
            measurements[key] = dataclasses.replace(
                measurements[key], solution=phase.solve(state.constants, merged[key], ctx)
            )
    newState, outcome = advance(state, measurements, ctx)
    outcomeDict = outcome.to_dict()
    outcomeDict["workers"] = [worker for worker, _ in stored]
    outcomeDict["uncertainties"] = (
        step_uncertainties(step["Phases"], state.constants, newState.constants, merged, ctx, step["Step"])
        if newState.status != FAILED else {}
    )
    return _step_close(calibration, newState, outcomeDict, outcome.artifacts)


def decide_packed_close(calibration: Mapping[str, Any], step: Mapping[str, Any], packed: list[tuple[int, bytes]]
                        ) -> StepClose:
    """``decide_close`` on the stored (compressed) reports: ``compute`` runs this in the
    service's closer process, so the blobs, which pickle cheaply, are what crosses to it and the
    decoding is done there rather than under the service's interpreter lock."""
    return decide_close(calibration, step, [(worker, unpack(blob)) for worker, blob in packed])


def failed_close(calibration: Mapping[str, Any], step: Mapping[str, Any], reason: str) -> StepClose:
    """The close of a step that cannot be computed: the calibration fails with the reason."""
    newState = ProcedureState.from_dict(calibration["State"])
    newState.status, newState.active, newState.reason = FAILED, [], reason
    return _step_close(calibration, newState, {"step": step["Step"], "error": reason}, {})


def _step_close(calibration: Mapping[str, Any], newState: ProcedureState, outcome: dict[str, Any],
                artifacts: Mapping[str, str]) -> StepClose:
    running = newState.status == RUNNING
    current = newState.current if running else None
    stage, nextPhase = (
        PhaseKey.parse(current) if current is not None else (calibration["Stage"], calibration["Phase"])
    )
    return StepClose(
        outcome=outcome,
        state=newState.to_dict(),
        status=newState.status,
        reason=newState.reason,
        stage=stage,
        phase=nextPhase,
        nextStep=newState.step if running else None,
        nextPhases=newState.active,
        nextConstants=newState.constants if running else None,
        nextInputs=newState.inputs,
        files={name: text.encode() for name, text in artifacts.items()},
    )
