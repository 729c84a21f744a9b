"""Phase 3, electromagnetic scale: ECalToEMGeVCalibration (and HCalToEMGeVCalibration) from photons.

Sample: single photons (gammaEnergy, 10 GeV).
Selection: one target, a photon, reconstructed as exactly one PFO that is a photon, with (almost)
  no HCAL part: pfoHCalToEmEnergy < 1 % of E. No cos(theta) cut.
Histogram: pfoECalToEmEnergy, finely binned (E/1000 on [0, 3E]); the service rebins to the
  original width pandoraPFAAccuracy * E.
Estimator: Gaussian fit inside the rms90 window -> m.
Update: k' = E k / m; HCalToEMGeVCalibration := ECalToEMGeVCalibration.
Converged: |m - E| / E < pandoraPFAAccuracy.
The EM energy is linear in the EM scale (the MIP thresholds act before it), so one update lands
on target up to small threshold and fragment effects.
"""
from __future__ import annotations

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
    stochastic_precision,
)
from ILCDIRAC.CalibrationSystem.Utilities.summary import HistSpec, Summary, SummarySpec

FINE_BINS_PER_E = 1000
RANGE_IN_E = 3.0
#: Statistical power (dry run): the fitted EM peak has this relative uncertainty times
#: 1 / sqrt(photons in the sample) at 10 GeV; measured on the emulated CLD
#: (benchmarks/coverage.py), it scales with the ECAL resolution, 1 / sqrt(E).
PEAK_SPREAD = 0.097
PEAK_SPREAD_ENERGY = 10.0


class EmScale(Phase):
    number = 3
    name = "ElectroMagneticEnergy"
    samples = ("gamma",)
    dependsOn = (0, 2)
    branches = {
        "gamma": (
            "nPfoTargetsTotal",
            "nPfoTargetsPhotons",
            "nPfosTotal",
            "nPfosPhotons",
            "pfoECalToEmEnergy",
            "pfoHCalToEmEnergy",
        )
    }
    fits = ("ECalToEMGeVCalibration", "HCalToEMGeVCalibration")
    replays = True
    accuracySetting = "pandoraPFAAccuracy"

    def spec(self, ctx: PhaseContext) -> SummarySpec:
        energy = ctx.energies["gamma"]
        return SummarySpec(hists={"emEnergy": HistSpec(int(FINE_BINS_PER_E * RANGE_IN_E), 0.0, RANGE_IN_E * energy)})

    def reduce(self, outputs: Mapping[str, SampleOutput], ctx: PhaseContext) -> Summary:
        tree = outputs["gamma"]
        energy = ctx.energies["gamma"]
        em = np.asarray(tree["pfoECalToEmEnergy"], dtype=float)
        selected = (
            (np.asarray(tree["nPfoTargetsTotal"]) == 1)
            & (np.asarray(tree["nPfoTargetsPhotons"]) == 1)
            & (np.asarray(tree["nPfosTotal"]) == 1)
            & (np.asarray(tree["nPfosPhotons"]) == 1)
            & (np.asarray(tree["pfoHCalToEmEnergy"], dtype=float) < 0.01 * energy)
        )
        return fill(self.spec(ctx), {"emEnergy": em[selected]}, nEvents=em.size)

    def measure(self, merged: Summary, ctx: PhaseContext) -> Measurement:
        counts, edges = rebin_to_accuracy(*merged.values("emEnergy"), ctx.energies["gamma"], ctx.pandoraPFAAccuracy)
        fit = gaussian_fit_mean(counts, edges)
        if not fit.ok:
            return Measurement({}, ok=False, reason=f"photon EM energy peak: {fit.reason}")
        return Measurement({"emMean": fit.mean}, {"emMean": fit.meanError})

    def update(self, constants: Constants, measurement: Measurement, ctx: PhaseContext) -> Constants:
        scale = ctx.energies["gamma"] * float(constants["ECalToEMGeVCalibration"]) / measurement.values["emMean"]
        return {"ECalToEMGeVCalibration": scale, "HCalToEMGeVCalibration": scale}

    def solve(self, constants: Constants, merged: Summary, ctx: PhaseContext,
              start: Constants | None = None) -> Constants | None:
        """The EM energy is linear in the EM scale: the ratio update is the offline solution."""
        measurement = self.measure(merged, ctx)
        return self.update(constants, measurement, ctx) if measurement.ok else None

    def expected_precision(self, ctx: PhaseContext, events) -> dict[str, tuple[str, float]]:
        return {"ECalToEMGeVCalibration": ("gamma", stochastic_precision(
            PEAK_SPREAD, PEAK_SPREAD_ENERGY, ctx.energies["gamma"], events.get("gamma", 0)))}

    def targets(self, ctx: PhaseContext) -> dict[str, float]:
        return {"emMean": ctx.energies["gamma"]}

    def tolerance(self, ctx: PhaseContext) -> float:
        return ctx.pandoraPFAAccuracy * ctx.energies["gamma"]
