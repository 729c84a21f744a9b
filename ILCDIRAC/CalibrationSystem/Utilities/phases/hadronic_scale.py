"""Phase 4, hadronic scale by the chi-square method: HCalToHadGeVCalibration and
ECalToHadGeVCalibrationBarrel (= EndCap) from 50 GeV K0L.

Sample: single K0L (kaonEnergy, 50 GeV); target is the kinetic energy T = E - m(K0L).
Selection (workers): one target, a neutral hadron, reconstructed as exactly one PFO that is a
  neutral hadron, starting well inside the HCAL: pfoMinHCalLayerToEdge > ceil(0.1 nHcalLayers).
  Workers bin these events in E = pfoECalToHadEnergy + pfoHCalToHadEnergy (E/250 on [0, 3E]) and
  the ECAL share f = pfoECalToHadEnergy / E (100 bins on [0, 1]): the event count and the sums of
  f and of E in every cell, a fixed-size report whatever the number of events.
Selection (service): a 3-sigma band around the ideal line E_E/T + E_H/T = 1, sigma = 0.55 sqrt(E).
Estimator: chi-square method — the intercept pair (I_E, I_H) on the grid
  I = T/2 + E acc k minimising the summed squared, error-weighted distances of the events to the
  line E_E/I_E + E_H/I_H = 1.
Update: HCalToHad' = T HCalToHad / I_H; ECalToHadBarrel' = T ECalToHadBarrel / I_E; EndCap := Barrel.
Converged: max(|I_E - T|, |I_H - T|) / T < pandoraPFAAccuracy.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.estimators import KaonCells, chi_square_hadronic_scale, csm_fixed_point
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import (
    K0L_MASS,
    Constants,
    Measurement,
    Phase,
    PhaseContext,
    SampleOutput,
    stochastic_precision,
)
from ILCDIRAC.CalibrationSystem.Utilities.summary import Axis, HistSpec, Summary, SummarySpec

#: Energy cells E / 250 wide on [0, RANGE_IN_E E]: 0.2 GeV at 50 GeV, a twentieth of the K0L
#: resolution. At the band's edge a cell holding one event is in or out at its exact energy, a
#: fuller one counts with its overlap.
ENERGY_BINS_PER_E = 250
RANGE_IN_E = 3.0
#: ECAL-share bins: the chi2 sums are exact in f; only its denominator takes the bin's mean f.
FRACTION_BINS = 100
#: Statistical power (dry run): the offline replay's constants have these relative uncertainties
#: times 1 / sqrt(K0L in the sample) at 50 GeV; measured on the emulated CLD
#: (benchmarks/coverage.py). The ECAL scale is the weaker: few K0L leave much energy in the
#: ECAL, so its intercept is an extrapolation. Both scale with 0.55 sqrt(E) / E.
SPREAD = {"ECalToHadGeVCalibrationBarrel": 0.415, "HCalToHadGeVCalibration": 0.149}
SPREAD_ENERGY = 50.0


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
    replays = True
    accuracySetting = "pandoraPFAAccuracy"

    def spec(self, ctx: PhaseContext) -> SummarySpec:
        energy = ctx.energies["kaon"]
        cells = functools.partial(HistSpec, bins=int(ENERGY_BINS_PER_E * RANGE_IN_E), low=0.0,
                                  high=RANGE_IN_E * energy, y=Axis(FRACTION_BINS, 0.0, 1.0, flow=False))
        return SummarySpec(hists={"events": cells(),
                                  "ecalShareSum": cells(sumOf=("events", 1)),
                                  "energySum": cells(sumOf=("events", 0))})

    def reduce(self, outputs: Mapping[str, SampleOutput], ctx: PhaseContext) -> Summary:
        tree = outputs["kaon"]
        minLayers = math.ceil(round(0.1 * ctx.nHcalLayers, 9))
        eEcal = np.asarray(tree["pfoECalToHadEnergy"], dtype=float)
        energy = eEcal + np.asarray(tree["pfoHCalToHadEnergy"], dtype=float)
        selected = (
            (np.asarray(tree["nPfoTargetsTotal"]) == 1)
            & (np.asarray(tree["nPfoTargetsNeutralHadrons"]) == 1)
            & (np.asarray(tree["nPfosTotal"]) == 1)
            & (np.asarray(tree["nPfosNeutralHadrons"]) == 1)
            & (np.asarray(tree["pfoMinHCalLayerToEdge"]) > minLayers)
            & (energy > 0)  # no share; outside the band anyway
        )
        energy = energy[selected]
        share = np.minimum(eEcal[selected] / energy, np.nextafter(1.0, 0.0))  # f = 1 in the last bin
        summary = self.spec(ctx).empty()
        summary.hists["events"].fill(energy, share)
        summary.hists["ecalShareSum"].fill(energy, share, weight=share)
        summary.hists["energySum"].fill(energy, share, weight=energy)
        summary.nEvents = int(selected.size)
        return summary

    def measure(self, merged: Summary, ctx: PhaseContext) -> Measurement:
        energy = ctx.energies["kaon"]
        result = chi_square_hadronic_scale(kaon_cells(merged), energy - K0L_MASS, ctx.pandoraPFAAccuracy,
                                           beamEnergy=energy)
        if not result.ok:
            return Measurement({}, ok=False, reason=f"chi-square hadronic scale: {result.reason}")
        return Measurement(
            {"interceptEcal": result.interceptEcal, "interceptHcal": result.interceptHcal, "events": result.nEvents},
            {"interceptEcal": result.interceptEcalError, "interceptHcal": result.interceptHcalError},
        )

    def update(self, constants: Constants, measurement: Measurement, ctx: PhaseContext) -> Constants:
        target = ctx.energies["kaon"] - K0L_MASS
        ecal = target * float(constants["ECalToHadGeVCalibrationBarrel"]) / measurement.values["interceptEcal"]
        return {
            "HCalToHadGeVCalibration": target * float(constants["HCalToHadGeVCalibration"])
            / measurement.values["interceptHcal"],
            "ECalToHadGeVCalibrationBarrel": ecal,
            "ECalToHadGeVCalibrationEndCap": ecal,
        }

    def solve(self, constants: Constants, merged: Summary, ctx: PhaseContext,
              start: Constants | None = None) -> Constants | None:
        """Offline replay of the chi-square method on this step's events: the constants at which the
        continuous estimator finds both intercepts at the target (``csm_fixed_point``: the events
        keep their ECAL share and scale with the constants, so no other pass is needed). The
        confirming pass then measures with the original grid estimator."""
        near = None if start is None else (float(start["ECalToHadGeVCalibrationBarrel"]),
                                           float(start["HCalToHadGeVCalibration"]))
        fixed = csm_fixed_point(kaon_cells(merged), ctx.energies["kaon"] - K0L_MASS,
                                float(constants["ECalToHadGeVCalibrationBarrel"]),
                                float(constants["HCalToHadGeVCalibration"]), start=near)
        if fixed is None:
            return None
        ecal, hcal = fixed
        return {"HCalToHadGeVCalibration": hcal, "ECalToHadGeVCalibrationBarrel": ecal,
                "ECalToHadGeVCalibrationEndCap": ecal}

    def expected_precision(self, ctx: PhaseContext, events) -> dict[str, tuple[str, float]]:
        return {name: ("kaon", stochastic_precision(spread, SPREAD_ENERGY, ctx.energies["kaon"], events.get("kaon", 0)))
                for name, spread in SPREAD.items()}

    def targets(self, ctx: PhaseContext) -> dict[str, float]:
        target = ctx.energies["kaon"] - K0L_MASS
        return {"interceptEcal": target, "interceptHcal": target}

    def tolerance(self, ctx: PhaseContext) -> float:
        return ctx.pandoraPFAAccuracy * (ctx.energies["kaon"] - K0L_MASS)


def kaon_cells(merged: Summary) -> KaonCells:
    """The merged report's non-empty (E, f) cells, as the chi-square method takes them."""
    hists = merged.hists
    return KaonCells.from_sums(hists["events"].values(flow=True), hists["ecalShareSum"].values(flow=True),
                               hists["energySum"].values(flow=True), hists["events"].axes[0].edges)
