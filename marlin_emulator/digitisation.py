"""DDCaloDigi and the parts of DDMarlinPandora that the calibration constants act on.

- ECAL layer groups: DDCaloDigi gives a hit of layer ``l`` the coefficient CalibrECAL[k] for the
  first group with ``ECALLayers[k-1] <= l < ECALLayers[k]`` (``ECALLayers[-1]`` taken as 0), and
  1.0 when ``l`` is beyond the last boundary, literally (quirk 8 follows from the layer numbering).
- Time windows: the sim energies are split into prompt (< 10 ns) and late; a window keeps the
  late energy that arrived before it (``timing`` of the truth).
- Pandora MIP thresholds act on ``E_hit * ToMip``: with a digitisation scale ``rho`` (digitised over
  true-constant energy) and ``mu = ToMip / ToMip*``, a threshold of ``t`` MIPs cuts at ``t / (rho mu)``
  true MIPs, so the sub-threshold cluster-energy loss scales with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from marlin_emulator.steering_input import DigiParameters, PandoraParameters
from marlin_emulator.truth import DetectorTruth

#: Prompt energy is what arrives within this time (ns); the truth constants are defined for it.
PROMPT_TIME = 10.0
#: The late energy of the truth's timing section is what arrives by this time (ns).
LATE_REFERENCE_TIME = 400.0
#: Largest fraction of a cluster's energy the sub-threshold loss may reach.
MAX_THRESHOLD_LOSS = 0.5


def ecal_layer_coefficients(
    calibrEcal: tuple[float, ...], ecalLayers: tuple[int, ...], layerNumbers: np.ndarray
) -> np.ndarray:
    coefficients = np.ones(layerNumbers.size)
    assigned = np.zeros(layerNumbers.size, dtype=bool)
    lower = 0
    for k, upper in enumerate(ecalLayers):
        group = ~assigned & (layerNumbers >= lower) & (layerNumbers < upper)
        coefficients[group] = calibrEcal[k]
        assigned |= group
        lower = upper
    return coefficients


def late_share(window: float, timeConstant: float) -> float:
    """Share of the late energy inside a time window (1 at 400 ns, above 1 for longer windows)."""
    if window <= PROMPT_TIME:
        return 0.0
    norm = 1.0 - math.exp(-(LATE_REFERENCE_TIME - PROMPT_TIME) / timeConstant)
    if math.isinf(window):
        return 1.0 / norm
    return (1.0 - math.exp(-(window - PROMPT_TIME) / timeConstant)) / norm


def time_factor(window: float, lateFraction: float, timeConstant: float) -> float:
    """Digitised over prompt energy for a time window (1 for the 10 ns reference)."""
    prompt = 1.0 if window >= PROMPT_TIME else max(window, 0.0) / PROMPT_TIME
    return prompt + lateFraction * late_share(window, timeConstant)


def all_times_factor(lateFraction: float, timeConstant: float) -> float:
    """Simulated (all-time) over prompt energy."""
    return 1.0 + lateFraction * late_share(math.inf, timeConstant)


@dataclass(frozen=True)
class Calorimetry:
    """Per-event digitised energies of a shower and the same with the true constants."""

    ecal: np.ndarray
    ecalTrue: np.ndarray
    hcalRegions: np.ndarray  # (n, 3) barrel, endcap, ring
    hcalTrue: np.ndarray
    ecalSim: np.ndarray
    hcalSim: np.ndarray

    @property
    def hcal(self) -> np.ndarray:
        return self.hcalRegions.sum(axis=1)


def ecal_region_scale(barrelWeight: np.ndarray, digi: DigiParameters, truth: DetectorTruth) -> np.ndarray:
    """ECAL endcap correction and time windows, barrel/endcap mixed by the event's barrel share."""
    t = truth.timing
    barrel = time_factor(digi.ecalTimeWindows[0], t.ecalLateFraction, t.lateTimeConstant)
    endcap = time_factor(digi.ecalTimeWindows[1], t.ecalLateFraction, t.lateTimeConstant)
    return barrelWeight * barrel + (1.0 - barrelWeight) * digi.ecalEndcapCorrectionFactor * endcap


def hcal_region_constants(digi: DigiParameters, truth: DetectorTruth) -> np.ndarray:
    """Digitised over prompt sim energy for HCAL barrel, endcap and ring (Other)."""
    t = truth.timing
    barrel = time_factor(digi.hcalTimeWindows[0], t.hcalLateFraction, t.lateTimeConstant)
    endcap = time_factor(digi.hcalTimeWindows[1], t.hcalLateFraction, t.lateTimeConstant)
    return np.array(
        [
            digi.calibrHcalBarrel * barrel,
            digi.calibrHcalEndcap * digi.hcalEndcapCorrectionFactor * endcap,
            digi.calibrHcalOther * endcap,
        ]
    )


def true_hcal_constants(truth: DetectorTruth) -> np.ndarray:
    c = truth.trueConstants
    return np.array([c.CalibrHCALBarrel, c.CalibrHCALEndcap, c.CalibrHCALOther])


def digitise_shower(
    ecalPrompt: np.ndarray,
    barrelWeight: np.ndarray,
    hcalPrompt: np.ndarray,
    layerNumbers: np.ndarray,
    digi: DigiParameters,
    truth: DetectorTruth,
) -> Calorimetry:
    coefficients = ecal_layer_coefficients(digi.calibrEcal, digi.ecalLayers, layerNumbers)
    trueScale = barrelWeight + (1.0 - barrelWeight) * truth.trueConstants.ECALEndcapCorrectionFactor
    t = truth.timing
    return Calorimetry(
        ecal=(ecalPrompt @ coefficients) * ecal_region_scale(barrelWeight, digi, truth),
        ecalTrue=(ecalPrompt @ np.asarray(truth.ecalLayerTrueConstants)) * trueScale,
        hcalRegions=hcalPrompt * hcal_region_constants(digi, truth)[None, :],
        hcalTrue=hcalPrompt @ true_hcal_constants(truth),
        ecalSim=ecalPrompt.sum(axis=1) * all_times_factor(t.ecalLateFraction, t.lateTimeConstant),
        hcalSim=hcalPrompt.sum(axis=1) * all_times_factor(t.hcalLateFraction, t.lateTimeConstant),
    )


def threshold_losses(
    calorimetry: Calorimetry, pandora: PandoraParameters, truth: DetectorTruth
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster-energy fractions lost below the ECAL and HCAL MIP thresholds, per event."""
    nominal = truth.pandora
    ecalRho = np.divide(
        calorimetry.ecal, calorimetry.ecalTrue, out=np.ones_like(calorimetry.ecal), where=calorimetry.ecalTrue > 0
    )
    hcal = calorimetry.hcal
    hcalRho = np.divide(hcal, calorimetry.hcalTrue, out=np.ones_like(hcal), where=calorimetry.hcalTrue > 0)
    return (
        mip_threshold_loss(
            ecalRho * pandora.ecalToMip / truth.trueEcalToMip,
            pandora.ecalMipThreshold,
            nominal.ecalMipThreshold,
            nominal.ecalSubThresholdLoss,
        ),
        mip_threshold_loss(
            hcalRho * pandora.hcalToMip / truth.trueHcalToMip,
            pandora.hcalMipThreshold,
            nominal.hcalMipThreshold,
            nominal.hcalSubThresholdLoss,
        ),
    )


def mip_threshold_loss(mipScale, threshold: float | None, nominalThreshold: float, nominalLoss: float) -> np.ndarray:
    """Loss for a MIP scale ``rho * mu`` (1 when digitisation and ToMip are both right)."""
    effective = (nominalThreshold if threshold is None else threshold) / np.maximum(mipScale, 1e-6)
    return np.clip(nominalLoss * effective / nominalThreshold, 0.0, MAX_THRESHOLD_LOSS)


def hit_cap_ratio(scale: np.ndarray, cap: float, truth: DetectorTruth) -> np.ndarray:
    """sum_hits min(b E_hit, cap) / sum_hits b E_hit for the truth's HCAL hit-energy spectrum
    (exponentials whose means scale with ``scale`` = digitisation x HCalToHad relative to truth)."""
    if math.isinf(cap):
        return np.ones_like(scale)
    means = np.asarray(truth.hadron.hitEnergyMeans)[None, :] * scale[:, None]
    weights = np.asarray(truth.hadron.hitEnergyWeights)[None, :]
    kept = weights * means * -np.expm1(-cap / means)
    return kept.sum(axis=1) / (weights * means).sum(axis=1)


def soft_compensation_factor(emFraction: np.ndarray, kinetic: float, truth: DetectorTruth) -> np.ndarray:
    """Software compensation undoes part of the event's e/h fluctuation (strength from the truth)."""
    meanEm = truth.em_fraction_mean(kinetic)
    eh = truth.hcal.eOverH
    response = emFraction + (1.0 - emFraction) / eh
    return 1.0 + truth.hadron.softCompensationStrength * ((meanEm + (1.0 - meanEm) / eh) / response - 1.0)


__all__ = [
    "Calorimetry",
    "PROMPT_TIME",
    "all_times_factor",
    "digitise_shower",
    "ecal_layer_coefficients",
    "ecal_region_scale",
    "hcal_region_constants",
    "hit_cap_ratio",
    "late_share",
    "mip_threshold_loss",
    "soft_compensation_factor",
    "threshold_losses",
    "time_factor",
    "true_hcal_constants",
]
