"""Reconstruction: sim bank + steering constants -> PfoAnalysis content (an EventTable).

DDCaloDigi digitises (``digitisation``), DDMarlinPandora clusters and builds PFOs, PfoAnalysis
fills its tree and histograms. The Pandora part (docs/calibration_physics.md 4.2):

- a cluster keeps ``kappa (1 - sub-threshold loss) (1 - photon-ID loss)`` of the digitised energy
  in each calorimeter; kappa follows from the true Pandora constants (``DetectorTruth``);
- photon PFO energy ``ECalToEM x + HCalToEM y``; neutral-hadron PFO energy
  ``ECalToHad(region) x + sum_hits min(HCalToHad E_hit, MaxHCalHitHadronicEnergy)``, with software
  compensation below ``MaxClusterEnergyToApplySoftComp``;
- fragments and mis-identification by comparing the event's stored uniform draws with the
  probabilities (scaled down when the photon likelihood is trained on this detector);
- PfoAnalysis splits every neutral PFO's energy by the digitised-energy fractions of its cluster
  in ECAL and HCAL: photons fill pfo{ECal,HCal}ToEmEnergy, other neutral PFOs the Had pair.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from ILCDIRAC.CalibrationSystem.Utilities.emulator import geometry
from ILCDIRAC.CalibrationSystem.Utilities.emulator.digitisation import (
    digitise_shower,
    ecal_layer_coefficients,
    ecal_region_scale,
    hcal_region_constants,
    hit_cap_ratio,
    mip_threshold_loss,
    soft_compensation_factor,
    threshold_losses,
    true_hcal_constants,
)
from ILCDIRAC.CalibrationSystem.Utilities.emulator.pandora import PhotonIdQuality
from ILCDIRAC.CalibrationSystem.Utilities.emulator.rng import hit_indices
from ILCDIRAC.CalibrationSystem.Utilities.emulator.rootio import EventTable, empty_histograms
from ILCDIRAC.CalibrationSystem.Utilities.emulator.samples import K0L_MASS
from ILCDIRAC.CalibrationSystem.Utilities.emulator.sim import (
    ECAL,
    HCAL_BARREL,
    HCAL_ENDCAP,
    HCAL_RING,
    NO_HCAL_HITS,
    PHOTON,
    YOKE,
    JetBank,
    MuonBank,
    ShowerBank,
)
from ILCDIRAC.CalibrationSystem.Utilities.emulator.steering_input import (
    DigiParameters,
    PandoraParameters,
    PfoAnalysisParameters,
)
from ILCDIRAC.CalibrationSystem.Utilities.emulator.truth import DetectorTruth, ring_direction_ratio

PHOTON_PDG, NEUTRAL_HADRON_PDG, MUON_PDG, K0L_PDG = 22, 2112, 13, 130
MASSES = {11: 0.000511, 13: 0.1056584, 22: 0.0, 130: K0L_MASS, 211: 0.13957, 2112: 0.939565}
CHARGED_PDGS = (11, 13, 211)
#: PfoAnalysis' "default" values of the quark variables for events without quarks.
NO_QUARKS = -99.0
#: Spread of sim-hit polar angles around the particle direction (direction-correction histograms).
HIT_ANGLE_SPREAD = 0.03
DEFAULT_PFO_ANALYSIS = PfoAnalysisParameters("PFOAnalysis.root", True, 500, 0.002)
#: Smallest digitised cluster energy (GeV) that still makes a PFO (showers lost in the forward region).
MIN_CLUSTER_ENERGY = 1e-3


@dataclass(frozen=True)
class RecoConfig:
    digi: DigiParameters
    pandora: PandoraParameters
    pfoAnalysis: PfoAnalysisParameters
    muonDigitisation: float | None  # CalibrMUON; None: the truth's
    photonId: PhotonIdQuality  # how well the photon likelihood suits this detector, per cluster energy


def reconstruct(bank: "ShowerBank | MuonBank | JetBank", config: RecoConfig) -> EventTable:
    if isinstance(bank, ShowerBank):
        return _showers(bank, config)
    if isinstance(bank, MuonBank):
        return _muons(bank, config)
    return _jets(bank, config)


# ------------------------------------------------------------------------------------ PfoAnalysis
def _pfo_analysis(n: int, pfos: dict[str, np.ndarray], targets: dict[str, np.ndarray], config: RecoConfig) -> EventTable:
    """The tree of PfoAnalysis from flat PFO and MC-target lists (``owner`` = event row)."""
    scalars: dict[str, np.ndarray] = {}

    def per_event(owner: np.ndarray, values) -> np.ndarray:
        return np.bincount(owner, weights=np.broadcast_to(values, owner.shape).astype(float), minlength=n)

    pdg = np.abs(pfos["pdg"])
    charged = np.isin(pdg, CHARGED_PDGS)
    photon = (pdg == PHOTON_PDG) & ~charged
    neutralHadron = ~charged & ~photon
    owner, energy, x, y = pfos["owner"], pfos["energy"], pfos["x"], pfos["y"]
    scalars["nPfosTotal"] = per_event(owner, 1.0)
    scalars["nPfosTracks"] = per_event(owner, charged)
    scalars["nPfosPhotons"] = per_event(owner, photon)
    scalars["nPfosNeutralHadrons"] = per_event(owner, neutralHadron)
    scalars["pfoEnergyTotal"] = per_event(owner, energy)
    scalars["pfoEnergyTracks"] = per_event(owner, energy * charged)
    scalars["pfoEnergyPhotons"] = per_event(owner, energy * photon)
    scalars["pfoEnergyNeutralHadrons"] = per_event(owner, energy * neutralHadron)
    cells = x + y
    correction = np.divide(energy, cells, out=np.zeros_like(energy), where=(cells > 0) & ~charged)
    scalars["pfoECalToEmEnergy"] = per_event(owner, correction * x * photon)
    scalars["pfoHCalToEmEnergy"] = per_event(owner, correction * y * photon)
    scalars["pfoECalToHadEnergy"] = per_event(owner, correction * x * neutralHadron)
    scalars["pfoHCalToHadEnergy"] = per_event(owner, correction * y * neutralHadron)
    scalars["pfoOtherEnergy"] = np.zeros(n)
    scalars["pfoMuonToEnergy"] = np.zeros(n)
    vectors = {}
    pfoMomenta = _momenta(pfos)
    total = [per_event(owner, p) for p in pfoMomenta]
    scalars["pfoMassTotal"] = np.sqrt(np.clip(scalars["pfoEnergyTotal"] ** 2 - sum(t**2 for t in total), 0.0, None))
    for name, values in zip(("pfoPx", "pfoPy", "pfoPz"), pfoMomenta):
        vectors[name] = values
    vectors.update(pfoEnergies=energy, pfoCosTheta=pfos["cosTheta"], pfoPdgCodes=pfos["pdg"])
    order = np.lexsort((-targets["energy"], targets["owner"]))
    targets = {k: v[order] for k, v in targets.items()}
    tOwner, tEnergy, tPdg = targets["owner"], targets["energy"], np.abs(targets["pdg"])
    tCharged = np.isin(tPdg, CHARGED_PDGS)
    tPhoton = tPdg == PHOTON_PDG
    tNeutralHadron = ~tCharged & ~tPhoton
    scalars["nPfoTargetsTotal"] = per_event(tOwner, 1.0)
    scalars["nPfoTargetsTracks"] = per_event(tOwner, tCharged)
    scalars["nPfoTargetsPhotons"] = per_event(tOwner, tPhoton)
    scalars["nPfoTargetsNeutralHadrons"] = per_event(tOwner, tNeutralHadron)
    scalars["pfoTargetsEnergyTotal"] = per_event(tOwner, tEnergy)
    scalars["pfoTargetsEnergyTracks"] = per_event(tOwner, tEnergy * tCharged)
    scalars["pfoTargetsEnergyPhotons"] = per_event(tOwner, tEnergy * tPhoton)
    scalars["pfoTargetsEnergyNeutralHadrons"] = per_event(tOwner, tEnergy * tNeutralHadron)
    scalars["mcEnergyENu"] = np.zeros(n)
    scalars["mcEnergyFwd"] = per_event(tOwner, tEnergy * (np.abs(targets["cosTheta"]) > 0.98))
    for name, values in zip(("pfoTargetPx", "pfoTargetPy", "pfoTargetPz"), _momenta(targets)):
        vectors[name] = values
    vectors.update(pfoTargetEnergies=tEnergy, pfoTargetCosTheta=targets["cosTheta"], pfoTargetPdgCodes=targets["pdg"])
    for name in ("eQQ", "eQ1", "eQ2", "costQQ", "costQ1", "costQ2", "mQQ", "thrust"):
        scalars[name] = np.full(n, NO_QUARKS)
    scalars["qPdg"] = np.full(n, int(NO_QUARKS))
    histograms = empty_histograms(
        config.pfoAnalysis.collectCalibrationDetails, config.pfoAnalysis.muonHistogramBins, config.pfoAnalysis.muonHistogramHigh
    )
    histograms["fPFA"].fill(scalars["pfoEnergyTotal"])
    return EventTable(
        scalars=scalars,
        counts={"pfo": np.bincount(owner, minlength=n), "target": np.bincount(tOwner, minlength=n)},
        vectors=vectors,
        histograms=histograms,
    )


def _momenta(particles: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes = np.abs(particles["pdg"])
    mass = np.zeros(codes.size)
    for code, value in MASSES.items():
        mass[codes == code] = value
    p = np.sqrt(np.clip(particles["energy"] ** 2 - mass**2, 0.0, None))
    cos = particles["cosTheta"]
    sin = np.sqrt(np.clip(1.0 - cos**2, 0.0, None))
    return p * sin * np.cos(particles["phi"]), p * sin * np.sin(particles["phi"]), p * cos


def _set_calibration(table: EventTable, values: dict[str, np.ndarray], truth: DetectorTruth) -> None:
    """CalibrationHelper's branches (quirk 4 optional: the edge energy stored through an int)."""
    scalars = table.scalars
    zero = np.zeros(table.nEvents)
    for name in ("BCal", "LHCal"):
        scalars[f"{name}TotalCaloHitEnergy"] = zero
        scalars[f"{name}TotalSimCaloHitEnergy"] = zero
    for name, value in values.items():
        scalars[name] = value
    scalars["TotalCaloHitEnergy"] = sum(scalars[f"{d}TotalCaloHitEnergy"] for d in ("ECal", "HCal", "Muon", "BCal", "LHCal", "LCal"))
    scalars["TotalSimCaloHitEnergy"] = sum(scalars[f"{d}TotalSimCaloHitEnergy"] for d in ("ECal", "HCal", "Muon", "BCal", "LHCal", "LCal"))
    if truth.quirks.hCalEnergyFromEdgeIntBug:
        stored = np.trunc(scalars["hCalCaloHitEnergyFromEdge"]).astype(np.int32)
        scalars["hCalCaloHitEnergyFromEdge"] = stored.view(np.float32).astype(float)


# ------------------------------------------------------------------------------------ showers
def _showers(bank: ShowerBank, config: RecoConfig) -> EventTable:
    truth, pandora = bank.truth, config.pandora
    n = bank.events.size
    absCos = np.abs(bank.cosTheta)
    calorimetry = digitise_shower(bank.ecalPrompt, bank.ecalBarrelWeight, bank.hcalPrompt, geometry.ecal_layer_numbers(truth), config.digi, truth)
    ecalLoss, hcalLoss = threshold_losses(calorimetry, pandora, truth)
    kinetic = bank.sample.energy - (0.0 if bank.isPhoton else K0L_MASS)
    mismatch = config.photonId.at(np.full(n, kinetic))
    idLoss = (truth.photonId.untrainedEmEnergyLoss if bank.isPhoton else truth.photonId.untrainedHadEnergyLoss) * mismatch
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
    ecalToHad = bank.ecalBarrelWeight * pandora.ecalToHadBarrel + (1.0 - bank.ecalBarrelWeight) * pandora.ecalToHadEndcap

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
    neutralEnergies = np.stack([pfo_energy(mainPdg, slots["x"][:, 0], slots["y"][:, 0]), pfo_energy(fragmentPdg, slots["x"][:, 1], slots["y"][:, 1])], axis=1)
    slots["energy"] = np.where(converted[:, None], trackEnergies, neutralEnergies)
    slots["cosTheta"] = np.repeat(bank.cosTheta[:, None], 2, axis=1)
    slots["phi"] = np.repeat(bank.phi[:, None], 2, axis=1)
    valid = slots.pop("valid")
    rows = np.repeat(np.arange(n)[:, None], 2, axis=1)
    pfos = {k: v[valid] for k, v in slots.items()} | {"owner": rows[valid]}
    targets = _shower_targets(bank)
    table = _pfo_analysis(n, pfos, targets, config)
    table.scalars["run"] = np.full(n, bank.sample.fileIndex)
    table.scalars["event"] = bank.events.copy()
    if config.pfoAnalysis.collectCalibrationDetails:
        muon = (config.muonDigitisation or truth.muonSystem.digitisationConstant) * bank.yokeSim
        _set_calibration(
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
        "pdg": np.concatenate([np.full(single.sum(), pdg), np.full(converted.sum(), -11), np.full(converted.sum(), 11)]),
        "energy": np.concatenate(
            [np.full(single.sum(), energy), energy * bank.conversionShare[converted], energy * (1 - bank.conversionShare[converted])]
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
    photons = single & (s["nPfoTargetsPhotons"] == 1) & (s["TotalCaloHitEnergy"] - s["ECalTotalCaloHitEnergy"] < 0.01 * s["pfoTargetsEnergyTotal"])
    random = bank.random
    ringMean = truth.hcal.endcapDirectionFactorMean / ring_direction_ratio(truth.trueConstants, truth.mipSimEnergy)
    for column, name in enumerate(("HCalBarrelDirectionCorrectionSimCaloHit", "HCalEndCapDirectionCorrectionSimCaloHit", "HCalOtherDirectionCorrectionSimCaloHit")):
        owner, index = hit_indices(np.where(hadrons, bank.hcalHits[:, column], 0))
        events = bank.events[owner]
        if column == 0:
            factors = _hit_sin(absCos[owner], random.normal(events, "hcalHitAngle", index))
        else:
            mean = truth.hcal.endcapDirectionFactorMean if column == 1 else ringMean
            factors = random.beta(mean, truth.hcal.directionFactorSpread, events, f"hcalHitDirection{column}", index)
        hist[name].fill(factors)
    for column, name in enumerate(("ECalBarrelDirectionCorrectionSimCaloHit", "ECalEndCapDirectionCorrectionSimCaloHit")):
        owner, index = hit_indices(np.where(photons, bank.ecalHits[:, column], 0))
        spread = random.normal(bank.events[owner], f"ecalHitAngle{column}", index)
        hitCos = np.clip(absCos[owner] + HIT_ANGLE_SPREAD * spread, 0.0, 0.9999)
        hist[name].fill(_hit_sin(absCos[owner], spread) if column == 0 else hitCos)


def _hit_sin(absCos: np.ndarray, spread: np.ndarray) -> np.ndarray:
    hitCos = np.clip(absCos + HIT_ANGLE_SPREAD * spread, 0.0, 0.9999)
    return np.sqrt(1.0 - hitCos**2)


# ------------------------------------------------------------------------------------ muons
def _muons(bank: MuonBank, config: RecoConfig) -> EventTable:
    truth, digi = bank.truth, config.digi
    n = bank.events.size
    sub, sim, owner = bank.hitSubdetector, bank.hitSimEnergy, bank.hitOwner
    ecalCoefficient = ecal_layer_coefficients(digi.calibrEcal, digi.ecalLayers, bank.hitLayer)
    hcalConstants = hcal_region_constants(digi, truth)
    muonConstant = config.muonDigitisation or truth.muonSystem.digitisationConstant
    factor = np.select(
        [sub == ECAL, sub == HCAL_BARREL, sub == HCAL_ENDCAP, sub == HCAL_RING],
        [ecalCoefficient * np.where(bank.hitEndcap, digi.ecalEndcapCorrectionFactor, 1.0), hcalConstants[0], hcalConstants[1], hcalConstants[2]],
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
    targets = {"owner": np.arange(n), "pdg": np.full(n, MUON_PDG), "energy": np.full(n, energy), "cosTheta": bank.cosTheta, "phi": bank.phi}
    table = _pfo_analysis(n, pfos, targets, config)
    table.scalars["run"] = np.full(n, bank.sample.fileIndex)
    table.scalars["event"] = bank.events.copy()
    if not config.pfoAnalysis.collectCalibrationDetails:
        return table

    def total(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(owner[mask], weights=values[mask], minlength=n)

    nearEdge = isHcal & (bank.hitLayer >= truth.hcal.nLayers - 5)
    _set_calibration(
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


# ------------------------------------------------------------------------------------ jets
def _jets(bank: JetBank, config: RecoConfig) -> EventTable:
    """Z -> uds: particle-level reconstruction with the calibration scales of showers."""
    truth, digi, pandora = bank.truth, config.digi, config.pandora
    n = bank.events.size
    owner = bank.owner
    index = hit_indices(np.bincount(owner, minlength=n))[1]
    events = bank.events[owner]
    absCos = np.abs(bank.cosTheta)
    ecalScale, hcalScale = _particle_scales(absCos, digi, truth)
    nominal = truth.pandora
    ecalLoss = mip_threshold_loss(ecalScale * pandora.ecalToMip / truth.trueEcalToMip, pandora.ecalMipThreshold, nominal.ecalMipThreshold, nominal.ecalSubThresholdLoss)
    hcalLoss = mip_threshold_loss(hcalScale * pandora.hcalToMip / truth.trueHcalToMip, pandora.hcalMipThreshold, nominal.hcalMipThreshold, nominal.hcalSubThresholdLoss)
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
    table = _pfo_analysis(n, pfos, targets, config)
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
        _set_calibration(
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
    cdf = special.gammainc(shape, p.profileB * np.clip(geometry.ecal_layer_boundaries(truth) - p.startDepthMean, 0, None))
    share = np.diff(cdf)
    return share / share.sum()


def training_candidates(bank: "ShowerBank | MuonBank | JetBank") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photon-ID training candidates: (cluster EM energy, MC photon?, event number, index in event)."""
    if isinstance(bank, JetBank):
        return bank.candidateEnergy, bank.candidateSignal, bank.events[bank.candidateOwner], bank.candidateIndex
    if isinstance(bank, MuonBank):
        empty = np.zeros(0)
        return empty, empty.astype(bool), empty.astype(np.int64), empty.astype(np.int64)
    neutral = ~bank.converted
    energy = bank.sample.energy - (0.0 if bank.isPhoton else K0L_MASS)
    events = bank.events[neutral]
    return (
        np.full(events.size, energy),
        np.full(events.size, bank.isPhoton),
        events,
        np.zeros(events.size, dtype=np.int64),
    )


__all__ = ["DEFAULT_PFO_ANALYSIS", "RecoConfig", "reconstruct", "training_candidates"]
