"""CalibrationDB: all persistent state of the Calibration system (SQLAlchemy Core).

The database is the only state: a service process may be killed at any instant, or run as
several replicas on one database, without losing an acknowledged result or closing a step twice.
- A worker result is committed before the service acknowledges it; results are unique on
  (calibration, step, worker), so a repeated report is a harmless duplicate.
- A result only counts while its step is open: the insert and the increment of the step's result
  counter run in one transaction guarded by ``Status = 'open'``.
- Closing a step never holds a lock while it computes. A closer *claims* the step with one short
  guarded update (``Status`` open -> closing, ``ClaimedBy``/``ClaimedAt`` set, ``CloseAttempts``
  counted, only while the step is open and has enough results, or while an older claim has timed
  out because its closer died), reads the step's committed results without locks (no result can
  be counted once the step left ``open``, so this is exactly the set the close uses), computes,
  and commits the outcome and the next step in one short transaction guarded by its claim still
  being the step's. Exactly one closer commits, also with several service replicas; a close that
  raises hands the step back (open, the attempt counted) for a retry.

Production uses MariaDB/MySQL from the CS section ``Databases/CalibrationDB`` (Host, Port, User,
Password, DBName as for every DIRAC DB). Without a configured Host the embedded default is an
SQLite file (option ``SQLitePath``), for a single-machine installation.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from sqlalchemy import (
    DDL,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from ILCDIRAC.CalibrationSystem.Utilities.clock import now
from ILCDIRAC.CalibrationSystem.Utilities.lifecycle import CALIBRATION, STEP, WORKER, Change, announce, transition
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus, ReportVerdict, StepStatus, WorkerStatus

LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
LongBlob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

metadata = MetaData()


def _table(name: str, *columns: Column) -> Table:
    """A table as DIRAC's MySQL databases have them: InnoDB (transactions, row locks), utf8mb4."""
    return Table(name, metadata, *columns, mysql_engine="InnoDB", mysql_charset="utf8mb4")


calibrations = _table(
    "Calibrations",
    Column("CalibrationID", Integer, primary_key=True, autoincrement=True),
    Column("OwnerDN", String(255), nullable=False),
    Column("Owner", String(64), nullable=False, index=True),
    Column("OwnerGroup", String(64), nullable=False),
    Column("Status", String(16), nullable=False, index=True),
    Column("Reason", Text, nullable=False, default=""),
    Column("Settings", LongText, nullable=False),
    Column("State", LongText, nullable=False),
    Column("Stage", Integer, nullable=True),
    Column("Phase", Integer, nullable=True),
    Column("Step", Integer, nullable=False),
    Column("NumberOfWorkers", Integer, nullable=False),
    Column("ResultsNeeded", Integer, nullable=False),
    Column("Backend", String(32), nullable=False),
    Column("CreationTime", DateTime, nullable=False),
    Column("LastUpdate", DateTime, nullable=False),
    Column("EndTime", DateTime, nullable=True),
    Column("DeliveryTime", DateTime, nullable=True),
    Column("DeliveryReport", Text, nullable=True),
    Column("CleanupTime", DateTime, nullable=True),
    #: When the owner was told by mail that the calibration ended (claimed before sending: never twice).
    Column("NotificationTime", DateTime, nullable=True),
)

steps = _table(
    "Steps",
    Column("CalibrationID", Integer, primary_key=True, autoincrement=False),
    Column("Step", Integer, primary_key=True, autoincrement=False),
    Column("Phases", String(255), nullable=False),
    Column("Constants", LongText, nullable=False),
    Column("Inputs", LongText, nullable=False),
    Column("Status", String(16), nullable=False),
    Column("NResults", Integer, nullable=False, default=0),
    Column("OpenTime", DateTime, nullable=False),
    Column("CloseTime", DateTime, nullable=True),
    Column("Outcome", LongText, nullable=True),
    Column("ClaimedBy", String(128), nullable=True),
    Column("ClaimedAt", DateTime, nullable=True),
    Column("CloseAttempts", Integer, nullable=False, default=0),
    Column("CloseError", Text, nullable=True),
)

results = _table(
    "Results",
    Column("CalibrationID", Integer, primary_key=True, autoincrement=False),
    Column("Step", Integer, primary_key=True, autoincrement=False),
    Column("WorkerID", Integer, primary_key=True, autoincrement=False),
    Column("Payload", LongBlob, nullable=False),
    Column("ReceivedTime", DateTime, nullable=False),
)

workers = _table(
    "Workers",
    Column("CalibrationID", Integer, primary_key=True, autoincrement=False),
    Column("WorkerID", Integer, primary_key=True, autoincrement=False),
    Column("JobID", String(64), nullable=True),
    Column("Status", String(32), nullable=False),
    Column("ApplicationStatus", String(255), nullable=False, default=""),
    Column("LastStep", Integer, nullable=True),
    Column("LastSeen", DateTime, nullable=True),
    Column("Resubmissions", Integer, nullable=False, default=0),
)

files = _table(
    "Files",
    Column("CalibrationID", Integer, primary_key=True, autoincrement=False),
    Column("Name", String(255), primary_key=True),
    Column("Content", LongBlob, nullable=False),
    Column("CreationTime", DateTime, nullable=False),
)

OPEN, CLOSING, CLOSED = StepStatus.OPEN, StepStatus.CLOSING, StepStatus.CLOSED
RUNNING = CalibrationStatus.RUNNING
#: Seconds after which a closer's claim on a step counts as abandoned (its process died) by default.
CLAIM_TIMEOUT = 300.0
#: Longest stored close error (the reason a failed close attempt left).
MAX_CLOSE_ERROR = 1000


class CalibrationDBError(Exception):
    """A request the stored state cannot satisfy (unknown calibration, wrong step, ...)."""


class _Rollback(Exception):
    """Leave a transaction without writing anything."""


@dataclass(frozen=True)
class StepClose:
    """What the caller's close function decided for a step, written in the closing transaction."""

    outcome: Mapping[str, Any]
    state: Mapping[str, Any]
    status: str
    reason: str
    stage: int | None
    phase: int | None
    nextStep: int | None
    nextPhases: Sequence[str]
    nextConstants: Mapping[str, Any] | None
    nextInputs: Mapping[str, str]
    files: Mapping[str, bytes]


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def pack(value: Any) -> bytes:
    return zlib.compress(dumps(value).encode(), 6)


def unpack(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob).decode())


class CalibrationDB:
    """Typed access to the calibration tables. Methods raise; the DISET layer turns errors into S_ERROR."""

    def __init__(self, url: str | None = None, *, echo: bool = False):
        self.url = url or url_from_cs()
        self.engine: Engine = _make_engine(self.url, echo)
        metadata.create_all(self.engine, checkfirst=True)
        _add_missing_columns(self.engine)

    # ---------------------------------------------------------------- calibrations
    def insertCalibration(
        self,
        *,
        ownerDN: str,
        owner: str,
        ownerGroup: str,
        settings: Mapping[str, Any],
        state: Mapping[str, Any],
        stage: int,
        phase: int,
        phases: Sequence[str],
        constants: Mapping[str, Any],
        numberOfWorkers: int,
        resultsNeeded: int,
        backend: str,
        inputFiles: Mapping[str, bytes],
        maxRunning: int | None = None,
    ) -> int:
        """Create a calibration with its first open step, its worker slots and its input files,
        atomically; refused (CalibrationDBError) when the owner already has ``maxRunning`` running
        calibrations (counted with the owner's rows locked, so concurrent creations cannot both pass)."""
        stamp = now()
        with self.engine.begin() as conn:
            if maxRunning is not None:
                running = conn.execute(
                    select(calibrations.c.CalibrationID)
                    .where(and_(calibrations.c.Owner == owner, calibrations.c.Status == RUNNING))
                    .with_for_update()
                ).all()
                if len(running) >= maxRunning:
                    raise CalibrationDBError(f"{owner} has {len(running)} running calibrations already")
            calibrationID = conn.execute(
                insert(calibrations).values(
                    OwnerDN=ownerDN,
                    Owner=owner,
                    OwnerGroup=ownerGroup,
                    Status=RUNNING,
                    Reason="",
                    Settings=dumps(settings),
                    State=dumps(state),
                    Stage=stage,
                    Phase=phase,
                    Step=1,
                    NumberOfWorkers=numberOfWorkers,
                    ResultsNeeded=resultsNeeded,
                    Backend=backend,
                    CreationTime=stamp,
                    LastUpdate=stamp,
                )
            ).inserted_primary_key[0]
            _open_step(conn, calibrationID, 1, phases, constants, stamp)
            conn.execute(
                insert(workers),
                [
                    {"CalibrationID": calibrationID, "WorkerID": w, "Status": WorkerStatus.CREATED,
                     "ApplicationStatus": "", "Resubmissions": 0}
                    for w in range(numberOfWorkers)
                ],
            )
            for name, content in inputFiles.items():
                conn.execute(
                    insert(files).values(CalibrationID=calibrationID, Name=name, Content=zlib.compress(content),
                                         CreationTime=stamp)
                )
        return int(calibrationID)

    def getCalibration(self, calibrationID: int, *, full: bool = True) -> dict[str, Any]:
        """The calibration's row; ``full=False`` leaves out the bulky Settings and State (the
        workers' frequent polls need neither)."""
        columns = calibrations.c if full else [c for c in calibrations.c if c.name not in ("Settings", "State")]
        with self.engine.connect() as conn:
            row = conn.execute(select(*columns).where(calibrations.c.CalibrationID == calibrationID)).mappings().first()
        if row is None:
            raise CalibrationDBError(f"calibration {calibrationID} does not exist")
        return _calibration_dict(row)

    def listCalibrations(
        self,
        *,
        owner: str | None = None,
        statuses: Iterable[str] | None = None,
        calibrationIDs: Iterable[int] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Calibrations without their bulky settings/state, newest first (the newest ``limit``)."""
        columns = [c for c in calibrations.c if c.name not in ("Settings", "State")]
        query = select(*columns).order_by(calibrations.c.CalibrationID.desc())
        if calibrationIDs is not None:
            query = query.where(calibrations.c.CalibrationID.in_(list(calibrationIDs)))
        if owner is not None:
            query = query.where(calibrations.c.Owner == owner)
        if statuses is not None:
            query = query.where(calibrations.c.Status.in_(list(statuses)))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_calibration_dict(row) for row in conn.execute(query).mappings()]

    def getStates(self, calibrationIDs: Sequence[int]) -> dict[int, Any]:
        """The procedure state of each calibration (one query)."""
        if not calibrationIDs:
            return {}
        query = select(calibrations.c.CalibrationID, calibrations.c.State).where(
            calibrations.c.CalibrationID.in_(list(calibrationIDs)))
        with self.engine.connect() as conn:
            return {int(i): json.loads(state) for i, state in conn.execute(query)}

    def updateCalibration(self, calibrationID: int, **values: Any) -> None:
        """Set bookkeeping columns (delivery and clean-up records)."""
        allowed = {"DeliveryTime", "DeliveryReport", "CleanupTime"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown calibration fields {sorted(unknown)}")
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(calibrations).where(calibrations.c.CalibrationID == calibrationID).values(**values)
            ).rowcount
        if changed != 1:
            raise CalibrationDBError(f"calibration {calibrationID} does not exist")

    def claimNotification(self, calibrationID: int) -> bool:
        """Record that the owner is being told of the end of an ended calibration; True only for
        the one call that recorded it (so the mail goes once, whatever restarts in between)."""
        condition = and_(calibrations.c.CalibrationID == calibrationID, calibrations.c.Status != RUNNING,
                         calibrations.c.NotificationTime.is_(None))
        with self.engine.begin() as conn:
            return conn.execute(update(calibrations).where(condition).values(NotificationTime=now())).rowcount == 1

    def releaseNotification(self, calibrationID: int) -> None:
        """Undo a claim whose mail could not be sent, so the next agent cycle tries again."""
        with self.engine.begin() as conn:
            conn.execute(update(calibrations).where(calibrations.c.CalibrationID == calibrationID)
                         .values(NotificationTime=None))

    def setCalibrationStatus(self, calibrationID: int, status: CalibrationStatus, reason: str) -> bool:
        """End a running calibration (killed/failed): the Status column and the stored state's
        status and reason change in one transaction, so both always say the same. True if this
        call changed it; False if it had ended already (or does not exist)."""
        stamp = now()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(calibrations.c.Status, calibrations.c.Step, calibrations.c.State)
                .where(calibrations.c.CalibrationID == calibrationID)
                .with_for_update()
            ).first()
            if row is None or row.Status != RUNNING:
                return False
            change = transition(CALIBRATION, row.Status, status, f"calibration {calibrationID} step {row.Step}")
            state = json.loads(row.State)
            state.update(status=str(status), reason=reason)
            conn.execute(
                update(calibrations)
                .where(calibrations.c.CalibrationID == calibrationID)
                .values(Status=status, Reason=reason, State=dumps(state), LastUpdate=stamp, EndTime=stamp)
            )
        announce([change])
        return True

    # ---------------------------------------------------------------- steps
    def getStep(self, calibrationID: int, step: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(steps).where(and_(steps.c.CalibrationID == calibrationID, steps.c.Step == step))
            ).mappings().first()
        if row is None:
            raise CalibrationDBError(f"calibration {calibrationID} has no step {step}")
        return _step_dict(row)

    def getStepsAt(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], dict[str, Any]]:
        """The steps (calibration ID, step) asked for, in one query."""
        if not keys:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(steps).where(tuple_(steps.c.CalibrationID, steps.c.Step).in_(list(keys))))
            return {(int(row["CalibrationID"]), int(row["Step"])): _step_dict(row) for row in rows.mappings()}

    def getSteps(self, calibrationID: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(steps).where(steps.c.CalibrationID == calibrationID).order_by(steps.c.Step)
            ).mappings()
            return [_step_dict(row) for row in rows]

    def closingClaims(self) -> list[tuple[int, int, str]]:
        """(calibration, step, claim) of every step being closed: whose closer may have died."""
        query = select(steps.c.CalibrationID, steps.c.Step, steps.c.ClaimedBy).where(
            and_(steps.c.Status == CLOSING, steps.c.ClaimedBy.is_not(None)))
        with self.engine.connect() as conn:
            return [(int(c), int(s), str(claim)) for c, s, claim in conn.execute(query)]

    def readySteps(self, claimTimeout: float = CLAIM_TIMEOUT) -> list[tuple[int, int]]:
        """Steps of running calibrations that a closer may claim: open ones with enough results,
        and closing ones whose claim is older than ``claimTimeout`` seconds (the closer died)."""
        query = select(steps.c.CalibrationID, steps.c.Step).where(_claimable(claimTimeout, ready=True))
        with self.engine.connect() as conn:
            return [(int(c), int(s)) for c, s in conn.execute(query)]

    def getStepProgress(self, calibrationID: int, step: int) -> dict[str, Any]:
        """Status, results counted and opening time of a step: the workers' frequent polls need
        nothing bulkier (one primary-key read)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(steps.c.Status, steps.c.NResults, steps.c.OpenTime)
                .where(and_(steps.c.CalibrationID == calibrationID, steps.c.Step == step))
            ).mappings().first()
        if row is None:
            raise CalibrationDBError(f"calibration {calibrationID} has no step {step}")
        return dict(row)

    def getProgress(self, calibrationIDs: Collection[int]) -> dict[int, tuple[int, str]]:
        """(current step, status) of each given calibration that exists: what the service's
        step watch reads twice a second for all the calls it holds (one primary-key read)."""
        if not calibrationIDs:
            return {}
        query = select(calibrations.c.CalibrationID, calibrations.c.Step, calibrations.c.Status).where(
            calibrations.c.CalibrationID.in_(sorted(calibrationIDs))
        )
        with self.engine.connect() as conn:
            return {int(c): (int(s), str(status)) for c, s, status in conn.execute(query)}

    # ---------------------------------------------------------------- results
    def addResult(self, calibrationID: int, step: int, workerID: int, payload: Any) -> tuple[ReportVerdict, int, int]:
        """Store one worker's report for an open step.

        Returns (verdict, results so far, results needed) with verdict "accepted", "duplicate"
        (this worker already reported this step), "closed" (the step closed without it) or
        "ended" (the calibration was killed or failed meanwhile); the last two store nothing.
        The row is committed before this returns.
        """
        blob = pack(payload)
        stamp = now()
        try:
            with self.engine.begin() as conn:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(results).values(
                                CalibrationID=calibrationID, Step=step, WorkerID=workerID, Payload=blob,
                                ReceivedTime=stamp,
                            )
                        )
                except IntegrityError:
                    return (ReportVerdict.DUPLICATE,) + self._count(conn, calibrationID, step)
                running = select(calibrations.c.CalibrationID).where(calibrations.c.Status == RUNNING)
                counted = conn.execute(
                    update(steps)
                    .where(
                        and_(
                            steps.c.CalibrationID == calibrationID,
                            steps.c.Step == step,
                            steps.c.Status == OPEN,
                            steps.c.CalibrationID.in_(running),
                        )
                    )
                    .values(NResults=steps.c.NResults + 1)
                ).rowcount
                if counted != 1:
                    raise _Rollback()
                conn.execute(
                    update(workers)
                    .where(and_(workers.c.CalibrationID == calibrationID, workers.c.WorkerID == workerID))
                    .values(LastStep=step, LastSeen=stamp)
                )
                counts = self._count(conn, calibrationID, step)
        except _Rollback:
            with self.engine.connect() as conn:
                status = conn.execute(
                    select(calibrations.c.Status).where(calibrations.c.CalibrationID == calibrationID)
                ).scalar()
                verdict = ReportVerdict.CLOSED if status == RUNNING else ReportVerdict.ENDED
                return (verdict,) + self._count(conn, calibrationID, step)
        return (ReportVerdict.ACCEPTED,) + counts

    def getResults(self, calibrationID: int, step: int) -> list[tuple[int, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(results.c.WorkerID, results.c.Payload)
                .where(and_(results.c.CalibrationID == calibrationID, results.c.Step == step))
                .order_by(results.c.WorkerID)
            )
            return [(int(worker), unpack(blob)) for worker, blob in rows]

    def getResultTimes(self, calibrationID: int) -> list[tuple[int, int, datetime.datetime]]:
        """(step, worker, when its result was stored) of every result kept, for the workers plot."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(results.c.Step, results.c.WorkerID, results.c.ReceivedTime)
                .where(results.c.CalibrationID == calibrationID)
                .order_by(results.c.Step, results.c.WorkerID)
            )
            return [(int(step), int(worker), received) for step, worker, received in rows]

    def _count(self, conn: Connection, calibrationID: int, step: int) -> tuple[int, int]:
        row = conn.execute(
            select(steps.c.NResults, calibrations.c.ResultsNeeded)
            .join(calibrations, calibrations.c.CalibrationID == steps.c.CalibrationID)
            .where(and_(steps.c.CalibrationID == calibrationID, steps.c.Step == step))
        ).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    # ---------------------------------------------------------------- closing a step
    def closeStep(
        self,
        calibrationID: int,
        step: int,
        decide: Callable[[dict[str, Any], dict[str, Any], list[tuple[int, Any]]], StepClose],
        *,
        claimer: str | None = None,
        claimTimeout: float = CLAIM_TIMEOUT,
        packed: bool = False,
    ) -> StepClose | None:
        """Close a ready step exactly once: claim it, compute ``decide(calibration, step,
        results)`` on the committed results outside any transaction, commit what it returns if
        the claim is still ours. Returns None when the step could not be claimed (not ready,
        claimed by a live closer, closed already) or the claim was lost meanwhile. When
        ``decide`` raises, the step is handed back (open again, the attempt and its error kept
        in ``CloseAttempts``/``CloseError``, which ``decide`` sees in the step) and the error
        propagates. ``packed`` as in ``stepSnapshot``."""
        claim = self.claimStep(calibrationID, step, claimer or closer_name(), claimTimeout)
        if claim is None:
            return None
        calibration, stepRow, stored = self.stepSnapshot(calibrationID, step, packed=packed)
        try:
            decision = decide(calibration, stepRow, stored)
        except Exception as exc:
            self.releaseClaim(calibrationID, step, claim, f"{type(exc).__name__}: {exc}")
            raise
        return decision if self.commitClose(calibrationID, step, claim, decision) else None

    def claimStep(self, calibrationID: int, step: int, claimer: str, claimTimeout: float = CLAIM_TIMEOUT
                  ) -> str | None:
        """One short guarded update that makes ``claimer`` the step's closer, or None if the
        step is not claimable (callers close steps ``readySteps`` or a report found ready).
        Returns the claim token (``claimer`` made unique)."""
        token = f"{claimer[:90]}:{uuid.uuid4().hex[:12]}"
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(steps)
                .where(and_(steps.c.CalibrationID == calibrationID, steps.c.Step == step,
                            _claimable(claimTimeout, ready=False)))
                .values(Status=CLOSING, ClaimedBy=token, ClaimedAt=now(), CloseAttempts=steps.c.CloseAttempts + 1)
            ).rowcount
        if claimed != 1:
            return None
        announce([transition(STEP, OPEN, CLOSING, f"step {step} of calibration {calibrationID}")])
        return token

    def stepSnapshot(
        self, calibrationID: int, step: int, *, packed: bool = False
    ) -> tuple[dict[str, Any], dict[str, Any], list[tuple[int, Any]]]:
        """(calibration, step, results) read in one transaction without locks. Once the step is
        claimed its set of counted results cannot change, so this is what the close must use.
        With ``packed`` the results are the stored blobs (``unpack`` them): the service's closer
        unpacks them in its child process, since a thousand reports are tens of MB of JSON whose
        decoding would hold the service's interpreter lock and then be pickled to the child."""
        with self.engine.connect() as conn:
            calibration = _calibration_dict(
                conn.execute(select(calibrations).where(calibrations.c.CalibrationID == calibrationID)).mappings().one()
            )
            stepRow = _step_dict(
                conn.execute(
                    select(steps).where(and_(steps.c.CalibrationID == calibrationID, steps.c.Step == step))
                ).mappings().one()
            )
            stored = [
                (int(worker), blob if packed else unpack(blob))
                for worker, blob in conn.execute(
                    select(results.c.WorkerID, results.c.Payload)
                    .where(and_(results.c.CalibrationID == calibrationID, results.c.Step == step))
                    .order_by(results.c.WorkerID)
                )
            ]
        return calibration, stepRow, stored

    def releaseClaim(self, calibrationID: int, step: int, claim: str, error: str) -> bool:
        """Hand a step whose close failed back (open, claim cleared, the error kept), if the claim
        is still ours."""
        with self.engine.begin() as conn:
            released = conn.execute(
                update(steps)
                .where(_claimed(calibrationID, step, claim))
                .values(Status=OPEN, ClaimedBy=None, ClaimedAt=None, CloseError=error[:MAX_CLOSE_ERROR])
            ).rowcount
        if released != 1:
            return False
        announce([transition(STEP, CLOSING, OPEN, f"step {step} of calibration {calibrationID}")])
        return True

    def commitClose(self, calibrationID: int, step: int, claim: str, decision: StepClose) -> bool:
        """Write a close (outcome, state, next step, files) in one short transaction, if the
        claim is still ours and the calibration still runs; False (nothing written) otherwise."""
        stamp = now()
        changes = [
            transition(STEP, CLOSING, CLOSED, f"step {step} of calibration {calibrationID}"),
            transition(CALIBRATION, RUNNING, decision.status, f"calibration {calibrationID} step {step}"),
        ]
        try:
            with self.engine.begin() as conn:
                flipped = conn.execute(
                    update(steps)
                    .where(_claimed(calibrationID, step, claim))
                    .values(Status=CLOSED, CloseTime=stamp, Outcome=dumps(decision.outcome))
                ).rowcount
                if flipped != 1:
                    raise _Rollback()
                values = dict(
                    State=dumps(decision.state),
                    Status=decision.status,
                    Reason=decision.reason,
                    Stage=decision.stage,
                    Phase=decision.phase,
                    LastUpdate=stamp,
                )
                if decision.nextStep is not None:
                    values["Step"] = decision.nextStep
                if decision.status != RUNNING:
                    values["EndTime"] = stamp
                changed = conn.execute(
                    update(calibrations)
                    .where(and_(calibrations.c.CalibrationID == calibrationID, calibrations.c.Status == RUNNING))
                    .values(**values)
                ).rowcount
                if changed != 1:
                    raise _Rollback()
                if decision.nextStep is not None:
                    _open_step(conn, calibrationID, decision.nextStep, decision.nextPhases, decision.nextConstants,
                               stamp, decision.nextInputs)
                for name, content in decision.files.items():
                    _put_file(conn, calibrationID, name, content, stamp)
        except _Rollback:
            return False
        announce(changes)
        return True

    # ---------------------------------------------------------------- workers
    def getWorkers(self, calibrationID: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(workers).where(workers.c.CalibrationID == calibrationID).order_by(workers.c.WorkerID)
            ).mappings()
            return [dict(row) for row in rows]

    def getWorker(self, calibrationID: int, workerID: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(workers).where(and_(workers.c.CalibrationID == calibrationID, workers.c.WorkerID == workerID))
            ).mappings().first()
        if row is None:
            raise CalibrationDBError(f"calibration {calibrationID} has no worker {workerID}")
        return dict(row)

    def updateWorker(self, calibrationID: int, workerID: int, **values: Any) -> None:
        """Set a worker's fields; a new Status must follow the worker lifecycle (IllegalTransition
        otherwise, and nothing changes)."""
        self.updateWorkers(calibrationID, {workerID: values})

    def registerJobs(self, calibrationID: int, jobIDs: Mapping[int, str]) -> bool:
        """Record the job IDs of workers that have none yet, of a running calibration, in one
        transaction: all of them or (False) none. A worker that already contacted the service
        keeps its state."""
        changes: list[Change | None] = []
        try:
            with self.engine.begin() as conn:
                running = conn.execute(
                    select(calibrations.c.CalibrationID, calibrations.c.Step)
                    .where(and_(calibrations.c.CalibrationID == calibrationID, calibrations.c.Status == RUNNING))
                    .with_for_update()
                ).first()
                if running is None:
                    raise _Rollback()
                for workerID, jobID in jobIDs.items():
                    worker = and_(workers.c.CalibrationID == calibrationID, workers.c.WorkerID == workerID)
                    registered = conn.execute(
                        update(workers).where(and_(worker, workers.c.JobID.is_(None))).values(JobID=jobID)
                    ).rowcount
                    if registered != 1:
                        raise _Rollback()
                    submitted = conn.execute(
                        update(workers).where(and_(worker, workers.c.Status == WorkerStatus.CREATED))
                        .values(Status=WorkerStatus.SUBMITTED)
                    ).rowcount
                    if submitted:
                        ids = f"worker {workerID} of calibration {calibrationID} (step {running.Step})"
                        changes.append(transition(WORKER, WorkerStatus.CREATED, WorkerStatus.SUBMITTED, ids))
        except _Rollback:
            return False
        announce(changes)
        return True

    def updateWorkers(self, calibrationID: int, updates: Mapping[int, Mapping[str, Any]]) -> None:
        """Several workers' fields in one transaction (the agent's resubmissions and verdicts);
        every new Status must follow the worker lifecycle, else none of the updates is stored."""
        allowed = {"JobID", "Status", "ApplicationStatus", "LastStep", "LastSeen", "Resubmissions"}
        for values in updates.values():
            unknown = set(values) - allowed
            if unknown:
                raise ValueError(f"unknown worker fields {sorted(unknown)}")
        changes = []
        # the same values for many workers (the answers of a thousand woken workers) are one
        # locking read and one update, not three statements per worker
        groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
        for workerID, values in updates.items():
            groups.setdefault(repr(sorted(values.items())), (dict(values), []))[1].append(workerID)
        with self.engine.begin() as conn:
            for values, workerIDs in groups.values():
                for chunk in (workerIDs[i:i + 500] for i in range(0, len(workerIDs), 500)):
                    old = _locked_statuses(conn, calibrationID, chunk)
                    if "Status" in values:
                        changes += _worker_transitions(conn, calibrationID, old, values["Status"])
                    conn.execute(
                        update(workers)
                        .where(and_(workers.c.CalibrationID == calibrationID, workers.c.WorkerID.in_(chunk)))
                        .values(**values)
                    )
        announce(changes)

    def attentionList(self) -> list[dict[str, Any]]:
        """Calibrations the agent looks after: running ones and ended ones not yet cleaned up."""
        query = select(calibrations).where(
            or_(calibrations.c.Status == RUNNING, calibrations.c.CleanupTime.is_(None))
        ).order_by(calibrations.c.CalibrationID)
        with self.engine.connect() as conn:
            return [_calibration_dict(row) for row in conn.execute(query).mappings()]

    def workerCounts(self, calibrationIDs: Sequence[int]) -> dict[int, dict[str, int]]:
        """Per calibration, how many workers are in each state."""
        if not calibrationIDs:
            return {}
        query = (
            select(workers.c.CalibrationID, workers.c.Status, func.count())
            .where(workers.c.CalibrationID.in_(list(calibrationIDs)))
            .group_by(workers.c.CalibrationID, workers.c.Status)
        )
        counts: dict[int, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for calibrationID, status, n in conn.execute(query):
                counts.setdefault(int(calibrationID), {})[status] = int(n)
        return counts

    # ---------------------------------------------------------------- files
    def getFile(self, calibrationID: int, name: str) -> bytes:
        with self.engine.connect() as conn:
            blob = conn.execute(
                select(files.c.Content).where(and_(files.c.CalibrationID == calibrationID, files.c.Name == name))
            ).scalar()
        if blob is None:
            raise CalibrationDBError(f"calibration {calibrationID} has no file {name!r}")
        return zlib.decompress(blob)

    def putFile(self, calibrationID: int, name: str, content: bytes) -> None:
        with self.engine.begin() as conn:
            _put_file(conn, calibrationID, name, content, now())

    def listFiles(self, calibrationID: int) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(files.c.Name).where(files.c.CalibrationID == calibrationID)).scalars())

    # ---------------------------------------------------------------- clean-up
    def deleteCalibrationData(self, calibrationID: int, keepPrefix: str) -> None:
        """Drop the bulky working data (worker reports, input and intermediate files) of an ended
        calibration; keep the step history and the files whose name starts with ``keepPrefix``."""
        with self.engine.begin() as conn:
            conn.execute(delete(results).where(results.c.CalibrationID == calibrationID))
            conn.execute(
                delete(files).where(and_(files.c.CalibrationID == calibrationID, ~files.c.Name.startswith(keepPrefix)))
            )
            conn.execute(
                update(calibrations).where(calibrations.c.CalibrationID == calibrationID).values(CleanupTime=now())
            )


#: Columns later versions added: (table, column, the constant statement that adds it).
#: ``create_all`` only creates missing tables, so the service brings an older database up to date
#: when it starts; no SQL is built from strings.
_LATER_COLUMNS = (
    ("Steps", "ClaimedBy", "ALTER TABLE Steps ADD COLUMN ClaimedBy VARCHAR(128) NULL"),
    ("Steps", "ClaimedAt", "ALTER TABLE Steps ADD COLUMN ClaimedAt DATETIME NULL"),
    ("Steps", "CloseAttempts", "ALTER TABLE Steps ADD COLUMN CloseAttempts INTEGER NOT NULL DEFAULT 0"),
    ("Steps", "CloseError", "ALTER TABLE Steps ADD COLUMN CloseError TEXT NULL"),
    ("Calibrations", "NotificationTime", "ALTER TABLE Calibrations ADD COLUMN NotificationTime DATETIME NULL"),
)


def _add_missing_columns(engine: Engine) -> None:
    """Add the columns of ``_LATER_COLUMNS`` an older database lacks; a column another replica
    added meanwhile is fine."""

    def present(table: str, column: str) -> bool:
        return column in {c["name"] for c in inspect(engine).get_columns(table)}

    for table, column, statement in _LATER_COLUMNS:
        if present(table, column):
            continue
        try:
            with engine.begin() as conn:
                conn.execute(DDL(statement))
        except DBAPIError:
            if not present(table, column):
                raise


def closer_host() -> str:
    """This host, as a closer's name in a step's ClaimedBy starts."""
    return socket.gethostname()[:60]


def closer_name() -> str:
    """Who closes (host:pid:thread), as stored in a step's ClaimedBy."""
    return f"{closer_host()}:{os.getpid()}:{threading.get_ident()}"


def _claimable(claimTimeout: float, *, ready: bool):
    """A step a closer may claim: of a running calibration, open (with enough results if
    ``ready``), or closing under a claim older than ``claimTimeout`` seconds (its closer died)."""
    stale = now() - datetime.timedelta(seconds=claimTimeout)
    isOpen = steps.c.Status == OPEN
    if ready:
        isOpen = and_(isOpen, calibrations.c.ResultsNeeded <= steps.c.NResults)
    return exists().where(and_(
        calibrations.c.CalibrationID == steps.c.CalibrationID,
        calibrations.c.Status == RUNNING,
        or_(isOpen, and_(steps.c.Status == CLOSING, steps.c.ClaimedAt < stale)),
    )).correlate(steps)


def _claimed(calibrationID: int, step: int, claim: str):
    return and_(steps.c.CalibrationID == calibrationID, steps.c.Step == step, steps.c.Status == CLOSING,
                steps.c.ClaimedBy == claim)


def _open_step(
    conn: Connection, calibrationID: int, step: int, phases: Sequence[str], constants: Any, stamp, inputs=None
) -> None:
    conn.execute(
        insert(steps).values(
            CalibrationID=calibrationID,
            Step=step,
            Phases=",".join(phases),
            Constants=dumps(constants),
            Inputs=dumps(dict(inputs or {})),
            Status=OPEN,
            NResults=0,
            CloseAttempts=0,
            OpenTime=stamp,
        )
    )


def _locked_statuses(conn: Connection, calibrationID: int, workerIDs: list[int]) -> dict[int, str]:
    """The workers' stored statuses, their rows locked until the commit; CalibrationDBError
    names the first worker the calibration does not have."""
    old = dict(conn.execute(
        select(workers.c.WorkerID, workers.c.Status)
        .where(and_(workers.c.CalibrationID == calibrationID, workers.c.WorkerID.in_(workerIDs)))
        .with_for_update()
    ).all())
    missing = sorted(set(workerIDs) - set(old))
    if missing:
        raise CalibrationDBError(f"calibration {calibrationID} has no worker {missing[0]}")
    return old


def _worker_transitions(conn: Connection, calibrationID: int, old: Mapping[int, str], new: str) -> list[Change | None]:
    """Check workers' status changes (from their ``old`` statuses, locked) against the lifecycle."""
    step = conn.execute(select(calibrations.c.Step).where(calibrations.c.CalibrationID == calibrationID)).scalar()
    return [transition(WORKER, status, new, f"worker {w} of calibration {calibrationID} (step {step})")
            for w, status in old.items()]


def _put_file(conn: Connection, calibrationID: int, name: str, content: bytes, stamp) -> None:
    conn.execute(delete(files).where(and_(files.c.CalibrationID == calibrationID, files.c.Name == name)))
    conn.execute(
        insert(files).values(CalibrationID=calibrationID, Name=name, Content=zlib.compress(content), CreationTime=stamp)
    )


def _calibration_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    for column in ("Settings", "State"):
        if column in data:
            data[column] = json.loads(data[column])
    return data


def _step_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    data["Phases"] = [p for p in data["Phases"].split(",") if p]
    data["Constants"] = json.loads(data["Constants"])
    data["Inputs"] = json.loads(data["Inputs"])
    data["Outcome"] = json.loads(data["Outcome"]) if data["Outcome"] else None
    return data


def _make_engine(url: str, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapiConnection, _record):
            # Let SQLAlchemy issue BEGIN; start write transactions IMMEDIATE so that two closers
            # serialise instead of failing on lock upgrade.
            dbapiConnection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_recycle=3600)


#: The database's name in the CS, as DIRAC's database helpers take it (``<System>/<DB>``).
DB_NAME = "Calibration/CalibrationDB"


def mysql_url(host: str, port: int, user: str, password: str, dbName: str) -> str:
    auth = quote_plus(user) + (":" + quote_plus(password) if password else "")
    return f"mysql+mysqldb://{auth}@{host}:{int(port)}/{dbName}?charset=utf8mb4"


def url_from_cs() -> str:
    """The database URL from the DIRAC configuration: MariaDB through DIRAC's own reading of a
    database section (``getDBParameters``: the section's Host, Port, User, Password and DBName,
    falling back to /Systems/Databases) if a Host is configured, else an SQLite file."""
    import os

    from DIRAC import gConfig, rootPath
    from DIRAC.ConfigurationSystem.Client.PathFinder import getDatabaseSection
    from DIRAC.ConfigurationSystem.Client.Utilities import getDBParameters

    section = getDatabaseSection(DB_NAME)
    if not gConfig.getValue(f"{section}/Host", gConfig.getValue("/Systems/Databases/Host", "")):
        path = gConfig.getValue(
            f"{section}/SQLitePath", os.path.join(rootPath, "work", "Calibration", "CalibrationDB.sqlite")
        )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return f"sqlite+pysqlite:///{os.path.abspath(path)}"
    result = getDBParameters(DB_NAME)
    if not result["OK"]:
        raise CalibrationDBError(f"{section}: {result['Message']}")
    parameters = result["Value"]
    return mysql_url(parameters["Host"], parameters["Port"], parameters["User"], parameters["Password"],
                     parameters["DBName"])
