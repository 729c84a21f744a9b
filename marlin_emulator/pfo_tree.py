"""PfoAnalysis' tree from reconstructed PFOs and MC targets (PfoAnalysis.cc, CalibrationHelper.cc).

Per event: PFO counts and energies by type (tracks, photons, other neutrals), the Em/Had split of
every neutral PFO by the digitised-energy fractions of its cluster in ECAL and HCAL (photons fill
pfo{ECal,HCal}ToEmEnergy, other neutral PFOs the Had pair), the MC targets sorted by energy, and
with CollectCalibrationDetails the CalibrationHelper branches.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from marlin_emulator.rootio import EventTable, empty_histograms
from marlin_emulator.samples import K0L_MASS
from marlin_emulator.truth import DetectorTruth

if TYPE_CHECKING:
    from marlin_emulator.reco import RecoConfig

PHOTON_PDG, NEUTRAL_HADRON_PDG, MUON_PDG, K0L_PDG = 22, 2112, 13, 130
MASSES = {11: 0.000511, 13: 0.1056584, 22: 0.0, 130: K0L_MASS, 211: 0.13957, 2112: 0.939565}
CHARGED_PDGS = (11, 13, 211)
#: PfoAnalysis' "default" values of the quark variables for events without quarks.
NO_QUARKS = -99.0


def pfo_table(n: int, pfos: dict[str, np.ndarray], targets: dict[str, np.ndarray], config: RecoConfig) -> EventTable:
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
    pfoMomenta = momenta(pfos)
    total = [per_event(owner, p) for p in pfoMomenta]
    scalars["pfoMassTotal"] = np.sqrt(np.clip(scalars["pfoEnergyTotal"] ** 2 - sum(t**2 for t in total), 0.0, None))
    for name, values in zip(("pfoPx", "pfoPy", "pfoPz"), pfoMomenta, strict=True):
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
    for name, values in zip(("pfoTargetPx", "pfoTargetPy", "pfoTargetPz"), momenta(targets), strict=True):
        vectors[name] = values
    vectors.update(pfoTargetEnergies=tEnergy, pfoTargetCosTheta=targets["cosTheta"], pfoTargetPdgCodes=targets["pdg"])
    for name in ("eQQ", "eQ1", "eQ2", "costQQ", "costQ1", "costQ2", "mQQ", "thrust"):
        scalars[name] = np.full(n, NO_QUARKS)
    scalars["qPdg"] = np.full(n, int(NO_QUARKS))
    histograms = empty_histograms(
        config.pfoAnalysis.collectCalibrationDetails,
        config.pfoAnalysis.muonHistogramBins,
        config.pfoAnalysis.muonHistogramHigh,
    )
    histograms["fPFA"].fill(scalars["pfoEnergyTotal"])
    return EventTable(
        scalars=scalars,
        counts={"pfo": np.bincount(owner, minlength=n), "target": np.bincount(tOwner, minlength=n)},
        vectors=vectors,
        histograms=histograms,
    )


def momenta(particles: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes = np.abs(particles["pdg"])
    mass = np.zeros(codes.size)
    for code, value in MASSES.items():
        mass[codes == code] = value
    p = np.sqrt(np.clip(particles["energy"] ** 2 - mass**2, 0.0, None))
    cos = particles["cosTheta"]
    sin = np.sqrt(np.clip(1.0 - cos**2, 0.0, None))
    return p * sin * np.cos(particles["phi"]), p * sin * np.sin(particles["phi"]), p * cos


def set_calibration(table: EventTable, values: dict[str, np.ndarray], truth: DetectorTruth) -> None:
    """CalibrationHelper's branches (quirk 4 optional: the edge energy stored through an int)."""
    scalars = table.scalars
    zero = np.zeros(table.nEvents)
    for name in ("BCal", "LHCal"):
        scalars[f"{name}TotalCaloHitEnergy"] = zero
        scalars[f"{name}TotalSimCaloHitEnergy"] = zero
    for name, value in values.items():
        scalars[name] = value
    scalars["TotalCaloHitEnergy"] = sum(
        (scalars[f"{d}TotalCaloHitEnergy"] for d in ("ECal", "HCal", "Muon", "BCal", "LHCal", "LCal")), zero
    )
    scalars["TotalSimCaloHitEnergy"] = sum(
        (scalars[f"{d}TotalSimCaloHitEnergy"] for d in ("ECal", "HCal", "Muon", "BCal", "LHCal", "LCal")), zero
    )
    if truth.quirks.hCalEnergyFromEdgeIntBug:
        stored = np.trunc(scalars["hCalCaloHitEnergyFromEdge"]).astype(np.int32)
        scalars["hCalCaloHitEnergyFromEdge"] = stored.view(np.float32).astype(float)


__all__ = [
    "CHARGED_PDGS",
    "K0L_PDG",
    "MASSES",
    "MUON_PDG",
    "NEUTRAL_HADRON_PDG",
    "NO_QUARKS",
    "PHOTON_PDG",
    "momenta",
    "pfo_table",
    "set_calibration",
]
