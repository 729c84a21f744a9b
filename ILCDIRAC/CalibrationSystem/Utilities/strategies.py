"""How measurements become new constants, and which phases one pass over the samples measures.

``legacy`` is the original procedure: one phase per step, in sequence order; a phase advances
when the means measured with the step's constants are within tolerance, and the ratio update is
applied on that step too (so a phase that starts outside tolerance needs at least two steps).

``fast`` (the default) reaches the same constants in far fewer passes:
- *proportional phases are trusted*: the digitisation observables scale exactly with their
  constants, so the ratio update lands on target and needs no confirming pass;
- *independent phases share a pass*: ECAL and HCAL digitisation and the MIP scales run together
  (the MIP scales are predicted for the new digitisation constants, then confirmed while the EM
  and hadronic scales are measured);
- *offline replay*: the EM and hadronic scales are solved on the pass's own events for the
  estimator's fixed point, so one further pass only confirms them;
- *statistical stopping*: a phase whose measured values are within two statistical errors of
  their targets is done, without following the noise (the original would cycle for ever when
  the estimator's own quantisation exceeds the tolerance);
- *speculative training*: the photon-likelihood training (stage 2) runs in the confirming pass
  and is kept when the confirmation holds;
- *no redundant stage-3 passes*: stage 3 repeats only the phases the photon likelihood can
  change (EM and hadronic scales): digitisation and MIP scales depend on calorimeter hits only,
  and are skipped when their constants are unchanged since stage 1 settled them.
Which phase may join which is data (``COMPANIONS``); everything else follows from the phases'
own declarations (proportional, dependsOn, solve, predict).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ILCDIRAC.CalibrationSystem.Utilities.phases import Measurement, PhaseContext, phase_for

if TYPE_CHECKING:
    from ILCDIRAC.CalibrationSystem.Utilities.procedure import ProcedureState

PHOTON_TRAINING = 5
#: Phase number -> phase numbers that may share a pass with it when it is the first pending phase.
COMPANIONS: dict[int, tuple[int, ...]] = {0: (1, 2), 1: (2,), 2: (3, 4), 3: (4, PHOTON_TRAINING), 4: (PHOTON_TRAINING,)}
#: Phases whose observables come from calorimeter hits only, not from the photon likelihood.
LIKELIHOOD_INDEPENDENT = (0, 1, 2)


def _number(key: str) -> int:
    return int(key.split(".")[1])


def _stage(key: str) -> int:
    return int(key.split(".")[0])


class Strategy(Protocol):
    name: str

    def skip(self, state: ProcedureState) -> list[str]:
        """Pending phases that need no pass at all (recorded as completed without measuring)."""

    def plan(self, state: ProcedureState) -> list[str]:
        """The phases measured in the next step."""

    def conclude(self, state: ProcedureState, measurements: Mapping[str, Measurement], ctx: PhaseContext) -> list[str]:
        """Update ``state.constants`` in place from the step's measurements; return the phases completed."""


class Legacy:
    name = "legacy"

    def skip(self, state: ProcedureState) -> list[str]:
        return []

    def plan(self, state: ProcedureState) -> list[str]:
        return [state.sequence[state.position]]

    def conclude(self, state: ProcedureState, measurements: Mapping[str, Measurement], ctx: PhaseContext) -> list[str]:
        completed = []
        for key in state.active:
            phase, measurement = phase_for(key), measurements[key]
            state.constants.update(phase.update(state.constants, measurement, ctx))
            if phase.converged(measurement, ctx):
                completed.append(key)
        return completed


class Fast:
    name = "fast"

    def skip(self, state: ProcedureState) -> list[str]:
        done = set(state.memory.get("completed", []))
        settled = state.memory.get("settled", {})
        skipped = []
        for key in state.sequence[state.position:]:
            number = _number(key)
            twin = next((k for k in settled if _number(k) == number and _stage(k) < _stage(key)), None)
            if key in done or number not in LIKELIHOOD_INDEPENDENT or twin is None:
                continue
            fits = phase_for(key).fits
            if all(state.constants.get(name) == settled[twin].get(name) for name in fits):
                skipped.append(key)
        return skipped

    def plan(self, state: ProcedureState) -> list[str]:
        done = set(state.memory.get("completed", []))
        provisional = set(state.memory.get("provisional", []))
        pending = [key for key in state.sequence[state.position:] if key not in done]
        first = pending[0]
        batch = [first]
        for key in pending[1:]:
            number = _number(key)
            if number not in COMPANIONS.get(_number(first), ()):
                continue
            if number == PHOTON_TRAINING:
                solved = [k for k in batch if _number(k) in (3, 4)]
                if not solved or not all(k in provisional for k in solved):
                    continue
            elif _stage(key) != _stage(first):
                continue
            batch.append(key)
        return batch

    def conclude(self, state: ProcedureState, measurements: Mapping[str, Measurement], ctx: PhaseContext) -> list[str]:
        measuredWith = copy.deepcopy(state.constants)
        provisional = set(state.memory.get("provisional", []))
        completed, changed = [], set()
        training = [key for key in state.active if _number(key) == PHOTON_TRAINING]
        for key in (k for k in state.active if k not in training):
            phase, measurement = phase_for(key), measurements[key]
            final = True
            updated: Mapping[str, Any]
            if any(number in changed for number in phase.dependsOn):
                # measured with constants this very pass has changed: predict, else solve; confirm later
                final = False
                predicted = phase.predict(measuredWith, state.constants, measurement, ctx)
                if predicted is None:
                    updated = measurement.solution or phase.update(measuredWith, measurement, ctx)
                else:
                    updated = predicted
            elif phase.proportional or not phase.iterative or phase.converged(measurement, ctx):
                updated = phase.update(measuredWith, measurement, ctx)
            elif phase.within_errors(measurement, ctx):
                updated = {}
            else:
                updated, final = (measurement.solution or phase.update(measuredWith, measurement, ctx)), False
            if any(state.constants.get(name) != value for name, value in updated.items()):
                changed.add(phase.number)
            state.constants.update(updated)
            if final:
                completed.append(key)
                provisional.discard(key)
            else:
                provisional.add(key)
        if training and all(key in completed for key in state.active if key not in training):
            completed.extend(training)
        state.memory["provisional"] = sorted(provisional)
        settled = state.memory.setdefault("settled", {})
        for key in completed:
            settled[key] = {name: copy.deepcopy(state.constants.get(name)) for name in phase_for(key).fits}
        return completed


STRATEGIES = {strategy.name: strategy for strategy in (Legacy(), Fast())}


def strategy_named(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}") from None
