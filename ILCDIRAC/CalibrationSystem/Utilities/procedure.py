"""The calibration as a state machine over (stage, phase, step), as pure functions.

The phase sequence is data (a list of "stage.phase" keys). A step measures one or more *active*
phases; a strategy decides which phases are active and how measurements become new constants.
The service stores a ``ProcedureState`` after every closed step and feeds the next step's
measurements back through ``advance``; nothing here knows about workers, DIRAC or databases.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.phases import Measurement, PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.strategies import Strategy, strategy_named
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus, StrategyName, plain

RUNNING, FINISHED, FAILED = CalibrationStatus.RUNNING, CalibrationStatus.FINISHED, CalibrationStatus.FAILED


@dataclass
class Memory:
    """What the procedure and its strategy remember about the phases between steps."""

    #: Phases done for good (measured to convergence or skipped), in key order.
    completed: list[str] = field(default_factory=list)
    #: Phases updated from a solution or prediction that a later pass must confirm (fast strategy).
    provisional: list[str] = field(default_factory=list)
    #: Per completed phase, the values of the constants it fits when it completed (fast strategy:
    #: a later stage's twin with unchanged constants needs no pass).
    settled: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Files produced by earlier steps that the reconstruction now uses (artifact -> stored name).
    inputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Memory:
        """From the stored JSON; states stored before a field existed lack its key."""
        return cls(**{f.name: copy.deepcopy(data[f.name]) for f in fields(cls) if f.name in data})


@dataclass
class ProcedureState:
    """Everything the service must remember between steps (stored as JSON)."""

    sequence: list[str]
    constants: dict[str, Any]
    strategy: StrategyName
    maxIterationsPerPhase: int
    position: int = 0
    active: list[str] = field(default_factory=list)
    iterations: dict[str, int] = field(default_factory=dict)
    step: int = 1
    #: Mirrors the Calibrations.Status column: the database changes both in one transaction.
    status: CalibrationStatus = RUNNING
    reason: str = ""
    memory: Memory = field(default_factory=Memory)

    def to_dict(self) -> dict[str, Any]:
        return plain(copy.deepcopy(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcedureState:
        values = copy.deepcopy(dict(data))
        values["strategy"] = StrategyName(values["strategy"])
        values["status"] = CalibrationStatus(values.get("status", RUNNING))
        values["memory"] = Memory.from_dict(values.get("memory") or {})
        return cls(**values)

    @property
    def inputs(self) -> dict[str, str]:
        """Files produced by earlier steps that the reconstruction now uses (artifact -> stored name)."""
        return dict(self.memory.inputs)

    @property
    def current(self) -> str | None:
        """The phase the calibration is on ("stage.phase"), None once it ended."""
        return self.active[0] if self.active else None


@dataclass(frozen=True)
class StepOutcome:
    """What one closed step did, for the history and the plots."""

    step: int
    active: list[str]
    measurements: dict[str, dict[str, Any]]
    constantsBefore: dict[str, Any]
    constantsAfter: dict[str, Any]
    completed: list[str]
    #: Phases completed without a pass of their own (their inputs are unchanged).
    skipped: list[str]
    status: CalibrationStatus
    reason: str
    #: Files produced for later steps: stored name -> text (kept out of the JSON history).
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = plain(copy.deepcopy(asdict(self)))
        data["artifacts"] = sorted(self.artifacts)
        return data


def start(
    sequence: list[str], constants: Mapping[str, Any], strategy: str, maxIterationsPerPhase: int
) -> ProcedureState:
    """The state before the first step (ValueError for an unknown strategy)."""
    if not sequence:
        raise ValueError("the phase sequence is empty: nothing to calibrate")
    if len(set(sequence)) != len(sequence):
        raise ValueError(f"the phase sequence {sequence} names a phase twice")
    for key in sequence:
        phase_for(key)
    chosen = strategy_named(strategy)
    state = ProcedureState(list(sequence), copy.deepcopy(dict(constants)), chosen.name, maxIterationsPerPhase)
    state.active = chosen.plan(state)
    return state


def advance(
    state: ProcedureState, measurements: Mapping[str, Measurement], ctx: PhaseContext
) -> tuple[ProcedureState, StepOutcome]:
    """Close the current step with the estimator outputs of its active phases."""
    if state.status != RUNNING:
        raise ValueError(f"calibration is {state.status}; no step to close")
    missing = [key for key in state.active if key not in measurements]
    if missing:
        raise ValueError(f"no measurement for active phases {missing}")
    strategy: Strategy = strategy_named(state.strategy)
    new = ProcedureState.from_dict(state.to_dict())
    for key in state.active:
        new.iterations[key] = new.iterations.get(key, 0) + 1

    failed = [
        f"{key} {phase_for(key).name}: {measurements[key].reason}" for key in state.active if not measurements[key].ok
    ]
    completed: list[str] = []
    if failed:
        new.status, new.reason = FAILED, "estimator failed in " + "; ".join(failed)
    else:
        completed = strategy.conclude(new, measurements, ctx)
        stuck = [
            key
            for key in state.active
            if key not in completed and new.iterations[key] >= new.maxIterationsPerPhase
        ]
        if stuck:
            new.status = FAILED
            new.reason = "; ".join(
                f"phase {key} ({phase_for(key).name}) did not converge in {new.iterations[key]} iterations"
                for key in stuck
            )
    artifacts = {}
    if new.status != FAILED:
        for key in completed:
            for name, text in measurements[key].artifacts.items():
                stored = f"step{state.step}_{name}"
                artifacts[stored] = text
                new.memory.inputs[name] = stored
    skipped: list[str] = []
    if new.status == RUNNING:
        new.memory.completed = sorted(set(completed) | set(new.memory.completed))
        skipped = strategy.skip(new)
        new.memory.completed = sorted(set(new.memory.completed) | set(skipped))
        done = set(new.memory.completed)
        while new.position < len(new.sequence) and new.sequence[new.position] in done:
            new.position += 1
        if new.position == len(new.sequence):
            new.status, new.active = FINISHED, []
        else:
            new.active = strategy.plan(new)
            new.step += 1
    else:
        new.active = []
    outcome = StepOutcome(
        step=state.step,
        active=list(state.active),
        measurements={key: measurements[key].to_dict() for key in state.active},
        constantsBefore=copy.deepcopy(state.constants),
        constantsAfter=copy.deepcopy(new.constants),
        completed=completed,
        skipped=skipped,
        status=new.status,
        reason=new.reason,
        artifacts=artifacts,
    )
    return new, outcome
