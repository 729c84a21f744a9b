"""Statistical uncertainty of every updated constant, from the workers' reports.

The workers are split into at most ``GROUPS`` contiguous groups; the phase's estimator (its
unquantised form, ``smooth_measure``, so that grid steps do not hide the spread) and update rule
are re-run on the merged reports without each group in turn (a grouped jackknife). This suits the
non-linear estimators (fits, the chi-square method) that a single worker's events could not
feed, and costs ``GROUPS`` extra estimates per phase and step.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.estimators import jackknife_error
from ILCDIRAC.CalibrationSystem.Utilities.phases import Phase, PhaseContext
from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary, SummarySpec

GROUPS = 8


def constant_uncertainties(
    phase: Phase, ctx: PhaseContext, constants: dict[str, Any], summaries: Sequence[Summary], spec: SummarySpec
) -> dict[str, float]:
    """Constant name -> jackknife standard error of its updated value (empty if fewer than two
    groups could be estimated)."""
    groups = np.array_split(np.arange(len(summaries)), min(GROUPS, len(summaries)))
    estimates: dict[str, list[float]] = {}
    for left in groups:
        if len(groups) < 2:
            break
        kept = [summaries[i] for i in range(len(summaries)) if i not in set(left.tolist())]
        measurement = phase.smooth_measure(Summary.merge(kept, spec), ctx)
        if not measurement.ok:
            continue
        for name, value in phase.update(constants, measurement, ctx).items():
            estimates.setdefault(name, []).append(float(value[0] if isinstance(value, list) else value))
    return {
        name: jackknife_error(values)
        for name, values in estimates.items()
        if len(values) >= 2 and all(math.isfinite(v) for v in values)
    }
