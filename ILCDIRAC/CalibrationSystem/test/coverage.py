"""Do the reported uncertainties cover? Calibrations repeated on independent samples, each
constant compared with the estimators' fixed point.

Every repeat runs two calibrations (in-process: service logic, real workers, the emulator) whose
upstream constants are fixed, so that the fixed point each constant aims at is the same for all
repeats:

- *digitisation*: phases 1.0 and 1.1 (CalibrECAL, ECALEndcapCorrectionFactor, CalibrHCALBarrel,
  CalibrHCALEndcap) from the detector model's starting constants, 10-15 % away;
- *Pandora scales*: phases 1.3 and 1.4 (ECalToEMGeVCalibration, ECalToHadGeVCalibrationBarrel,
  HCalToHadGeVCalibration) from the model's EM and hadronic constants, the digitisation
  constants at their true values.

The reference for repeat r is the phase's fixed-point estimate (``Phase.fixed_point``: the
offline replay or the update rule) on the first-step reports of all the *other* repeats merged:
every first step runs with the same starting constants, so these are reductions of independent
events reconstructed with identical constants, R - 1 times as many as one calibration has, and
none of repeat r's own. The reference's own statistical error is then about sigma / sqrt(R - 1),
so a pull is the distance over ``sigma * sqrt(1 + 1 / (R - 1))``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.localdirac.configurations import Configuration, true_starting_constants
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import make_samples, run_calibration
from ILCDIRAC.CalibrationSystem.logic.results import final_uncertainties
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary

DIGITISATION = ("CalibrECAL", "ECALEndcapCorrectionFactor", "CalibrHCALBarrel", "CalibrHCALEndcap")
PANDORA = ("ECalToEMGeVCalibration", "ECalToHadGeVCalibrationBarrel", "HCalToHadGeVCalibration")
#: name -> (phase sequence, the constants it is judged on)
CALIBRATIONS = {"digitisation": (["1.0", "1.1"], DIGITISATION), "pandora": (["1.3", "1.4"], PANDORA)}
SAMPLES = {"gamma": (4, 1000), "kaon": (4, 1000)}
ACCURACY = {"digitisationAccuracy": 0.02, "pandoraPFAAccuracy": 0.005}


@dataclass(frozen=True)
class Pull:
    constant: str
    strategy: str
    repeat: int
    value: float
    reference: float
    uncertainty: float
    #: The reference's own relative statistical weight: its variance over the constant's.
    referenceShare: float

    @property
    def pull(self) -> float:
        return (self.value - self.reference) / (self.uncertainty * math.sqrt(1 + self.referenceShare))


@dataclass
class Run:
    """One calibration of one repeat: its end and its first step's reports."""

    name: str
    strategy: str
    seed: int
    status: str
    reason: str
    constants: dict[str, Any]
    uncertainties: dict[str, float]
    firstReports: list[Any]
    starting: dict[str, Any]
    settings: dict[str, Any]


def calibrate(configuration: Configuration, name: str, strategy: str, seed: int, folder: Path,
              samples: Mapping[str, tuple[int, int]] = SAMPLES) -> Run:
    sequence, _ = CALIBRATIONS[name]
    truth = configuration.truth()
    settings: dict[str, Any] = {
        "detectorModel": configuration.model,
        "numberOfJobs": max(n for n, _ in samples.values()),
        "marlinExecutable": "marlin-emulator",
        "strategy": strategy,
        "phaseSequence": sequence,
        "fractionOfFinishedJobsNeededToStartNextStep": 1.0,
        **ACCURACY,
        **configuration.settings,
        **make_samples(truth, folder / f"samples_{seed}", samples, seed=seed),
    }
    if name == "pandora":
        true = true_starting_constants(truth)
        settings["startingConstants"] = {key: true[key] for key in DIGITISATION + ("CalibrHCALOther",)}
    outcome = run_calibration(settings, folder / f"{name}_{strategy}_{seed}")
    db = CalibrationDB(f"sqlite+pysqlite:///{folder / f'{name}_{strategy}_{seed}' / 'calibration.sqlite'}")
    calibration = db.getCalibration(outcome.calibrationID)
    return Run(name, strategy, seed, outcome.status, outcome.reason, outcome.constants, final_uncertainties(outcome.steps),
               [payload for _, payload in db.getResults(outcome.calibrationID, 1)],
               dict(outcome.steps[0]["Constants"]), dict(calibration["Settings"]))


def references(runs: Sequence[Run], leftOut: int) -> dict[str, float]:
    """The fixed point of every judged constant from the first-step reports of every run of
    ``runs`` (same calibration, same starting constants, ``fast`` strategy) but seed ``leftOut``."""
    others = [run for run in runs if run.seed != leftOut]
    first = others[0]
    ctx = PhaseContext.from_settings(first.settings)
    reference: dict[str, float] = {}
    for key in CALIBRATIONS[first.name][0]:
        phase = phase_for(key)
        spec = phase.spec(ctx)
        merged = Summary.merge_payloads((payload["phases"][key] for run in others for payload in run.firstReports), spec)
        fixed = phase.fixed_point(first.starting, merged, ctx)
        if fixed is None:
            raise AssertionError(f"no fixed point for phase {key} on {len(others)} repeats' events")
        reference.update({name: _first(value) for name, value in fixed.items()})
    return reference


def pulls(runs: Sequence[Run], pool: Sequence[Run]) -> list[Pull]:
    """Every judged constant of ``runs`` against the leave-one-out references from ``pool`` (the
    ``fast`` runs of the same calibration, whose first step measures all its phases at once)."""
    result = []
    share = 1.0 / (len({run.seed for run in pool}) - 1)
    for run in runs:
        if run.status != "finished":
            raise AssertionError(f"{run.name} {run.strategy} seed {run.seed} ended {run.status}: {run.reason}")
        reference = references(pool, run.seed)
        for constant in CALIBRATIONS[run.name][1]:
            if constant not in run.uncertainties:
                raise AssertionError(f"{run.name} {run.strategy} seed {run.seed}: no uncertainty for {constant}")
            result.append(Pull(constant, run.strategy, run.seed, _first(run.constants[constant]), reference[constant],
                               run.uncertainties[constant], share))
    return result


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, (list, tuple)) else value)
