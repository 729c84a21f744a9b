"""Where a particle at polar angle theta deposits its energy: barrel/endcap/ring shares, path
lengths and the response dip of the ECAL barrel-endcap transition (docs/PHYSICS.md section 8).
All functions take |cos(theta)| arrays and a DetectorTruth.
"""
from __future__ import annotations

import numpy as np

from marlin_emulator.truth import DetectorTruth

#: Smallest sin/cos used for path lengths (a particle along an axis would cross a layer forever).
MIN_PROJECTION = 0.02


def ecal_barrel_weight(absCos: np.ndarray, truth: DetectorTruth) -> np.ndarray:
    """Share of the ECAL energy in the barrel: 1 below the transition, 0 above, linear across it."""
    low, high = truth.regions.ecalTransition
    return np.clip((high - absCos) / (high - low), 0.0, 1.0)


def transition_dip(absCos: np.ndarray, truth: DetectorTruth) -> np.ndarray:
    """Relative response loss in the ECAL transition: triangular, largest at its centre."""
    low, high = truth.regions.ecalTransition
    distance = np.abs(2.0 * (absCos - 0.5 * (low + high)) / (high - low))
    return truth.regions.transitionResponseDip * np.clip(1.0 - distance, 0.0, 1.0)


def hcal_region_weights(absCos: np.ndarray, truth: DetectorTruth) -> np.ndarray:
    """Shares of the HCAL energy in (barrel, endcap, ring), shape (n, 3); the ring peaks mid-range."""
    low, high = truth.regions.hcalRing
    x = np.clip((absCos - low) / (high - low), 0.0, 1.0)
    ring = truth.regions.ringPeakFraction * (1.0 - np.abs(2.0 * x - 1.0))
    return np.stack([(1.0 - x) * (1.0 - ring), x * (1.0 - ring), ring], axis=-1)


def path_factor(absCos: np.ndarray, truth: DetectorTruth) -> np.ndarray:
    """Path length per unit of layer thickness: 1/sin in the barrel, 1/|cos| in the endcap."""
    weight = ecal_barrel_weight(absCos, truth)
    sin = np.sqrt(np.clip(1.0 - absCos**2, 0.0, 1.0))
    return weight / np.maximum(sin, MIN_PROJECTION) + (1.0 - weight) / np.maximum(absCos, MIN_PROJECTION)


def lumical_fraction(absCos: np.ndarray, truth: DetectorTruth) -> np.ndarray:
    """Share of the energy that goes forward into the LumiCal instead of the ECAL endcap."""
    edge, lumi = truth.regions.forwardEdge, truth.regions.lumiCalEdge
    return np.clip((absCos - edge) / (lumi - edge), 0.0, 1.0)


def ecal_layer_boundaries(truth: DetectorTruth) -> np.ndarray:
    """Depths (X0, along the normal) of the ECAL layer boundaries, length nLayers + 1."""
    return np.concatenate([[0.0], np.cumsum(truth.ecalLayerX0)])


def ecal_layer_numbers(truth: DetectorTruth) -> np.ndarray:
    return truth.ecal.firstLayerNumber + np.arange(truth.nEcalLayers)


__all__ = [
    "ecal_barrel_weight",
    "ecal_layer_boundaries",
    "ecal_layer_numbers",
    "hcal_region_weights",
    "lumical_fraction",
    "path_factor",
    "transition_dip",
]
