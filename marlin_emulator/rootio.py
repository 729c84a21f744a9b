"""PfoAnalysis' output, in memory and as the ROOT file (uproot).

``EventTable`` holds one reconstruction's tree (scalar branches, and vector branches as
counts + flat values) and its TH1F histograms; tables of several input files concatenate.
``write_pfoanalysis`` writes the TTree ``PfoAnalysisTree`` with PfoAnalysis' branch names and types
(vectors as jagged ``var * float32`` / ``var * int32`` branches, i.e. C arrays with a counter
``n<branch>``)
and the histograms as TH1F (the binnings of ``Utilities/pfoanalysis.CALIBRATION_HISTOGRAMS``).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

TREE = "PfoAnalysisTree"

INT_BRANCHES = (
    "run", "event", "nPfosTotal", "nPfosNeutralHadrons", "nPfosPhotons", "nPfosTracks",
    "nPfoTargetsTotal", "nPfoTargetsNeutralHadrons", "nPfoTargetsPhotons", "nPfoTargetsTracks", "qPdg",
)
FLOAT_BRANCHES = (
    "pfoEnergyTotal", "pfoEnergyNeutralHadrons", "pfoEnergyPhotons", "pfoEnergyTracks",
    "pfoECalToEmEnergy", "pfoECalToHadEnergy", "pfoHCalToEmEnergy", "pfoHCalToHadEnergy",
    "pfoOtherEnergy", "pfoMuonToEnergy", "pfoMassTotal",
    "pfoTargetsEnergyTotal", "pfoTargetsEnergyNeutralHadrons", "pfoTargetsEnergyPhotons", "pfoTargetsEnergyTracks",
    "mcEnergyENu", "mcEnergyFwd", "eQQ", "eQ1", "eQ2", "costQQ", "costQ1", "costQ2", "mQQ", "thrust",
)
#: Written only with CollectCalibrationDetails (CalibrationHelper).
CALIBRATION_INT_BRANCHES = ("pfoMinHCalLayerToEdge",)
CALIBRATION_FLOAT_BRANCHES = (
    "hCalCaloHitEnergyFromEdge", "TotalCaloHitEnergy",
    "ECalTotalCaloHitEnergy", "HCalTotalCaloHitEnergy", "MuonTotalCaloHitEnergy",
    "BCalTotalCaloHitEnergy", "LHCalTotalCaloHitEnergy", "LCalTotalCaloHitEnergy",
    "TotalSimCaloHitEnergy", "ECalTotalSimCaloHitEnergy", "HCalTotalSimCaloHitEnergy", "MuonTotalSimCaloHitEnergy",
    "BCalTotalSimCaloHitEnergy", "LHCalTotalSimCaloHitEnergy", "LCalTotalSimCaloHitEnergy",
)
#: Vector branches, grouped by the collection whose length they share.
PFO_VECTORS = {"pfoEnergies": "f", "pfoPx": "f", "pfoPy": "f", "pfoPz": "f", "pfoCosTheta": "f", "pfoPdgCodes": "i"}
TARGET_VECTORS = {
    "pfoTargetEnergies": "f", "pfoTargetPx": "f", "pfoTargetPy": "f", "pfoTargetPz": "f",
    "pfoTargetCosTheta": "f", "pfoTargetPdgCodes": "i",
}
VECTOR_GROUPS = {"pfo": PFO_VECTORS, "target": TARGET_VECTORS}

#: PfoAnalysis' event histograms: name -> (bins, low, high).
PFA_HISTOGRAMS = {"fPFA": (10000, 0.0, 5000.0), "fPFA_L7A": (10000, 0.0, 5000.0)}
#: CalibrationHelper's histograms; the muon one takes its binning from the PfoAnalysis parameters.
CALIBRATION_HISTOGRAMS = {
    "HCalBarrelDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
    "HCalEndCapDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
    "HCalOtherDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
    "ECalBarrelDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
    "ECalEndCapDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
    "ECalOtherDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
    "HCalDirectionCorrectedSimCaloHitBarrel": (200, 0.0, 0.001),
    "HCalDirectionCorrectedSimCaloHitEndCap": (200, 0.0, 0.001),
    "HCalDirectionCorrectedSimCaloHitOther": (200, 0.0, 0.005),
    "ECalDirectionCorrectedSimCaloHit": (200, 0.0, 0.001),
    "ECalDirectionCorrectedCaloHitEnergy": (500, 0.0, 0.1),
    "HCalDirectionCorrectedCaloHitEnergy": (500, 0.0, 0.1),
    "MuonDirectionCorrectedCaloHitEnergy": (500, 0.0, 0.002),
}


@dataclass
class Hist1D:
    """A TH1F: contents with underflow (index 0) and overflow (index bins + 1), and its statistics."""

    bins: int
    low: float
    high: float
    contents: np.ndarray = field(init=False)
    entries: float = 0.0
    sumw: float = 0.0
    sumw2: float = 0.0
    sumwx: float = 0.0
    sumwx2: float = 0.0

    def __post_init__(self) -> None:
        self.contents = np.zeros(self.bins + 2)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)

    def fill(self, values: np.ndarray) -> None:
        """Fill unit-weight entries, with ROOT's bin convention (x == high goes to overflow)."""
        values = np.asarray(values, dtype=float).ravel()
        if not values.size:
            return
        index = np.floor((values - self.low) * (self.bins / (self.high - self.low))).astype(np.int64) + 1
        index = np.clip(index, 0, self.bins + 1)
        self.contents += np.bincount(index, minlength=self.bins + 2)
        inRange = values[(index >= 1) & (index <= self.bins)]
        self.entries += values.size
        self.sumw += inRange.size
        self.sumw2 += inRange.size
        self.sumwx += float(inRange.sum())
        self.sumwx2 += float(np.square(inRange).sum())

    def add(self, other: Hist1D) -> None:
        if (other.bins, other.low, other.high) != (self.bins, self.low, self.high):
            raise ValueError(f"cannot add histograms of different binning ({other.bins} vs {self.bins} bins)")
        self.contents = self.contents + other.contents
        self.entries += other.entries
        self.sumw += other.sumw
        self.sumw2 += other.sumw2
        self.sumwx += other.sumwx
        self.sumwx2 += other.sumwx2


@dataclass
class EventTable:
    """One reconstruction's PfoAnalysis content before it is written."""

    scalars: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]  # vector group -> per-event length
    vectors: dict[str, np.ndarray]  # vector branch -> flat values
    histograms: dict[str, Hist1D]

    @property
    def nEvents(self) -> int:
        return int(next(iter(self.scalars.values())).size) if self.scalars else 0

    @staticmethod
    def concatenate(tables: Iterable[EventTable]) -> EventTable:
        tables = list(tables)
        if not tables:
            raise ValueError("no event tables to concatenate")
        first = tables[0]
        histograms = {}
        for name, hist in first.histograms.items():
            total = Hist1D(hist.bins, hist.low, hist.high)
            for table in tables:
                total.add(table.histograms[name])
            histograms[name] = total
        return EventTable(
            scalars={k: np.concatenate([t.scalars[k] for t in tables]) for k in first.scalars},
            counts={k: np.concatenate([t.counts[k] for t in tables]) for k in first.counts},
            vectors={k: np.concatenate([t.vectors[k] for t in tables]) for k in first.vectors},
            histograms=histograms,
        )


def empty_histograms(collectCalibrationDetails: bool, muonBins: int, muonHigh: float) -> dict[str, Hist1D]:
    specs = dict(PFA_HISTOGRAMS)
    if collectCalibrationDetails:
        specs.update(CALIBRATION_HISTOGRAMS)
        specs["MuonDirectionCorrectedCaloHitEnergy"] = (muonBins, 0.0, muonHigh)
    return {name: Hist1D(*spec) for name, spec in specs.items()}


def branch_types(collectCalibrationDetails: bool) -> dict[str, object]:
    types: dict[str, object] = {name: np.int32 for name in INT_BRANCHES}
    types.update({name: np.float32 for name in FLOAT_BRANCHES})
    if collectCalibrationDetails:
        types.update({name: np.int32 for name in CALIBRATION_INT_BRANCHES})
        types.update({name: np.float32 for name in CALIBRATION_FLOAT_BRANCHES})
    # awkward type objects rather than "var * float32" strings: uproot would parse each string
    # with a grammar that costs more CPU than the whole reconstruction
    jagged = {kind: ak.types.ListType(ak.types.NumpyType(dtype)) for kind, dtype in (("f", "float32"), ("i", "int32"))}
    for group in VECTOR_GROUPS.values():
        types.update({name: jagged[kind] for name, kind in group.items()})
    return types


def write_pfoanalysis(path: str | Path, table: EventTable, collectCalibrationDetails: bool) -> None:
    """Write the ROOT file atomically (a failed run leaves no half-written file behind)."""
    path = Path(path)
    types = branch_types(collectCalibrationDetails)
    counters = {"n" + name for group in VECTOR_GROUPS.values() for name in group}
    clash = counters & set(types)
    if clash:
        raise ValueError(f"vector counter names collide with branches: {sorted(clash)}")
    partial = path.with_name(f".{path.name}.partial")
    try:
        with uproot.recreate(partial) as rootFile:
            tree = rootFile.mktree(TREE, types, title=TREE, counter_name=lambda branch: "n" + branch)
            if table.nEvents:
                tree.extend(_tree_arrays(table, types))
            for name, hist in table.histograms.items():
                rootFile[name] = _th1f(name, hist)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _tree_arrays(table: EventTable, types: Mapping[str, object]) -> dict[str, object]:
    arrays: dict[str, object] = {}
    for name, kind in types.items():
        if kind is np.int32 or kind is np.float32:
            arrays[name] = np.asarray(table.scalars[name], dtype=kind)
    for group, branches in VECTOR_GROUPS.items():
        counts = table.counts[group]
        for name, kind in branches.items():
            flat = np.asarray(table.vectors[name], dtype=np.float32 if kind == "f" else np.int32)
            arrays[name] = ak.unflatten(flat, counts)
    return arrays


def _th1f(name: str, hist: Hist1D):
    axis = uproot.writing.identify.to_TAxis("xaxis", "", hist.bins, hist.low, hist.high)
    return uproot.writing.identify.to_TH1x(
        fName=name,
        fTitle=name,
        data=hist.contents.astype(np.float32),
        fEntries=float(hist.entries),
        fTsumw=hist.sumw,
        fTsumw2=hist.sumw2,
        fTsumwx=hist.sumwx,
        fTsumwx2=hist.sumwx2,
        fSumw2=hist.contents.astype(np.float64),
        fXaxis=axis,
    )


__all__ = [
    "CALIBRATION_FLOAT_BRANCHES",
    "CALIBRATION_HISTOGRAMS",
    "CALIBRATION_INT_BRANCHES",
    "FLOAT_BRANCHES",
    "INT_BRANCHES",
    "EventTable",
    "Hist1D",
    "PFA_HISTOGRAMS",
    "PFO_VECTORS",
    "TARGET_VECTORS",
    "TREE",
    "VECTOR_GROUPS",
    "branch_types",
    "empty_histograms",
    "write_pfoanalysis",
]
