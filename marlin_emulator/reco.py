"""Reconstruction: sim bank + steering constants -> PfoAnalysis content (an EventTable).

DDCaloDigi digitises (``digitisation``), DDMarlinPandora clusters and builds PFOs, PfoAnalysis
fills its tree and histograms (``pfo_tree``); one module per kind of sample: ``showers`` (photons,
K0L), ``muons``, ``jets`` (Z -> uds). docs/PHYSICS.md section 8.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marlin_emulator.jets import reconstruct_jets
from marlin_emulator.muons import reconstruct_muons
from marlin_emulator.pandora import PhotonIdQuality
from marlin_emulator.rootio import EventTable
from marlin_emulator.samples import K0L_MASS
from marlin_emulator.showers import reconstruct_showers
from marlin_emulator.sim import JetBank, MuonBank, ShowerBank
from marlin_emulator.steering_input import (
    DigiParameters,
    PandoraParameters,
    PfoAnalysisParameters,
)

#: PfoAnalysis settings used for the computation when the steering runs no PfoAnalysis.
DEFAULT_PFO_ANALYSIS = PfoAnalysisParameters("PFOAnalysis.root", True, 500, 0.002)


@dataclass(frozen=True)
class RecoConfig:
    digi: DigiParameters
    pandora: PandoraParameters
    pfoAnalysis: PfoAnalysisParameters
    muonDigitisation: float | None  # CalibrMUON; None: the truth's
    photonId: PhotonIdQuality  # how well the photon likelihood suits this detector, per cluster energy


def reconstruct(bank: ShowerBank | MuonBank | JetBank, config: RecoConfig) -> EventTable:
    if isinstance(bank, ShowerBank):
        return reconstruct_showers(bank, config)
    if isinstance(bank, MuonBank):
        return reconstruct_muons(bank, config)
    return reconstruct_jets(bank, config)


def training_candidates(bank: ShowerBank | MuonBank | JetBank) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
