"""Reconstruction of single photons and K0L (one shower per event).

DDCaloDigi digitises the sim bank (``digitisation``); Pandora clusters keep
``kappa (1 - sub-threshold loss) (1 - photon-ID loss)`` of the digitised energy in each calorimeter
(kappa from the true Pandora constants); photon PFOs get ``ECalToEM x + HCalToEM y``, neutral
hadrons ``ECalToHad(region) x + sum_hits min(HCalToHad E_hit, MaxHCalHitHadronicEnergy)`` with
software compensation below ``MaxClusterEnergyToApplySoftComp``; fragments and mis-identification
compare the event's stored uniform draws with the probabilities (scaled down when the photon
likelihood suits the detector). Converted photons become two track PFOs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from marlin_emulator import geometry
from marlin_emulator.digitisation import (
    digitise_shower,
    hit_cap_ratio,
    soft_compensation_factor,
    threshold_losses,
)
from marlin_emulator.pfo_tree import (
    K0L_PDG,
    NEUTRAL_HADRON_PDG,
    PHOTON_PDG,
    pfo_table,
    set_calibration,
)
from marlin_emulator.rng import hit_indices
from marlin_emulator.rootio import EventTable
from marlin_emulator.samples import K0L_MASS
from marlin_emulator.sim import ShowerBank
from marlin_emulator.truth import ring_direction_ratio

if TYPE_CHECKING:
    from marlin_emulator.reco import RecoConfig

#: Spread of sim-hit polar angles around the particle direction (direction-correction histograms).
HIT_ANGLE_SPREAD = 0.03
#: Smallest digitised cluster energy (GeV) that still makes a PFO (showers lost in the forward region).
MIN_CLUSTER_ENERGY = 1e-3


def reconstruct_showers(bank: ShowerBank, config: RecoConfig) -> EventTable:
    truth, pandora = bank.truth, config.pandora
    n = bank.events.size
    absCos = np.abs(bank.cosTheta)
    calorimetry = digitise_shower(
        bank.ecalPrompt, bank.ecalBarrelWeight, bank.hcalPrompt, geometry.ecal_layer_numbers(truth), config.digi, truth
    )
    ecalLoss, hcalLoss = threshold_losses(calorimetry, pandora, truth)
    kinetic = bank.sample.energy - (0.0 if bank.isPhoton else K0L_MASS)
    mismatch = config.photonId.at(np.full(n, kinetic))
    idLoss = (
        truth.photonId.untrainedEmEnergyLoss if bank.isPhoton else truth.photonId.untrainedHadEnergyLoss
    ) * mismatch
    x = truth.ecalClusterCapture * (1.0 - ecalLoss) * (1.0 - idLoss) * calorimetry.ecal
    y = truth.hcalClusterCapture * (1.0 - hcalLoss) * (1.0 - idLoss) * calorimetry.hcal
    physics = truth.photon if bank.isPhoton else truth.hadron
    scale = truth.photonId.trainedProbabilityScale + (1.0 - truth.photonId.trainedProbabilityScale) * mismatch
    fragmented = bank.uFragment < physics.fragmentProbability * scale
    misIdentified = bank.uMisId < physics.misIdProbability * scale
    if bank.isPhoton:
        mainPdg = np.where(misIdentified, NEUTRAL_HADRON_PDG, PHOTON_PDG)
        fragmentPdg = np.where(bank.uFragmentType < 0.5, PHOTON_PDG, NEUTRAL_HADRON_PDG)
    else:
        mainPdg = np.where(misIdentified, PHOTON_PDG, NEUTRAL_HADRON_PDG)
        fragmentPdg = np.where(bank.uFragmentType < 0.4, PHOTON_PDG, NEUTRAL_HADRON_PDG)
    share = np.where(fragmented, bank.fragmentFraction, 0.0)
    hadronScale = pandora.hcalToHad / truth.trueConstants.HCalToHadGeVCalibration
    hcalRho = np.divide(calorimetry.hcal, calorimetry.hcalTrue, out=np.ones(n), where=calorimetry.hcalTrue > 0)
    capRatio = hit_cap_ratio(hadronScale * hcalRho, pandora.maxHcalHitHadronicEnergy, truth)
    softComp = soft_compensation_factor(bank.emFraction, kinetic, truth)
    ecalToHad = (
        bank.ecalBarrelWeight * pandora.ecalToHadBarrel + (1.0 - bank.ecalBarrelWeight) * pandora.ecalToHadEndcap
    )

    def pfo_energy(pdg: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        electromagnetic = pandora.ecalToEm * xs + pandora.hcalToEm * ys
        hadronic = ecalToHad * xs + pandora.hcalToHad * ys * capRatio
        hadronic = np.where(hadronic < pandora.maxClusterEnergyToApplySoftComp, hadronic * softComp, hadronic)
        return np.where(pdg == PHOTON_PDG, electromagnetic, hadronic)

    converted = bank.converted
    seen = x + y > MIN_CLUSTER_ENERGY  # Pandora makes no PFO from a shower that left no hits
    slots = {
        "valid": np.stack([converted | seen, converted | (fragmented & seen)], axis=1),
        "pdg": np.stack([np.where(converted, -11, mainPdg), np.where(converted, 11, fragmentPdg)], axis=1),
        "x": np.stack([np.where(converted, 0.0, (1 - share) * x), np.where(converted, 0.0, share * x)], axis=1),
        "y": np.stack([np.where(converted, 0.0, (1 - share) * y), np.where(converted, 0.0, share * y)], axis=1),
    }
    energy = bank.sample.energy
    trackEnergies = np.stack([energy * bank.conversionShare, energy * (1 - bank.conversionShare)], axis=1)
    neutralEnergies = np.stack(
        [
            pfo_energy(mainPdg, slots["x"][:, 0], slots["y"][:, 0]),
            pfo_energy(fragmentPdg, slots["x"][:, 1], slots["y"][:, 1]),
        ],
        axis=1,
    )
    slots["energy"] = np.where(converted[:, None], trackEnergies, neutralEnergies)
    slots["cosTheta"] = np.repeat(bank.cosTheta[:, None], 2, axis=1)
    slots["phi"] = np.repeat(bank.phi[:, None], 2, axis=1)
    valid = slots.pop("valid")
    rows = np.repeat(np.arange(n)[:, None], 2, axis=1)
    pfos = {k: v[valid] for k, v in slots.items()} | {"owner": rows[valid]}
    targets = _shower_targets(bank)
    table = pfo_table(n, pfos, targets, config)
    table.scalars["run"] = np.full(n, bank.sample.fileIndex)
    table.scalars["event"] = bank.events.copy()
    if config.pfoAnalysis.collectCalibrationDetails:
        muon = (config.muonDigitisation or truth.muonSystem.digitisationConstant) * bank.yokeSim
        set_calibration(
            table,
            {
                "pfoMinHCalLayerToEdge": bank.layersToEdge,
                "hCalCaloHitEnergyFromEdge": bank.hcalLastLayersFraction * calorimetry.hcal,
                "ECalTotalCaloHitEnergy": calorimetry.ecal,
                "HCalTotalCaloHitEnergy": calorimetry.hcal,
                "MuonTotalCaloHitEnergy": muon,
                "LCalTotalCaloHitEnergy": bank.lcalEnergy,
                "ECalTotalSimCaloHitEnergy": calorimetry.ecalSim,
                "HCalTotalSimCaloHitEnergy": calorimetry.hcalSim,
                "MuonTotalSimCaloHitEnergy": bank.yokeSim,
                "LCalTotalSimCaloHitEnergy": 0.015 * bank.lcalEnergy,
            },
            truth,
        )
        _fill_direction_corrections(bank, table, absCos)
    return table


def _shower_targets(bank: ShowerBank) -> dict[str, np.ndarray]:
    n, energy, converted = bank.events.size, bank.sample.energy, bank.converted
    single = ~converted
    pdg = PHOTON_PDG if bank.isPhoton else K0L_PDG
    rows = np.arange(n)
    owner = np.concatenate([rows[single], rows[converted], rows[converted]])
    return {
        "owner": owner,
        "pdg": np.concatenate(
            [np.full(single.sum(), pdg), np.full(converted.sum(), -11), np.full(converted.sum(), 11)]
        ),
        "energy": np.concatenate(
            [
                np.full(single.sum(), energy),
                energy * bank.conversionShare[converted],
                energy * (1 - bank.conversionShare[converted]),
            ]
        ),
        "cosTheta": bank.cosTheta[owner],
        "phi": bank.phi[owner],
    }


def _fill_direction_corrections(bank: ShowerBank, table: EventTable, absCos: np.ndarray) -> None:
    """CalibrationHelper's direction-correction histograms (1/correction of every sim hit)."""
    s, truth, hist = table.scalars, bank.truth, table.histograms
    single = s["nPfoTargetsTotal"] == 1
    hadrons = single & (s["nPfoTargetsNeutralHadrons"] == 1) & (
        s["TotalCaloHitEnergy"] - s["HCalTotalCaloHitEnergy"] < 0.01 * s["pfoTargetsEnergyTotal"]
    ) & (s["pfoMinHCalLayerToEdge"] > 5)
    photons = (
        single
        & (s["nPfoTargetsPhotons"] == 1)
        & (s["TotalCaloHitEnergy"] - s["ECalTotalCaloHitEnergy"] < 0.01 * s["pfoTargetsEnergyTotal"])
    )
    random = bank.random
    ringMean = truth.hcal.endcapDirectionFactorMean / ring_direction_ratio(truth.trueConstants, truth.mipSimEnergy)
    for column, name in enumerate(
        (
            "HCalBarrelDirectionCorrectionSimCaloHit",
            "HCalEndCapDirectionCorrectionSimCaloHit",
            "HCalOtherDirectionCorrectionSimCaloHit",
        )
    ):
        owner, index = hit_indices(np.where(hadrons, bank.hcalHits[:, column], 0))
        events = bank.events[owner]
        if column == 0:
            factors = _hit_sin(absCos[owner], random.normal(events, "hcalHitAngle", index))
        else:
            mean = truth.hcal.endcapDirectionFactorMean if column == 1 else ringMean
            factors = random.beta(mean, truth.hcal.directionFactorSpread, events, f"hcalHitDirection{column}", index)
        hist[name].fill(factors)
    for column, name in enumerate(
        ("ECalBarrelDirectionCorrectionSimCaloHit", "ECalEndCapDirectionCorrectionSimCaloHit")
    ):
        owner, index = hit_indices(np.where(photons, bank.ecalHits[:, column], 0))
        spread = random.normal(bank.events[owner], f"ecalHitAngle{column}", index)
        hitCos = np.clip(absCos[owner] + HIT_ANGLE_SPREAD * spread, 0.0, 0.9999)
        hist[name].fill(_hit_sin(absCos[owner], spread) if column == 0 else hitCos)


def _hit_sin(absCos: np.ndarray, spread: np.ndarray) -> np.ndarray:
    hitCos = np.clip(absCos + HIT_ANGLE_SPREAD * spread, 0.0, 0.9999)
    return np.sqrt(1.0 - hitCos**2)


__all__ = ["reconstruct_showers"]
