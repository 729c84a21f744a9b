"""The detector configurations the physics tests and the convergence benchmark calibrate.

Each is a shipped emulator truth whose true constants are moved away from the detector model's
starting constants (10-15 %; 13-20 % for CLD), so every phase has real work to do: CLD and the
four FCC-ee ECAL layouts of the talk (40, 30 and 20 uniform layers, 20 thin + 10 thick).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ILCDIRAC.CalibrationSystem.localdirac.inprocess import Outcome, make_samples, run_calibration
from ILCDIRAC.CalibrationSystem.localdirac.scenario import shifted_truth
from marlin_emulator.truth import DetectorTruth

#: True constants relative to the shipped truth (and so to the model's starting constants).
OFFSETS = {
    "CalibrECAL": 1.12,
    "ECALEndcapCorrectionFactor": 0.90,
    "CalibrHCALBarrel": 1.10,
    "CalibrHCALEndcap": 1.15,
    "CalibrHCALOther": 1.10,
    "ECalToEMGeVCalibration": 1.10,
    "ECalToHadGeVCalibration": 1.15,
    "HCalToHadGeVCalibration": 1.12,
}
SAMPLES = {"gamma": (4, 1000), "kaon": (4, 1000), "muon": (4, 2000), "zuds": (4, 200)}
ACCURACY = {"digitisationAccuracy": 0.02, "pandoraPFAAccuracy": 0.025}


@dataclass(frozen=True)
class Configuration:
    name: str
    model: str
    scale: float = 1.0
    settings: Mapping[str, Any] = field(default_factory=dict)

    def truth(self) -> DetectorTruth:
        factors = {key: 1 + (value - 1) * self.scale for key, value in OFFSETS.items()}
        return shifted_truth(self.model, factors)

    def settings_for(self, folder: Path, strategy: str, truth: DetectorTruth, **overrides: Any) -> dict[str, Any]:
        values = {
            "detectorModel": self.model,
            "numberOfJobs": 4,
            "marlinExecutable": "marlin-emulator",
            "strategy": strategy,
            **ACCURACY,
            **self.settings,
            **make_samples(truth, folder, SAMPLES),
        }
        values.update(overrides)
        return values

    def calibrate(self, folder: Path, strategy: str, **overrides: Any) -> Outcome:
        truth = self.truth()
        return run_calibration(self.settings_for(folder, strategy, truth, **overrides), folder / strategy)

    def settle(self, folder: Path) -> Outcome:
        """Where the original estimators settle for this detector: the legacy procedure started
        from the true constants, on the same events."""
        truth = self.truth()
        start = true_starting_constants(truth)
        return run_calibration(self.settings_for(folder, "legacy", truth, startingConstants=start), folder / "settle")


def true_starting_constants(truth: DetectorTruth) -> dict[str, Any]:
    true = truth.trueConstants
    return {
        "CalibrECAL": list(true.CalibrECAL),
        "ECALEndcapCorrectionFactor": true.ECALEndcapCorrectionFactor,
        "CalibrHCALBarrel": true.CalibrHCALBarrel,
        "CalibrHCALEndcap": true.CalibrHCALEndcap,
        "CalibrHCALOther": true.CalibrHCALOther,
        "ECalToEMGeVCalibration": true.ECalToEMGeVCalibration,
        "HCalToEMGeVCalibration": true.ECalToEMGeVCalibration,
        "ECalToHadGeVCalibrationBarrel": true.ECalToHadGeVCalibration,
        "ECalToHadGeVCalibrationEndCap": true.ECalToHadGeVCalibration,
        "HCalToHadGeVCalibration": true.HCalToHadGeVCalibration,
    }


CONFIGURATIONS = [
    Configuration("CLD", "FCCee_o1_v04", scale=1.3),
    Configuration("FCCee_ecal40", "FCCee_01_v04_ecal40"),
    Configuration("FCCee_ecal30", "FCCee_01_v04_ecal30"),
    Configuration("FCCee_ecal20", "FCCee_01_v04_ecal20"),
    Configuration("FCCee_ecal20_10", "FCCee_01_v04_ecal20_10"),
]
