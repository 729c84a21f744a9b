"""Reconstruction of single muons: every sim hit is digitised (thresholds on raw sim energy, ECAL
layer groups, HCAL region constants, CalibrMUON in the yoke) and PfoAnalysis fills the
direction-corrected hit histograms the MIP calibration reads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from marlin_emulator.digitisation import ecal_layer_coefficients, hcal_region_constants
from marlin_emulator.pfo_tree import MASSES, MUON_PDG, pfo_table, set_calibration
from marlin_emulator.rootio import EventTable
from marlin_emulator.sim import ECAL, HCAL_BARREL, HCAL_ENDCAP, HCAL_RING, YOKE, MuonBank

if TYPE_CHECKING:
    from marlin_emulator.reco import RecoConfig


def reconstruct_muons(bank: MuonBank, config: RecoConfig) -> EventTable:
    truth, digi = bank.truth, config.digi
    n = bank.events.size
    sub, sim, owner = bank.hitSubdetector, bank.hitSimEnergy, bank.hitOwner
    ecalCoefficient = ecal_layer_coefficients(digi.calibrEcal, digi.ecalLayers, bank.hitLayer)
    hcalConstants = hcal_region_constants(digi, truth)
    muonConstant = config.muonDigitisation or truth.muonSystem.digitisationConstant
    factor = np.select(
        [sub == ECAL, sub == HCAL_BARREL, sub == HCAL_ENDCAP, sub == HCAL_RING],
        [
            ecalCoefficient * np.where(bank.hitEndcap, digi.ecalEndcapCorrectionFactor, 1.0),
            hcalConstants[0],
            hcalConstants[1],
            hcalConstants[2],
        ],
        muonConstant,
    )
    isEcal = sub == ECAL
    isHcal = (sub == HCAL_BARREL) | (sub == HCAL_ENDCAP) | (sub == HCAL_RING)
    kept = np.where(isEcal, sim > digi.ecalThreshold, np.where(isHcal, sim > digi.hcalThreshold, True))
    digitised = np.where(kept, factor * sim, 0.0)
    energy = bank.sample.energy
    momentum = np.sqrt(energy**2 - MASSES[MUON_PDG] ** 2) * (1.0 + bank.momentumSmear)
    pfos = {
        "owner": np.arange(n),
        "pdg": np.full(n, MUON_PDG),
        "energy": np.sqrt(momentum**2 + MASSES[MUON_PDG] ** 2),
        "x": np.zeros(n),
        "y": np.zeros(n),
        "cosTheta": bank.cosTheta,
        "phi": bank.phi,
    }
    targets = {
        "owner": np.arange(n),
        "pdg": np.full(n, MUON_PDG),
        "energy": np.full(n, energy),
        "cosTheta": bank.cosTheta,
        "phi": bank.phi,
    }
    table = pfo_table(n, pfos, targets, config)
    table.scalars["run"] = np.full(n, bank.sample.fileIndex)
    table.scalars["event"] = bank.events.copy()
    if not config.pfoAnalysis.collectCalibrationDetails:
        return table

    def total(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(owner[mask], weights=values[mask], minlength=n)

    nearEdge = isHcal & (bank.hitLayer >= truth.hcal.nLayers - 5)
    set_calibration(
        table,
        {
            "pfoMinHCalLayerToEdge": np.zeros(n, dtype=np.int32),
            "hCalCaloHitEnergyFromEdge": total(digitised, nearEdge),
            "ECalTotalCaloHitEnergy": total(digitised, isEcal),
            "HCalTotalCaloHitEnergy": total(digitised, isHcal),
            "MuonTotalCaloHitEnergy": total(digitised, sub == YOKE),
            "LCalTotalCaloHitEnergy": np.zeros(n),
            "ECalTotalSimCaloHitEnergy": total(sim, isEcal),
            "HCalTotalSimCaloHitEnergy": total(sim, isHcal),
            "MuonTotalSimCaloHitEnergy": total(sim, sub == YOKE),
            "LCalTotalSimCaloHitEnergy": np.zeros(n),
        },
        truth,
    )
    single = (table.scalars["nPfoTargetsTotal"] == 1) & (table.scalars["nPfoTargetsTracks"] == 1)
    selected = single[owner]
    dc = bank.hitDirectionFactor
    hist = table.histograms
    for name, code in (
        ("HCalDirectionCorrectedSimCaloHitBarrel", HCAL_BARREL),
        ("HCalDirectionCorrectedSimCaloHitEndCap", HCAL_ENDCAP),
        ("HCalDirectionCorrectedSimCaloHitOther", HCAL_RING),
    ):
        hist[name].fill((sim * dc)[selected & (sub == code)])
    hist["ECalDirectionCorrectedSimCaloHit"].fill((sim * dc)[selected & isEcal])
    for name, mask in (
        ("ECalDirectionCorrectedCaloHitEnergy", isEcal),
        ("HCalDirectionCorrectedCaloHitEnergy", isHcal),
        ("MuonDirectionCorrectedCaloHitEnergy", sub == YOKE),
    ):
        hist[name].fill((digitised * dc)[selected & mask & kept])
    return table


__all__ = ["reconstruct_muons"]
