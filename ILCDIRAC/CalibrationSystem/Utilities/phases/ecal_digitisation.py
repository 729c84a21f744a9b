"""Phase 0, ECAL digitisation: CalibrECAL and ECALEndcapCorrectionFactor from 10 GeV photons.

Sample: single photons (gammaEnergy, 10 GeV).
Selection: exactly one target and it is a photon (no conversion); the shower is contained in the
  ECAL (TotalCaloHitEnergy - ECalTotalCaloHitEnergy < 1 % of E); the leading target's |cos(theta)|
  inside the barrel window or inside the endcap window (both below 0.95).
Histograms: ECalTotalCaloHitEnergy for barrel and endcap photons, finely binned (E/1000) on [0, 3E]
  so the reports of all workers add up; the service rebins the merged histogram to the original
  bin width (digitisationAccuracy * E on [0, max]).
Estimator: Gaussian fit inside the minimum-RMS window holding 90 % of the entries -> m_B, m_E.
Update: c_B' = E c_B / m_B; the effective endcap constant c_B k_EC scales by E / m_E, so
  k_EC' = (E c_B k_EC / m_E) / c_B'; CalibrECAL = [c_B', r c_B'] with r the thick-layer response
  correction (the thick constant is never fitted).
Converged: max(|m_B - E|, |m_E - E|) / E < digitisationAccuracy.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.estimators import gaussian_fit_mean, rebin_to_accuracy
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import (
    Constants,
    Measurement,
    Phase,
    PhaseContext,
    SampleOutput,
    fill,
    in_window,
    stochastic_precision,
    window_acceptance,
)
from ILCDIRAC.CalibrationSystem.Utilities.summary import HistSpec, Summary, SummarySpec

FINE_BINS_PER_E = 1000
RANGE_IN_E = 3.0
#: Statistical power (dry run): a region's fitted peak has this relative uncertainty times
#: 1 / sqrt(photons of an isotropic sample inside its cos(theta) window) at 10 GeV; measured on
#: the emulated CLD (benchmarks/coverage.py), it scales with the ECAL resolution, 1 / sqrt(E).
PEAK_SPREAD = 0.087
PEAK_SPREAD_ENERGY = 10.0


class EcalDigitisation(Phase):
    number = 0
    name = "ECalDigitisation"
    samples = ("gamma",)
    branches = {
        "gamma": (
            "nPfoTargetsTotal",
            "nPfoTargetsPhotons",
            "TotalCaloHitEnergy",
            "ECalTotalCaloHitEnergy",
            "pfoTargetCosTheta[0]",
        )
    }
    fits = ("CalibrECAL", "ECALEndcapCorrectionFactor")
    proportional = True

    def spec(self, ctx: PhaseContext) -> SummarySpec:
        energy = ctx.energies["gamma"]
        binning = HistSpec(int(FINE_BINS_PER_E * RANGE_IN_E), 0.0, RANGE_IN_E * energy)
        return SummarySpec(hists={"ecalBarrel": binning, "ecalEndcap": binning})

    def reduce(self, outputs: Mapping[str, SampleOutput], ctx: PhaseContext) -> Summary:
        tree = outputs["gamma"]
        energy = ctx.energies["gamma"]
        eEcal = np.asarray(tree["ECalTotalCaloHitEnergy"], dtype=float)
        absCos = np.abs(np.asarray(tree["pfoTargetCosTheta[0]"], dtype=float))
        single = (np.asarray(tree["nPfoTargetsTotal"]) == 1) & (np.asarray(tree["nPfoTargetsPhotons"]) == 1)
        contained = (np.asarray(tree["TotalCaloHitEnergy"], dtype=float) - eEcal < 0.01 * energy) & (absCos < 0.95)
        selected = single & contained
        return fill(
            self.spec(ctx),
            {
                "ecalBarrel": eEcal[selected & in_window(absCos, ctx.ecalBarrelCosThetaRange)],
                "ecalEndcap": eEcal[selected & in_window(absCos, ctx.ecalEndcapCosThetaRange)],
            },
            nEvents=eEcal.size,
        )

    def measure(self, merged: Summary, ctx: PhaseContext) -> Measurement:
        energy = ctx.energies["gamma"]
        values, errors, problems = {}, {}, []
        for region, key in (("barrel", "ecalBarrel"), ("endcap", "ecalEndcap")):
            counts, edges = rebin_to_accuracy(*merged.values(key), energy, ctx.digitisationAccuracy)
            fit = gaussian_fit_mean(counts, edges)
            if not fit.ok:
                problems.append(f"{region} ECAL photon peak: {fit.reason}")
                continue
            values[f"{region}Mean"] = fit.mean
            errors[f"{region}Mean"] = fit.meanError
        return Measurement(values, errors, ok=not problems, reason="; ".join(problems))

    def update(self, constants: Constants, measurement: Measurement, ctx: PhaseContext) -> Constants:
        energy = ctx.energies["gamma"]
        barrel = float(constants["CalibrECAL"][0])
        endcapEffective = barrel * float(constants["ECALEndcapCorrectionFactor"])
        newBarrel = energy * barrel / measurement.values["barrelMean"]
        newEndcapEffective = energy * endcapEffective / measurement.values["endcapMean"]
        return {
            "CalibrECAL": [newBarrel, ctx.ecalResponseCorrectionForThickLayers * newBarrel],
            "ECALEndcapCorrectionFactor": newEndcapEffective / newBarrel,
        }

    def expected_precision(self, ctx: PhaseContext, events) -> dict[str, tuple[str, float]]:
        """CalibrECAL follows the barrel peak; the endcap factor is the ratio of the two peaks."""
        photons, energy = events.get("gamma", 0), ctx.energies["gamma"]
        barrel, endcap = (
            stochastic_precision(PEAK_SPREAD, PEAK_SPREAD_ENERGY, energy, photons * window_acceptance(window))
            for window in (ctx.ecalBarrelCosThetaRange, ctx.ecalEndcapCosThetaRange)
        )
        return {"CalibrECAL": ("gamma", barrel), "ECALEndcapCorrectionFactor": ("gamma", math.hypot(barrel, endcap))}

    def targets(self, ctx: PhaseContext) -> dict[str, float]:
        energy = ctx.energies["gamma"]
        return {"barrelMean": energy, "endcapMean": energy}

    def tolerance(self, ctx: PhaseContext) -> float:
        return ctx.digitisationAccuracy * ctx.energies["gamma"]
