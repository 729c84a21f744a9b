"""What the Calibration service does, as plain functions over a CalibrationDB.

The DISET handler only authenticates, checks argument types and calls these; the physics lives
in ``Utilities`` (phases, procedure), the persistence in ``DB``. Every function either returns a
JSON-safe value or raises ``CalibrationError`` with a message meant for the caller, leaving the
stored state unchanged.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import traceback
from dataclasses import dataclass
from typing import Any, Mapping

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB, CalibrationDBError, StepClose, now
from ILCDIRAC.CalibrationSystem.logic.results import CONSTANTS_FILE, RESULT_NAMES, RESULT_PREFIX, history, result_files
from ILCDIRAC.CalibrationSystem.logic.uncertainties import constant_uncertainties
from ILCDIRAC.CalibrationSystem.Utilities import reconstruction
from ILCDIRAC.CalibrationSystem.Utilities.paths import path_problem, relative_path
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.phases.photon_training import MERGED_LIKELIHOOD
from ILCDIRAC.CalibrationSystem.Utilities.procedure import FINISHED, ProcedureState, advance, split_key, start
from ILCDIRAC.CalibrationSystem.Utilities.settings import SAMPLES, Settings, SettingsError, settings_from_dict
from ILCDIRAC.CalibrationSystem.Utilities.slicing import slice_problems, worker_slice
from ILCDIRAC.CalibrationSystem.Utilities.steering import STEERING_FILE
from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary, SummaryError

RUNNING, KILLED, FAILED = "running", "killed", "failed"


class CalibrationError(Exception):
    """A request that cannot be honoured; the message goes back to the caller unchanged."""


@dataclass(frozen=True)
class Caller:
    """Who is calling, as DIRAC authenticated them."""

    dn: str
    username: str
    group: str
    properties: frozenset[str]
    isAdmin: bool = False


# ------------------------------------------------------------------------------------ creation
def create_calibration(db: CalibrationDB, caller: Caller, settingsDict: Any, inputFiles: Any) -> int:
    """Validate settings and input files completely, then store the calibration and its first step."""
    settings, resolved, files = validate_calibration(settingsDict, inputFiles)
    sequence = [f"{stage}.{phase}" for stage, phase in settings.phases()]
    state = start(sequence, resolved["startingConstants"], resolved["strategy"], resolved["maxIterationsPerPhase"])
    stage, phase = split_key(state.current)
    nWorkers = resolved["numberOfJobs"]
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
    )


def validate_calibration(settingsDict: Any, inputFiles: Any) -> tuple[Settings, dict[str, Any], dict[str, str]]:
    """(settings, resolved settings, input files) if the service would create this calibration,
    else CalibrationError with every problem; ``--dry-run`` runs this same check."""
    try:
        settings = settings_from_dict(settingsDict)
    except SettingsError as exc:
        raise CalibrationError(f"invalid settings: {exc}") from None
    resolved = settings.to_dict()
    files = check_input_files(inputFiles, resolved)
    problems = []
    for sample in settings.samples():
        problems += slice_problems(
            resolved[f"{sample}Files"], resolved[f"{sample}EventsPerFile"], resolved["numberOfJobs"], sample
        )
    if problems:
        raise CalibrationError("cannot create calibration: " + "; ".join(problems))
    return settings, resolved, files


def results_needed(fraction: float, numberOfWorkers: int) -> int:
    """ceil(fraction * workers), immune to 0.9 * 100 = 90.00000000000001."""
    return max(1, math.ceil(round(fraction * numberOfWorkers, 9)))


def check_input_files(inputFiles: Any, settings: Mapping[str, Any]) -> dict[str, str]:
    """The user's reconstruction files if the calibration can run with them (names, steering
    file, included and Pandora files checked as Marlin and Pandora will read them); otherwise
    CalibrationError listing every problem."""
    if not isinstance(inputFiles, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in inputFiles.items()
    ):
        raise CalibrationError("input files must be a dict of file name -> text content")
    if STEERING_FILE not in inputFiles:
        raise CalibrationError(f"input files must contain the Marlin steering file as {STEERING_FILE!r}")
    problems = []
    for name in inputFiles:
        problem = path_problem(name)
        if problem is None and relative_path(name) != name:
            problem = f"file name {name!r} is not normalised (write it as {relative_path(name)!r})"
        if problem is None and not is_input_file(name):
            problem = (f"file name {name!r} is kept for the calibration's own files (names starting with "
                       f"{RESULT_PREFIX!r} or 'step<N>_', and {', '.join(RESULT_NAMES)})")
        if problem:
            problems.append(problem)
    if problems:
        raise CalibrationError("input files: " + "; ".join(problems))
    problems = [f"steering file: {problem}" for problem in reconstruction.check(inputFiles, settings)]
    if problems:
        raise CalibrationError("cannot create calibration: " + "; ".join(problems))
    return dict(inputFiles)


# ------------------------------------------------------------------------------------ access
def _owned(db: CalibrationDB, caller: Caller, calibrationID: int, *, full: bool = False) -> dict[str, Any]:
    """The calibration row (with Settings and State if ``full``) if the caller owns it (or is an
    admin); the same error otherwise, so other users cannot even learn which IDs exist."""
    try:
        calibration = db.getCalibration(calibrationID, full=full)
    except CalibrationDBError:
        calibration = None
    if calibration is None or (calibration["Owner"] != caller.username and not caller.isAdmin):
        raise CalibrationError(f"calibration {calibrationID} does not exist or does not belong to {caller.username}")
    return calibration


def calibration_status(db: CalibrationDB, caller: Caller, calibrationID: int | None = None) -> list[dict[str, Any]]:
    """One calibration (with every worker's state), or all of the caller's (newest first, with
    worker counts), with step progress."""
    if calibrationID is not None:
        _owned(db, caller, calibrationID)
        rows = db.listCalibrations(calibrationIDs=[calibrationID])
    else:
        rows = db.listCalibrations(owner=caller.username)
    counts = db.workerCounts([r["CalibrationID"] for r in rows])
    report = []
    for row in rows:
        step = db.getStep(row["CalibrationID"], row["Step"])
        # a running calibration shows the constants its current step runs with, an ended one the
        # constants it ended with (after the last step's update)
        constants = step["Constants"] if row["Status"] == RUNNING else db.getCalibration(row["CalibrationID"])["State"]["constants"]
        report.append(
            {
                "calibrationID": row["CalibrationID"],
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
                "workers": counts.get(row["CalibrationID"], {}),
                "backend": row["Backend"],
                "created": row["CreationTime"].isoformat(),
                "lastUpdate": row["LastUpdate"].isoformat(),
                "ended": row["EndTime"].isoformat() if row["EndTime"] else None,
                "constants": constants,
            }
        )
    if calibrationID is not None:
        report[0]["workerList"] = [
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
    if not isinstance(workerID, int) or isinstance(workerID, bool) or not 0 <= workerID < calibration["NumberOfWorkers"]:
        raise CalibrationError(
            f"worker ID {workerID!r} is not one of the {calibration['NumberOfWorkers']} workers of "
            f"calibration {calibration['CalibrationID']}"
        )
    return workerID


def worker_setup(
    db: CalibrationDB, caller: Caller, calibrationID: int, workerID: int, polling: Mapping[str, float]
) -> dict[str, Any]:
    """Everything a worker needs once: its event slices, the settings, the steering and Pandora
    files, and how it should poll (the service's WorkerPoll* options)."""
    calibration = _owned(db, caller, calibrationID, full=True)
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
    if not isinstance(name, str) or name not in db.listFiles(calibrationID):
        raise CalibrationError(f"calibration {calibrationID} has no file {name!r}")
    content = db.getFile(calibrationID, name)
    try:
        return {"encoding": "utf-8", "content": content.decode()}
    except UnicodeDecodeError:
        return {"encoding": "base64", "content": base64.b64encode(content).decode()}


def register_workers(db: CalibrationDB, caller: Caller, calibrationID: int, jobIDs: Any, backendInfo: Any) -> int:
    """Record the job (or process) ID each worker runs as, after the backend started them, and
    what the agent needs to look after them (``backendInfo``)."""
    calibration = _owned(db, caller, calibrationID)
    if not isinstance(backendInfo, Mapping):
        raise CalibrationError("backend information must be a dict")
    if not isinstance(jobIDs, Mapping) or not all(isinstance(j, (str, int)) for j in jobIDs.values()):
        raise CalibrationError("job IDs must be a dict of worker ID -> job ID")
    parsed = {}
    for key, jobID in jobIDs.items():
        try:
            workerID = int(key)
        except (TypeError, ValueError):
            raise CalibrationError(f"worker ID {key!r} is not an integer") from None
        parsed[_worker(calibration, workerID)] = str(jobID)
    db.registerJobs(calibrationID, parsed)
    db.updateCalibration(calibrationID, BackendInfo=dict(backendInfo))
    return len(parsed)


def is_input_file(name: str) -> bool:
    """Files the user submitted (steering, included and Pandora files), as opposed to files the
    calibration made: step artifacts (``step<N>_...``, fetched when a step needs them) and
    results (whose names the user's files must not take in the result set)."""
    return not (name.startswith(RESULT_PREFIX) or re.match(r"step\d+_", name) or name in RESULT_NAMES)


def application_status(calibrationID: int, action: str, step: int | None = None, key: str | None = None) -> str:
    """The ApplicationStatus wording of the original talk, shown on the DIRAC job monitor."""
    if action == "run":
        stage, phase = split_key(key)
        return f"Running: stage: {stage}; phase: {phase}; step: {step}"
    if action == "wait":
        return f"PandoraCalib_{calibrationID}: step {step} is finished. Waiting for other jobs"
    if action == "finished":
        return f"PandoraCalib_{calibrationID}: Calibration is finished."
    return f"PandoraCalib_{calibrationID}: Calibration is {action}."


def step_parameters(
    db: CalibrationDB, caller: Caller, calibrationID: int, workerID: int, lastStep: int | None
) -> dict[str, Any]:
    """What a worker does next: run step N with these constants, wait, or stop."""
    calibration = _owned(db, caller, calibrationID)
    workerID = _worker(calibration, workerID)
    if lastStep is not None and (not isinstance(lastStep, int) or isinstance(lastStep, bool) or lastStep < 0):
        raise CalibrationError(f"last step must be a non-negative integer or None, not {lastStep!r}")
    status = calibration["Status"]
    if status != RUNNING:
        action = {FINISHED: "finished", KILLED: "killed", FAILED: "failed"}[status]
        db.updateWorker(calibrationID, workerID, Status=action, ApplicationStatus=application_status(calibrationID, action),
                        LastSeen=now())
        return {"action": action, "reason": calibration["Reason"]}
    current = calibration["Step"]
    stored = db.getWorker(calibrationID, workerID)["LastStep"]
    done = max(s for s in (lastStep, stored, 0) if s is not None)
    if done >= current:
        message = application_status(calibrationID, "wait", done)
        db.updateWorker(calibrationID, workerID, Status="waiting", ApplicationStatus=message, LastSeen=now())
        return {"action": "wait", "step": current, "applicationStatus": message}
    step = db.getStep(calibrationID, current)
    message = application_status(calibrationID, "run", current, step["Phases"][0])
    db.updateWorker(calibrationID, workerID, Status="running", ApplicationStatus=message, LastSeen=now())
    stage, phase = split_key(step["Phases"][0])
    return {
        "action": "run",
        "step": current,
        "stage": stage,
        "phase": phase,
        "phases": step["Phases"],
        "constants": step["Constants"],
        "inputs": step["Inputs"],
        "applicationStatus": message,
    }


def submit_result(
    db: CalibrationDB, caller: Caller, calibrationID: int, step: int, workerID: int, payload: Any
) -> dict[str, Any]:
    """Validate and store one worker's report; close the step when enough workers reported."""
    calibration = _owned(db, caller, calibrationID, full=True)
    workerID = _worker(calibration, workerID)
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise CalibrationError(f"step must be a positive integer, not {step!r}")
    if step > calibration["Step"]:
        raise CalibrationError(f"calibration {calibrationID} has not reached step {step} (current {calibration['Step']})")
    stepRow = db.getStep(calibrationID, step)
    if stepRow["Status"] == "open":
        _validate_report(payload, stepRow["Phases"], PhaseContext.from_settings(calibration["Settings"]))
    verdict, have, needed = db.addResult(calibrationID, step, workerID, payload)
    closed = False
    if verdict == "accepted" and have >= needed:
        closed = close_step(db, calibrationID, step) is not None
    return {"verdict": verdict, "results": have, "needed": needed, "closedStep": closed}


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
def close_step(db: CalibrationDB, calibrationID: int, step: int) -> StepClose | None:
    """Close the step once (guarded in the DB); None if someone else closed it first. The step
    that finishes the calibration also produces its deliverables."""
    decision = db.closeStep(calibrationID, step, decide_close)
    if decision is not None and decision.status == FINISHED:
        finalize_calibration(db, calibrationID)
    return decision


def finalize_calibration(db: CalibrationDB, calibrationID: int) -> list[str]:
    """Store the result files of a finished calibration if they are not there yet (idempotent:
    the agent calls it again after a service crash between the last close and this)."""
    calibration = db.getCalibration(calibrationID, full=True)
    if calibration["Status"] != FINISHED:
        return []
    present = set(db.listFiles(calibrationID))
    if CONSTANTS_FILE in present:
        return []
    inputs = {name: db.getFile(calibrationID, name).decode() for name in present if is_input_file(name)}
    trained = ProcedureState.from_dict(calibration["State"]).inputs.get(MERGED_LIKELIHOOD)
    likelihood = db.getFile(calibrationID, trained).decode() if trained else None
    files = result_files(calibration, db.getSteps(calibrationID), inputs, likelihood)
    for name, content in files.items():
        db.putFile(calibrationID, name, content)
    return sorted(files)


def calibration_results(db: CalibrationDB, caller: Caller, calibrationID: int) -> dict[str, Any]:
    """The final constants with uncertainties and the names of the result files."""
    calibration = _owned(db, caller, calibrationID)
    if calibration["Status"] != FINISHED:
        raise CalibrationError(
            f"calibration {calibrationID} is {calibration['Status']}" + (f" ({calibration['Reason']})" if calibration["Reason"] else "")
            + ": results exist once it finished"
        )
    finalize_calibration(db, calibrationID)
    summary = json.loads(db.getFile(calibrationID, CONSTANTS_FILE))
    summary["files"] = sorted(name for name in db.listFiles(calibrationID) if name.startswith(RESULT_PREFIX))
    return summary


def close_ready_steps(db: CalibrationDB) -> list[dict[str, Any]]:
    """The safety net: close every open step that already has enough results."""
    closed = []
    for calibrationID, step in db.readySteps():
        decision = close_step(db, calibrationID, step)
        if decision is not None:
            closed.append({"calibrationID": calibrationID, "step": step, "status": decision.status})
    return closed


def decide_close(calibration: Mapping[str, Any], step: Mapping[str, Any], stored: list[tuple[int, Any]]) -> StepClose:
    """Merge the reports, run each active phase's estimator and advance the state machine.

    Pure apart from its inputs; an unexpected error fails the calibration with the reason rather
    than leaving the step open for ever."""
    state = ProcedureState.from_dict(calibration["State"])
    try:
        ctx = PhaseContext.from_settings(calibration["Settings"])
        measurements, uncertainties = {}, {}
        for key in step["Phases"]:
            phase = phase_for(key)
            spec = phase.spec(ctx)
            summaries = [Summary.from_payload(p["phases"][key], spec) for _, p in stored]
            merged = Summary.merge(summaries, spec)
            measurements[key] = phase.measure(merged, ctx)
            if measurements[key].ok and state.strategy != "legacy":
                measurements[key] = dataclasses.replace(measurements[key], solution=phase.solve(state.constants, merged, ctx))
            if measurements[key].ok and phase.fits:
                uncertainties.update(constant_uncertainties(phase, ctx, state.constants, summaries, spec))
        newState, outcome = advance(state, measurements, ctx)
        artifacts = outcome.artifacts
        outcomeDict = outcome.to_dict()
        outcomeDict["workers"] = [worker for worker, _ in stored]
        outcomeDict["uncertainties"] = uncertainties
    except Exception as exc:  # noqa: BLE001 - any failure must end the calibration visibly, not loop
        newState = ProcedureState.from_dict(state.to_dict())
        newState.status, newState.active = FAILED, []
        newState.reason = f"internal error while closing step {step['Step']}: {type(exc).__name__}: {exc}"
        artifacts = {}
        outcomeDict = {"step": step["Step"], "error": newState.reason, "traceback": traceback.format_exc()}
    running = newState.status == RUNNING
    stage, phase = split_key(newState.current) if running else (calibration["Stage"], calibration["Phase"])
    return StepClose(
        outcome=outcomeDict,
        state=newState.to_dict(),
        status=newState.status,
        reason=newState.reason,
        stage=stage,
        phase=phase,
        nextStep=newState.step if running else None,
        nextPhases=newState.active,
        nextConstants=newState.constants if running else None,
        nextInputs=newState.inputs,
        files={name: text.encode() for name, text in artifacts.items()},
    )
