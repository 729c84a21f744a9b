"""How measurements become new constants and which phases run in the next step.

``legacy`` is the original procedure: one phase per step; the advance test looks at the means
measured with the step's constants, and the ratio update is applied on that step too (so a phase
that starts outside tolerance needs at least two steps).

``fast`` (the default) trusts phases whose observables are proportional to their constants by
construction (the digitisation phases): the ratio update lands on target in one step, so the
confirming pass is skipped.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Protocol

from ILCDIRAC.CalibrationSystem.Utilities.phases import Measurement, PhaseContext, phase_for

if TYPE_CHECKING:
    from ILCDIRAC.CalibrationSystem.Utilities.procedure import ProcedureState


class Strategy(Protocol):
    name: str

    def plan(self, state: "ProcedureState") -> list[str]:
        """The phases measured in the next step."""

    def conclude(self, state: "ProcedureState", measurements: Mapping[str, Measurement], ctx: PhaseContext) -> list[str]:
        """Update ``state.constants`` in place from the step's measurements; return the phases completed."""


class Legacy:
    name = "legacy"

    def plan(self, state: "ProcedureState") -> list[str]:
        return [state.sequence[state.position]]

    def conclude(self, state: "ProcedureState", measurements: Mapping[str, Measurement], ctx: PhaseContext) -> list[str]:
        completed = []
        for key in state.active:
            phase, measurement = phase_for(key), measurements[key]
            state.constants.update(phase.update(state.constants, measurement, ctx))
            if phase.converged(measurement, ctx):
                completed.append(key)
        return completed


class Fast(Legacy):
    name = "fast"

    def conclude(self, state: "ProcedureState", measurements: Mapping[str, Measurement], ctx: PhaseContext) -> list[str]:
        completed = super().conclude(state, measurements, ctx)
        return completed + [key for key in state.active if key not in completed and phase_for(key).proportional]


STRATEGIES = {strategy.name: strategy for strategy in (Legacy(), Fast())}


def strategy_named(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}") from None
