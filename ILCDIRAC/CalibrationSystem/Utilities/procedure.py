"""The calibration as a state machine over (stage, phase, step), as pure functions.

The phase sequence is data (a list of "stage.phase" keys). A step measures one or more *active*
phases; a strategy decides which phases are active and how measurements become new constants.
The service stores a ``ProcedureState`` after every closed step and feeds the next step's
measurements back through ``advance``; nothing here knows about workers, DIRAC or databases.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.phases import Measurement, PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.strategies import Strategy, strategy_named

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"


@dataclass
class ProcedureState:
    """Everything the service must remember between steps (stored as JSON)."""

    sequence: list[str]
    constants: dict[str, Any]
    strategy: str
    maxIterationsPerPhase: int
    position: int = 0
    active: list[str] = field(default_factory=list)
    iterations: dict[str, int] = field(default_factory=dict)
    step: int = 1
    status: str = RUNNING
    reason: str = ""
    memory: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcedureState:
        return cls(**copy.deepcopy(dict(data)))

    @property
    def inputs(self) -> dict[str, str]:
        """Files produced by earlier steps that the reconstruction now uses (artifact -> stored name)."""
        return dict(self.memory.get("inputs", {}))

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
    status: str
    reason: str
    #: Files produced for later steps: stored name -> text (kept out of the JSON history).
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = copy.deepcopy(asdict(self))
        data["artifacts"] = sorted(self.artifacts)
        return data


def split_key(key: str) -> tuple[int, int]:
    stage, phase = key.split(".")
    return int(stage), int(phase)


def start(
    sequence: list[str], constants: Mapping[str, Any], strategy: str, maxIterationsPerPhase: int
) -> ProcedureState:
    """The state before the first step."""
    if not sequence:
        raise ValueError("the phase sequence is empty: nothing to calibrate")
    if len(set(sequence)) != len(sequence):
        raise ValueError(f"the phase sequence {sequence} names a phase twice")
    for key in sequence:
        phase_for(key)
    state = ProcedureState(list(sequence), copy.deepcopy(dict(constants)), strategy, maxIterationsPerPhase)
    state.active = strategy_named(strategy).plan(state)
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
                new.memory.setdefault("inputs", {})[name] = stored
    skipped: list[str] = []
    if new.status == RUNNING:
        new.memory["completed"] = sorted(set(completed) | set(new.memory.get("completed", [])))
        skipped = strategy.skip(new)
        new.memory["completed"] = sorted(set(new.memory["completed"]) | set(skipped))
        done = set(new.memory["completed"])
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
