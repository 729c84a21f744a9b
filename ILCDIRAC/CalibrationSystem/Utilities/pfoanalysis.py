"""Read what a PfoAnalysis-compatible reconstruction left behind, as numpy arrays.

Only the branches and histograms a phase names are read. ``"name[0]"`` asks for the leading
element of a vector branch (targets are sorted by energy), NaN where the vector is empty.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

TREE = "PfoAnalysisTree"

#: PfoAnalysis's calibration histograms (CalibrationHelper): name -> (bins, low, high) in GeV.
CALIBRATION_HISTOGRAMS: dict[str, tuple[int, float, float]] = {
    "ECalDirectionCorrectedCaloHitEnergy": (500, 0.0, 0.1),
    "HCalDirectionCorrectedCaloHitEnergy": (500, 0.0, 0.1),
    "MuonDirectionCorrectedCaloHitEnergy": (500, 0.0, 0.002),
    "HCalDirectionCorrectedSimCaloHitBarrel": (200, 0.0, 0.001),
    "HCalDirectionCorrectedSimCaloHitEndCap": (200, 0.0, 0.001),
    "HCalDirectionCorrectedSimCaloHitOther": (200, 0.0, 0.005),
    "HCalBarrelDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
    "HCalEndCapDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
    "HCalOtherDirectionCorrectionSimCaloHit": (200, 0.0, 1.0),
}


class ReconstructionOutputError(ValueError):
    """The reconstruction did not leave the file, tree, branch or histogram the phase needs."""


def read_outputs(path: str | Path, branches: Iterable[str], histograms: Iterable[str] = ()) -> dict[str, object]:
    """Branch arrays and (counts, edges) of histograms from one PfoAnalysis ROOT file."""
    branches, histograms = list(branches), list(histograms)
    try:
        rootFile = uproot.open(path)
    except FileNotFoundError:
        raise ReconstructionOutputError(f"reconstruction left no ROOT file {path}") from None
    except Exception as exc:  # noqa: BLE001 - uproot raises many types for a corrupt file
        raise ReconstructionOutputError(f"cannot read ROOT file {path}: {exc}") from None
    with rootFile:
        outputs: dict[str, object] = {}
        if branches:
            if TREE not in rootFile:
                raise ReconstructionOutputError(f"{path} has no TTree {TREE}")
            tree = rootFile[TREE]
            plain = sorted({b.removesuffix("[0]") for b in branches})
            absent = [b for b in plain if b not in tree]
            if absent:
                raise ReconstructionOutputError(f"{TREE} in {path} lacks branches {absent}")
            arrays = tree.arrays(plain, library="ak")
            for name in branches:
                column = arrays[name.removesuffix("[0]")]
                if name.endswith("[0]"):
                    column = ak.fill_none(ak.firsts(column), np.nan)
                outputs[name] = ak.to_numpy(column)
        for name in histograms:
            if name not in rootFile:
                raise ReconstructionOutputError(f"{path} has no histogram {name}")
            counts, edges = rootFile[name].to_numpy()
            outputs[name] = (np.asarray(counts, dtype=float), np.asarray(edges, dtype=float))
    return outputs
