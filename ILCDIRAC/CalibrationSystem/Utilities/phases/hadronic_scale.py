"""Phase 4, hadronic scale by the chi-square method: HCalToHadGeVCalibration and
ECalToHadGeVCalibrationBarrel (= EndCap) from 50 GeV K0L.

Sample: single K0L (kaonEnergy, 50 GeV); target is the kinetic energy T = E - m(K0L).
Selection (workers): one target, a neutral hadron, reconstructed as exactly one PFO that is a
  neutral hadron, starting well inside the HCAL: pfoMinHCalLayerToEdge > ceil(0.1 nHcalLayers).
  Workers send the per-event pairs (pfoECalToHadEnergy, pfoHCalToHadEnergy) of these events.
Selection (service): a 3-sigma band around the ideal line E_E/T + E_H/T = 1, sigma = 0.55 sqrt(E).
Estimator: chi-square method — the intercept pair (I_E, I_H) on the grid
  I = T/2 + E acc k minimising the summed squared, error-weighted distances of the events to the
  line E_E/I_E + E_H/I_H = 1.
Update: HCalToHad' = T HCalToHad / I_H; ECalToHadBarrel' = T ECalToHadBarrel / I_E; EndCap := Barrel.
Converged: max(|I_E - T|, |I_H - T|) / T < pandoraPFAAccuracy.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.estimators import chi_square_hadronic_scale, csm_band_selection
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import (
    K0L_MASS,
    Constants,
    Measurement,
    Phase,
    PhaseContext,
    SampleOutput,
)
from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary, SummarySpec

#: Offline fixed-point iterations of the chi-square method before giving up on replaying.
SOLVE_ITERATIONS = 30
#: Relative distance of both intercepts from the target at which the offline replay stops.
SOLVE_PRECISION = 1e-4


class HadronicScale(Phase):
    number = 4
    name = "HadronicEnergy"
    samples = ("kaon",)
    dependsOn = (0, 1, 2)
    branches = {
        "kaon": (
            "nPfoTargetsTotal",
            "nPfoTargetsNeutralHadrons",
            "nPfosTotal",
            "nPfosNeutralHadrons",
            "pfoMinHCalLayerToEdge",
            "pfoECalToHadEnergy",
            "pfoHCalToHadEnergy",
        )
    }
    fits = ("HCalToHadGeVCalibration", "ECalToHadGeVCalibrationBarrel", "ECalToHadGeVCalibrationEndCap")

    def spec(self, ctx: PhaseContext) -> SummarySpec:
        return SummarySpec(arrays=("eEcal", "eHcal"))

    def reduce(self, outputs: Mapping[str, SampleOutput], ctx: PhaseContext) -> Summary:
        tree = outputs["kaon"]
        minLayers = math.ceil(round(0.1 * ctx.nHcalLayers, 9))
        selected = (
            (np.asarray(tree["nPfoTargetsTotal"]) == 1)
            & (np.asarray(tree["nPfoTargetsNeutralHadrons"]) == 1)
            & (np.asarray(tree["nPfosTotal"]) == 1)
            & (np.asarray(tree["nPfosNeutralHadrons"]) == 1)
            & (np.asarray(tree["pfoMinHCalLayerToEdge"]) > minLayers)
        )
        summary = self.spec(ctx).empty()
        summary.arrays["eEcal"] = np.asarray(tree["pfoECalToHadEnergy"], dtype=np.float32)[selected]
        summary.arrays["eHcal"] = np.asarray(tree["pfoHCalToHadEnergy"], dtype=np.float32)[selected]
        summary.nEvents = int(selected.size)
        return summary

    def measure(self, merged: Summary, ctx: PhaseContext, *, grid: bool = True) -> Measurement:
        energy = ctx.energies["kaon"]
        target = energy - K0L_MASS
        eEcal, eHcal = merged.arrays["eEcal"].astype(float), merged.arrays["eHcal"].astype(float)
        band = csm_band_selection(eEcal, eHcal, target)
        result = chi_square_hadronic_scale(
            eEcal[band], eHcal[band], target, ctx.pandoraPFAAccuracy, beamEnergy=energy, grid=grid
        )
        if not result.ok:
            return Measurement({}, ok=False, reason=f"chi-square hadronic scale: {result.reason}")
        return Measurement(
            {"interceptEcal": result.interceptEcal, "interceptHcal": result.interceptHcal, "events": float(band.sum())},
            {"interceptEcal": result.interceptEcalError, "interceptHcal": result.interceptHcalError},
        )

    def smooth_measure(self, merged: Summary, ctx: PhaseContext) -> Measurement:
        return self.measure(merged, ctx, grid=False)

    def update(self, constants: Constants, measurement: Measurement, ctx: PhaseContext) -> Constants:
        target = ctx.energies["kaon"] - K0L_MASS
        ecal = target * float(constants["ECalToHadGeVCalibrationBarrel"]) / measurement.values["interceptEcal"]
        return {
            "HCalToHadGeVCalibration": target * float(constants["HCalToHadGeVCalibration"])
            / measurement.values["interceptHcal"],
            "ECalToHadGeVCalibrationBarrel": ecal,
            "ECalToHadGeVCalibrationEndCap": ecal,
        }

    def solve(self, constants: Constants, merged: Summary, ctx: PhaseContext) -> Constants | None:
        """Offline replay of the chi-square method on this step's events.

        A neutral-hadron PFO has E = a x + b y (x, y: its digitised ECAL and HCAL hit energies,
        a = ECalToHad, b = HCalToHad), split as E_E = f E, E_H = (1 - f) E with f = x / (x + y),
        which does not depend on a and b. So for trial scales (a', b') every event's pair is
        (E_E, E_H) (a' f + b' (1 - f)) / (a f + b (1 - f)), the band selection and the exact
        estimator can be re-run, and the update iterated to the estimator's fixed point without
        another pass over the samples. The continuous estimator is iterated (the grid's steps
        would make the ratio update cycle between grid points); the confirming pass then measures
        with the original grid estimator."""
        target = ctx.energies["kaon"] - K0L_MASS
        eEcal, eHcal = merged.arrays["eEcal"].astype(float), merged.arrays["eHcal"].astype(float)
        total = eEcal + eHcal
        keep = total > 0
        eEcal, eHcal, total = eEcal[keep], eHcal[keep], total[keep]
        if not total.size:
            return None
        fraction = eEcal / total
        a0, b0 = float(constants["ECalToHadGeVCalibrationBarrel"]), float(constants["HCalToHadGeVCalibration"])
        response0 = a0 * fraction + b0 * (1 - fraction)
        trial = dict(constants)
        for _ in range(SOLVE_ITERATIONS):
            a, b = float(trial["ECalToHadGeVCalibrationBarrel"]), float(trial["HCalToHadGeVCalibration"])
            scale = (a * fraction + b * (1 - fraction)) / response0
            trialEvents = self.spec(ctx).empty()
            trialEvents.arrays["eEcal"], trialEvents.arrays["eHcal"] = eEcal * scale, eHcal * scale
            measurement = self.smooth_measure(trialEvents, ctx)
            if not measurement.ok:
                return None
            updated = self.update(trial, measurement, ctx)
            trial = {**trial, **updated}
            deviation = max(abs(measurement.values[k] / target - 1) for k in self.targets(ctx))
            if deviation < SOLVE_PRECISION:
                return {key: trial[key] for key in self.fits}
        return None

    def targets(self, ctx: PhaseContext) -> dict[str, float]:
        target = ctx.energies["kaon"] - K0L_MASS
        return {"interceptEcal": target, "interceptHcal": target}

    def tolerance(self, ctx: PhaseContext) -> float:
        return ctx.pandoraPFAAccuracy * (ctx.energies["kaon"] - K0L_MASS)
