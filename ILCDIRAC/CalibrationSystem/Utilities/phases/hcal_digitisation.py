"""Phase 1, HCAL digitisation: CalibrHCALBarrel and CalibrHCALEndcap from 50 GeV K0L.

Sample: single K0L (kaonEnergy, 50 GeV); the HCAL should see the kinetic energy T = E - m(K0L).
Selection: exactly one target and it is a neutral hadron; the K0L crossed the ECAL as a MIP
  (TotalCaloHitEnergy - HCalTotalCaloHitEnergy < 5 % of E); no rear leakage
  (hCalCaloHitEnergyFromEdge / TotalCaloHitEnergy < 5 %); the leading target's |cos(theta)| inside
  the HCAL barrel window or the HCAL endcap window.
Histograms: HCalTotalCaloHitEnergy for barrel and endcap, finely binned (E/1000 on [0, 3E]);
  the service rebins to the original width digitisationAccuracy * E.
Estimator: Gaussian fit inside the rms90 window -> m_B, m_E.
Update: c' = T c / m for barrel and endcap separately.
Converged: max(|m_B - T|, |m_E - T|) / E < digitisationAccuracy.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.estimators import gaussian_fit_mean, rebin_to_accuracy
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import (
    K0L_MASS,
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
#: Statistical power (dry run): a region's fitted K0L peak has this relative uncertainty times
#: 1 / sqrt(K0L of an isotropic sample inside its cos(theta) window) at 50 GeV; measured on the
#: emulated CLD (benchmarks/coverage.py): few K0L cross the ECAL as a MIP and stay contained,
#: fewer in the endcap. It scales with the HCAL resolution, 1 / sqrt(E).
PEAK_SPREAD = {"barrel": 0.18, "endcap": 0.225}
PEAK_SPREAD_ENERGY = 50.0
BRANCHES = (
    "nPfoTargetsTotal",
    "nPfoTargetsNeutralHadrons",
    "TotalCaloHitEnergy",
    "HCalTotalCaloHitEnergy",
    "hCalCaloHitEnergyFromEdge",
    "pfoTargetCosTheta[0]",
)


def contained_kaon_energies(tree: SampleOutput, ctx: PhaseContext) -> dict[str, np.ndarray]:
    """HCAL energy of K0L that showered in the HCAL only and stayed in it, per region.

    Shared with the MIP-scale phase, which needs the endcap mean with the constants it runs with."""
    energy = ctx.energies["kaon"]
    total = np.asarray(tree["TotalCaloHitEnergy"], dtype=float)
    eHcal = np.asarray(tree["HCalTotalCaloHitEnergy"], dtype=float)
    fromEdge = np.asarray(tree["hCalCaloHitEnergyFromEdge"], dtype=float)
    absCos = np.abs(np.asarray(tree["pfoTargetCosTheta[0]"], dtype=float))
    single = (np.asarray(tree["nPfoTargetsTotal"]) == 1) & (np.asarray(tree["nPfoTargetsNeutralHadrons"]) == 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        noLeakage = np.where(total > 0, fromEdge / total, np.inf) < 0.05
    selected = single & (total - eHcal < 0.05 * energy) & noLeakage
    return {
        "hcalBarrel": eHcal[selected & in_window(absCos, ctx.hcalBarrelCosThetaRange)],
        "hcalEndcap": eHcal[selected & in_window(absCos, ctx.hcalEndcapCosThetaRange)],
    }


def kaon_binning(ctx: PhaseContext) -> HistSpec:
    energy = ctx.energies["kaon"]
    return HistSpec(int(FINE_BINS_PER_E * RANGE_IN_E), 0.0, RANGE_IN_E * energy)


def hcal_precision(ctx: PhaseContext, kaons: float, region: str) -> float:
    """Expected relative uncertainty of a region's fitted K0L peak (see PEAK_SPREAD)."""
    window = ctx.hcalBarrelCosThetaRange if region == "barrel" else ctx.hcalEndcapCosThetaRange
    return stochastic_precision(PEAK_SPREAD[region], PEAK_SPREAD_ENERGY, ctx.energies["kaon"],
                                kaons * window_acceptance(window))


def fitted_hcal_mean(merged: Summary, key: str, ctx: PhaseContext):
    counts, edges = rebin_to_accuracy(*merged.values(key), ctx.energies["kaon"], ctx.digitisationAccuracy)
    return gaussian_fit_mean(counts, edges)


class HcalDigitisation(Phase):
    number = 1
    name = "HCalDigitisation"
    samples = ("kaon",)
    branches = {"kaon": BRANCHES}
    fits = ("CalibrHCALBarrel", "CalibrHCALEndcap")
    proportional = True

    def spec(self, ctx: PhaseContext) -> SummarySpec:
        return SummarySpec(hists={"hcalBarrel": kaon_binning(ctx), "hcalEndcap": kaon_binning(ctx)})

    def reduce(self, outputs: Mapping[str, SampleOutput], ctx: PhaseContext) -> Summary:
        tree = outputs["kaon"]
        return fill(self.spec(ctx), contained_kaon_energies(tree, ctx), nEvents=len(tree["TotalCaloHitEnergy"]))

    def measure(self, merged: Summary, ctx: PhaseContext) -> Measurement:
        values, errors, problems = {}, {}, []
        for region in ("barrel", "endcap"):
            fit = fitted_hcal_mean(merged, f"hcal{region.capitalize()}", ctx)
            if not fit.ok:
                problems.append(f"{region} HCAL K0L peak: {fit.reason}")
                continue
            values[f"{region}Mean"], errors[f"{region}Mean"] = fit.mean, fit.meanError
        return Measurement(values, errors, ok=not problems, reason="; ".join(problems))

    def update(self, constants: Constants, measurement: Measurement, ctx: PhaseContext) -> Constants:
        target = ctx.energies["kaon"] - K0L_MASS
        return {
            "CalibrHCALBarrel": target * float(constants["CalibrHCALBarrel"]) / measurement.values["barrelMean"],
            "CalibrHCALEndcap": target * float(constants["CalibrHCALEndcap"]) / measurement.values["endcapMean"],
        }

    def expected_precision(self, ctx: PhaseContext, events) -> dict[str, tuple[str, float]]:
        kaons = events.get("kaon", 0)
        return {"CalibrHCALBarrel": ("kaon", hcal_precision(ctx, kaons, "barrel")),
                "CalibrHCALEndcap": ("kaon", hcal_precision(ctx, kaons, "endcap"))}

    def targets(self, ctx: PhaseContext) -> dict[str, float]:
        target = ctx.energies["kaon"] - K0L_MASS
        return {"barrelMean": target, "endcapMean": target}

    def tolerance(self, ctx: PhaseContext) -> float:
        return ctx.digitisationAccuracy * ctx.energies["kaon"]
