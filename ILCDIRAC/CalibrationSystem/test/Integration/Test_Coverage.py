"""Issue 12's coverage test: do the reported uncertainties cover?

A dozen repeats of two calibrations of CLD on independent samples (4 workers x 1000 photons and
K0L each; digitisation 1.0-1.1 at 2 %, EM and hadronic scales 1.3-1.4 at 0.5 % with the offline
replay), every constant judged against the estimators' fixed point from the other repeats' events
(``test/coverage.py``). About 68 % of the 84 constants must land within one reported sigma and
none beyond four; the repeats are deterministic (seeded samples, seeded bootstrap).
``benchmarks/coverage.py`` runs more repeats and both strategies.
"""
import math

import numpy as np
import pytest

from ILCDIRAC.CalibrationSystem.localdirac.configurations import CONFIGURATIONS
from ILCDIRAC.CalibrationSystem.test import coverage
from ILCDIRAC.CalibrationSystem.Utilities.power import expected_power

REPEATS = 12
CLD = next(c for c in CONFIGURATIONS if c.name == "CLD")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coverage")
    return {name: [coverage.calibrate(CLD, name, "fast", 100 + r, folder) for r in range(REPEATS)]
            for name in coverage.CALIBRATIONS}


def test_about_68_percent_of_the_constants_within_one_sigma_none_beyond_four(runs):
    pulls = [p for group in runs.values() for p in coverage.pulls(group, group)]
    assert len(pulls) == REPEATS * (len(coverage.DIGITISATION) + len(coverage.PANDORA))
    z = np.abs([p.pull for p in pulls])
    worst = pulls[int(np.argmax(z))]
    # 84 pulls: the fraction's binomial spread is 0.05; [0.52, 0.84] is three of them either side
    assert 0.52 <= np.mean(z < 1) <= 0.84, sorted(z)
    assert z.max() < 4, worst


def test_every_judged_constant_moved_far_more_than_its_uncertainty(runs):
    """Not covered by being vague: the constants moved by more than 5 % (10-15 % in truth) and
    their typical uncertainty is below 1 %. (One sample's may be larger: 333 K0L in the HCAL
    endcap, a flat-topped peak, give a fit whose rms90 window jumps, and the bootstrap says so.)"""
    for name, group in runs.items():
        for constant in coverage.CALIBRATIONS[name][1]:
            relative = []
            for run in group:
                value = coverage._first(run.constants[constant])
                assert abs(value / coverage._first(run.starting[constant]) - 1) > 0.05, (run.seed, constant)
                relative.append(run.uncertainties[constant] / abs(value))
            assert 0 < min(relative) and np.median(relative) < 0.01, (constant, relative)


def test_the_dry_run_estimate_is_what_the_calibrations_measured(runs):
    for name, group in runs.items():
        estimates = {e.constant: e for e in expected_power(group[0].settings)}
        for constant in coverage.CALIBRATIONS[name][1]:
            measured = np.mean([run.uncertainties[constant] / abs(coverage._first(run.constants[constant])) for run in group])
            assert estimates[constant].relative == pytest.approx(measured, rel=0.4), constant
            assert math.isfinite(estimates[constant].relative)
