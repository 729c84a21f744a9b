"""The uncertainty of every constant a step settles, from the step's own merged reports.

A constant estimates the estimators' fixed point: the value at which the phase's estimator would
find its target on an unlimited sample (given the constants of the phases before it, which act
together with it in the reconstruction). Its distance from that point has two parts, both
measured here and added in quadrature:

- the sample's statistics, through the estimator, the update rule and the offline replay: a
  Poisson bootstrap of the merged fixed-size summary (every bin count redrawn,
  ``Summary.resampled``) re-runs the phase's fixed-point estimate (``Phase.fixed_point``)
  ``REPLICAS`` times; their standard deviation. The replicas need neither workers nor their
  number (it works for one worker as for a thousand) and follow the non-smooth parts of the
  estimators (rms90 windows, highest bins, the band selection) that a linear error propagation
  or a jackknife would not;
- what the strategy's update left between the constant it returned and the fixed-point estimate
  on the same events: the original grid's quantisation, a legacy step accepted within tolerance,
  a fast step that stopped within its errors.

Deterministic: the random numbers are seeded by the step and phase, so a close stays a pure
function of the stored reports.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.phases import PHASES, Phase, PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary

#: Bootstrap replicas per phase and step: the standard deviation comes out within about 7 %.
REPLICAS = 100
#: Below this fraction of replicas the estimator could measure, no uncertainty is claimed.
MIN_SUCCESSFUL = 0.9


def step_uncertainties(
    keys: list[str],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    merged: Mapping[str, Summary],
    ctx: PhaseContext,
    step: int,
) -> dict[str, float]:
    """Constant name -> uncertainty of the value it has after the step (``after``), for every
    constant the step's phases fit.

    A phase measured with constants that this very step replaced (the fast strategy runs phases
    together with their dependencies and predicts or confirms later) gets none here: its value is
    provisional, and the confirming step measures it."""
    changed = {name for name, value in after.items() if before.get(name) != value}
    uncertainties: dict[str, float] = {}
    for key in keys:
        phase = phase_for(key)
        dependencies = {name for number in phase.dependsOn for name in PHASES[number].fits}
        if not phase.fits or dependencies & changed:
            continue
        uncertainties.update(constant_uncertainties(phase, ctx, before, merged[key], after, seed=f"{step}:{key}"))
    return uncertainties


def constant_uncertainties(
    phase: Phase, ctx: PhaseContext, measuredWith: Mapping[str, Any], merged: Summary, returned: Mapping[str, Any],
    *, seed: str, replicas: int = REPLICAS,
) -> dict[str, float]:
    """Constant name -> uncertainty of ``returned[name]`` for the constants ``phase`` fits, from
    events reconstructed with ``measuredWith`` (empty if the estimator cannot measure them)."""
    central = phase.fixed_point(dict(measuredWith), merged, ctx)
    if central is None:
        return {}
    spec = phase.spec(ctx)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little"))
    samples: dict[str, list[float]] = {name: [] for name in central}
    for _ in range(replicas):
        replica = phase.fixed_point(dict(measuredWith), merged.resampled(spec, rng), ctx, start=central)
        if replica is None:
            continue
        for name in central:
            samples[name].append(_first(replica[name]))
    uncertainties = {}
    for name, values in samples.items():
        if len(values) < MIN_SUCCESSFUL * replicas or name not in returned:
            continue
        spread = float(np.std(values, ddof=1))
        left = _first(returned[name]) - _first(central[name])
        total = math.hypot(spread, left)
        if math.isfinite(total):
            uncertainties[name] = total
    return uncertainties


def _first(value: Any) -> float:
    """A constant's fitted value (the first of a list such as CalibrECAL = [thin, thick])."""
    return float(value[0] if isinstance(value, (list, tuple)) else value)
