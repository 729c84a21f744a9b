"""Phase 2, MIP scales and the HCAL ring: E/H/MuonCalToMip and CalibrHCALOther.

Samples: single muons (muonEnergy, 10 GeV) for the MIP peaks, and K0L for the ring constant.
Muons: PfoAnalysis fills the digitised hit energy times the direction correction (sin(theta) in
  the barrel, |cos(theta)| in the endcap) of ECAL, HCAL and muon-system hits; the MIP peak is the
  centre of the highest bin and XToMip = 1 / peak (so the values are quantised by the bin width,
  as in the original). The direction-corrected *simulated* hit energies of the HCAL endcap and
  ring give their MIP peaks with the local-maximum finder.
K0L: the means of the per-hit direction factors in the HCAL endcap and ring, and the endcap mean
  m_EC of contained K0L with the step's (already calibrated) constants.
Update: CalibrHCALOther = (<dc>_EC / <dc>_ring) (MIP_EC / MIP_ring) (t_abs,EC t_sc,ring) /
  (t_abs,ring t_sc,EC) CalibrHCALEndcap T / m_EC, with the thicknesses from the detector model.
  (The original took m_EC from the previous phase's last step and so applied that ratio twice.)
A single pass: the phase completes after one step (the fast strategy may run it together with
the digitisation phases, predicting the MIP scales for their new constants, and confirm it later).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from ILCDIRAC.CalibrationSystem.Utilities.estimators import histogram_mean, mip_peak, simcalohit_peak
from ILCDIRAC.CalibrationSystem.Utilities.pfoanalysis import CALIBRATION_HISTOGRAMS
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import (
    K0L_MASS,
    Constants,
    Measurement,
    Phase,
    PhaseContext,
    SampleOutput,
    root_histograms,
)
from ILCDIRAC.CalibrationSystem.Utilities.phases.hcal_digitisation import (
    BRANCHES as KAON_BRANCHES,
)
from ILCDIRAC.CalibrationSystem.Utilities.phases.hcal_digitisation import (
    contained_kaon_energies,
    fitted_hcal_mean,
    hcal_precision,
    kaon_binning,
)
from ILCDIRAC.CalibrationSystem.Utilities.summary import HistSpec, Summary, SummarySpec

MUON_HISTOGRAMS = (
    "ECalDirectionCorrectedCaloHitEnergy",
    "HCalDirectionCorrectedCaloHitEnergy",
    "MuonDirectionCorrectedCaloHitEnergy",
    "HCalDirectionCorrectedSimCaloHitEndCap",
    "HCalDirectionCorrectedSimCaloHitOther",
)
KAON_HISTOGRAMS = ("HCalEndCapDirectionCorrectionSimCaloHit", "HCalOtherDirectionCorrectionSimCaloHit")
TO_MIP = {
    "ECalToMipCalibration": "ECalDirectionCorrectedCaloHitEnergy",
    "HCalToMipCalibration": "HCalDirectionCorrectedCaloHitEnergy",
    "MuonToMipCalibration": "MuonDirectionCorrectedCaloHitEnergy",
}


class MipScale(Phase):
    number = 2
    name = "MuonAndHCalOtherDigitisation"
    samples = ("muon", "kaon")
    dependsOn = (0, 1)
    branches = {"kaon": KAON_BRANCHES}
    rootHistograms = {"muon": MUON_HISTOGRAMS, "kaon": KAON_HISTOGRAMS}
    fits = tuple(TO_MIP) + ("CalibrHCALOther",)
    iterative = False

    def spec(self, ctx: PhaseContext) -> SummarySpec:
        hists = {name: HistSpec(*CALIBRATION_HISTOGRAMS[name]) for name in MUON_HISTOGRAMS + KAON_HISTOGRAMS}
        hists["hcalEndcap"] = kaon_binning(ctx)
        return SummarySpec(hists=hists)

    def reduce(self, outputs: Mapping[str, SampleOutput], ctx: PhaseContext) -> Summary:
        spec = self.spec(ctx)
        summary = root_histograms(spec, outputs["muon"], MUON_HISTOGRAMS)
        summary = root_histograms(spec, outputs["kaon"], KAON_HISTOGRAMS, into=summary)
        summary.hists["hcalEndcap"].fill(contained_kaon_energies(outputs["kaon"], ctx)["hcalEndcap"])
        summary.nEvents = len(outputs["kaon"]["TotalCaloHitEnergy"])
        return summary

    def measure(self, merged: Summary, ctx: PhaseContext) -> Measurement:
        values, errors, problems = {}, {}, []
        wanted = [(f"{constant}Peak", name, mip_peak) for constant, name in TO_MIP.items()]
        wanted += [("simMipEndcap", "HCalDirectionCorrectedSimCaloHitEndCap", simcalohit_peak),
                   ("simMipRing", "HCalDirectionCorrectedSimCaloHitOther", simcalohit_peak),
                   ("directionFactorEndcap", "HCalEndCapDirectionCorrectionSimCaloHit", histogram_mean),
                   ("directionFactorRing", "HCalOtherDirectionCorrectionSimCaloHit", histogram_mean)]
        for key, name, estimator in wanted:
            counts, edges = merged.values(name)
            if counts.sum() <= 0:
                problems.append(f"{name} is empty")
            else:
                values[key] = estimator(counts, edges)
        fit = fitted_hcal_mean(merged, "hcalEndcap", ctx)
        if fit.ok:
            values["endcapMean"], errors["endcapMean"] = fit.mean, fit.meanError
        else:
            problems.append(f"endcap HCAL K0L peak: {fit.reason}")
        unusable = sorted(k for k, v in values.items() if not math.isfinite(v) or v <= 0)
        if unusable:
            problems.append(f"no usable peak or mean for {unusable}")
        return Measurement(values, errors, ok=not problems, reason="; ".join(problems))

    def update(self, constants: Constants, measurement: Measurement, ctx: PhaseContext) -> Constants:
        v = measurement.values
        target = ctx.energies["kaon"] - K0L_MASS
        updated = {constant: 1.0 / v[f"{constant}Peak"] for constant in TO_MIP}
        updated["CalibrHCALOther"] = (
            (v["directionFactorEndcap"] / v["directionFactorRing"])
            * (v["simMipEndcap"] / v["simMipRing"])
            * ctx.hcalThicknessRatio
            * float(constants["CalibrHCALEndcap"])
            * target
            / v["endcapMean"]
        )
        return updated

    def expected_precision(self, ctx: PhaseContext, events) -> dict[str, tuple[str, float]]:
        """CalibrHCALOther follows the endcap K0L peak. The MIP scales are set by the highest bin of
        histograms filled with every hit of every muon: their precision is the bin width."""
        return {"CalibrHCALOther": ("kaon", hcal_precision(ctx, events.get("kaon", 0), "endcap"))}

    def predict(
        self, measuredWith: Constants, current: Constants, measurement: Measurement, ctx: PhaseContext
    ) -> Constants:
        """Digitised MIP peaks scale exactly with the digitisation constants (thresholds act on
        simulated energy), so the MIP scales follow the ECAL and HCAL updates of the same pass;
        CalibrHCALOther = ratios x c_EC T / m_EC is the same with the old or the new c_EC.
        (The peak bin of the next pass may differ by one bin; a later pass confirms.)"""
        updated = self.update(measuredWith, measurement, ctx)
        updated["ECalToMipCalibration"] *= float(measuredWith["CalibrECAL"][0]) / float(current["CalibrECAL"][0])
        updated["HCalToMipCalibration"] *= float(measuredWith["CalibrHCALBarrel"]) / float(current["CalibrHCALBarrel"])
        return updated



