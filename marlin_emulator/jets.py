"""Reconstruction of Z -> uds events at particle level: enough for photon training (stage 2) and
for PfoAnalysis' jet variables and fPFA, with the calibration scales acting as on showers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from marlin_emulator import geometry
from marlin_emulator.digitisation import (
    ecal_layer_coefficients,
    ecal_region_scale,
    hcal_region_constants,
    mip_threshold_loss,
    true_hcal_constants,
)
from marlin_emulator.pfo_tree import NEUTRAL_HADRON_PDG, PHOTON_PDG, pfo_table, set_calibration
from marlin_emulator.rng import hit_indices
from marlin_emulator.rootio import EventTable
from marlin_emulator.sim import PHOTON, JetBank
from marlin_emulator.steering_input import DigiParameters
from marlin_emulator.truth import DetectorTruth

if TYPE_CHECKING:
    from marlin_emulator.reco import RecoConfig


def reconstruct_jets(bank: JetBank, config: RecoConfig) -> EventTable:
    """Z -> uds: particle-level reconstruction with the calibration scales of showers."""
    truth, digi, pandora = bank.truth, config.digi, config.pandora
    n = bank.events.size
    owner = bank.owner
    index = hit_indices(np.bincount(owner, minlength=n))[1]
    events = bank.events[owner]
    absCos = np.abs(bank.cosTheta)
    ecalScale, hcalScale = _particle_scales(absCos, digi, truth)
    nominal = truth.pandora
    ecalLoss = mip_threshold_loss(
        ecalScale * pandora.ecalToMip / truth.trueEcalToMip,
        pandora.ecalMipThreshold,
        nominal.ecalMipThreshold,
        nominal.ecalSubThresholdLoss,
    )
    hcalLoss = mip_threshold_loss(
        hcalScale * pandora.hcalToMip / truth.trueHcalToMip,
        pandora.hcalMipThreshold,
        nominal.hcalMipThreshold,
        nominal.hcalSubThresholdLoss,
    )
    mismatch = config.photonId.at(bank.energy)
    c = truth.trueConstants
    photonEnergy = (
        bank.energy * ecalScale * (pandora.ecalToEm / c.ECalToEMGeVCalibration)
        * (1 - ecalLoss) / (1 - nominal.ecalSubThresholdLoss) * (1 - truth.photonId.untrainedEmEnergyLoss * mismatch)
    )
    hadronEnergy = (
        bank.energy * hcalScale * (pandora.hcalToHad / c.HCalToHadGeVCalibration)
        * (1 - hcalLoss) / (1 - nominal.hcalSubThresholdLoss) * (1 - truth.photonId.untrainedHadEnergyLoss * mismatch)
    )
    probability = truth.photonId.trainedProbabilityScale + (1 - truth.photonId.trainedProbabilityScale) * mismatch
    misId = bank.random.uniform(events, "particleMisId", index) < np.where(
        bank.kind == PHOTON, truth.photon.misIdProbability, truth.hadron.misIdProbability
    ) * probability
    charged = bank.kind == 0
    isPhotonPfo = (bank.kind == PHOTON) != misId
    pdg = np.where(charged, bank.pdg, np.where(isPhotonPfo, PHOTON_PDG, NEUTRAL_HADRON_PDG))
    trackEnergy = bank.energy * (1 + truth.muon.trackResolution * bank.random.normal(events, "trackMomentum", index))
    energy = np.where(charged, trackEnergy, np.where(bank.kind == PHOTON, photonEnergy, hadronEnergy))
    hcalShare = np.where(bank.kind == PHOTON, 0.02, 0.8)
    pfos = {
        "owner": owner,
        "pdg": pdg,
        "energy": energy,
        "x": np.where(charged, 0.0, energy * (1 - hcalShare)),
        "y": np.where(charged, 0.0, energy * hcalShare),
        "cosTheta": bank.cosTheta,
        "phi": bank.phi,
    }
    targets = {"owner": owner, "pdg": bank.pdg, "energy": bank.energy, "cosTheta": bank.cosTheta, "phi": bank.phi}
    table = pfo_table(n, pfos, targets, config)
    s = table.scalars
    s["run"] = np.full(n, bank.sample.fileIndex)
    s["event"] = bank.events.copy()
    cm = bank.sample.energy
    s["qPdg"] = bank.qPdg
    s.update(eQQ=np.full(n, cm), eQ1=np.full(n, cm / 2), eQ2=np.full(n, cm / 2), mQQ=np.full(n, cm))
    s.update(costQ1=bank.quarkCosTheta, costQ2=-bank.quarkCosTheta, thrust=np.abs(bank.quarkCosTheta))
    light = (s["qPdg"] >= 1) & (s["qPdg"] <= 3) & (s["thrust"] <= 0.7)
    table.histograms["fPFA_L7A"].fill((s["pfoEnergyTotal"] + s["mcEnergyENu"])[light])
    if config.pfoAnalysis.collectCalibrationDetails:
        neutral = ~charged
        ecal = np.bincount(owner[neutral], weights=(bank.energy * (1 - hcalShare) * ecalScale)[neutral], minlength=n)
        hcal = np.bincount(owner[neutral], weights=(bank.energy * hcalShare * hcalScale)[neutral], minlength=n)
        set_calibration(
            table,
            {
                "pfoMinHCalLayerToEdge": np.full(n, truth.hcal.nLayers // 2, dtype=np.int32),
                "hCalCaloHitEnergyFromEdge": np.zeros(n),
                "ECalTotalCaloHitEnergy": ecal,
                "HCalTotalCaloHitEnergy": hcal,
                "MuonTotalCaloHitEnergy": np.zeros(n),
                "LCalTotalCaloHitEnergy": np.zeros(n),
                "ECalTotalSimCaloHitEnergy": ecal / c.CalibrECAL[0],
                "HCalTotalSimCaloHitEnergy": hcal / c.CalibrHCALBarrel,
                "MuonTotalSimCaloHitEnergy": np.zeros(n),
                "LCalTotalSimCaloHitEnergy": np.zeros(n),
            },
            truth,
        )
    return table


def _particle_scales(absCos: np.ndarray, digi: DigiParameters, truth: DetectorTruth) -> tuple[np.ndarray, np.ndarray]:
    """Digitised over true-constant energy of ECAL and HCAL deposits of jet particles (an EM
    shower's layer weights, barrel/endcap/ring shares by angle)."""
    layers = geometry.ecal_layer_numbers(truth)
    weights = _mean_em_profile(truth)
    coefficients = ecal_layer_coefficients(digi.calibrEcal, digi.ecalLayers, layers)
    barrel = geometry.ecal_barrel_weight(absCos, truth)
    trueRegion = barrel + (1 - barrel) * truth.trueConstants.ECALEndcapCorrectionFactor
    layerRatio = (weights / np.asarray(truth.ecalLayerTrueConstants)) @ coefficients
    ecal = layerRatio * ecal_region_scale(barrel, digi, truth) / trueRegion
    shares = geometry.hcal_region_weights(absCos, truth)
    hcal = (shares / true_hcal_constants(truth)) @ hcal_region_constants(digi, truth)
    return ecal, hcal


def _mean_em_profile(truth: DetectorTruth) -> np.ndarray:
    """Energy share per ECAL layer of a 2 GeV photon at normal incidence (sums to 1)."""
    p = truth.photon
    shape = p.profileB * (np.log(2.0 / p.criticalEnergy) - 0.5) + 1.0
    cdf = special.gammainc(
        shape, p.profileB * np.clip(geometry.ecal_layer_boundaries(truth) - p.startDepthMean, 0, None)
    )
    share = np.diff(cdf)
    return share / share.sum()


__all__ = ["reconstruct_jets"]
