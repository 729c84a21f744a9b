"""The emulator's input files: small self-describing stand-ins for simulated LCIO files.

A sample file (``<particle>_<E>GeV_<index>.slcio``) is JSON holding what the events depend on:
format and version, particle, energy, seed, file index, number of events and the complete
detector truth. The per-event simulation (``sim.simulate``) is regenerated from these with the
counter-based generator of ``rng``, so event ``i`` of a file is always the same event, whichever
slice of it a run reads, and the files stay a few kB.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.schema import is_int, is_number
from marlin_emulator.rng import file_key
from marlin_emulator.truth import DetectorTruth, TruthError, load_truth, truth_from_mapping

FORMAT = "marlin-emulator-sample"
VERSION = 1
#: Particle name (as ddsim's gun names it, plus "zuds") -> PDG code (23 for Z -> uds events).
PARTICLES: dict[str, int] = {"gamma": 22, "kaon0L": 130, "mu-": 13, "zuds": 23}
K0L_MASS = 0.497672
MUON_MASS = 0.1056584


class SampleFileError(ValueError):
    """A sample file that does not exist, is not an emulator sample, or is inconsistent."""


@dataclass(frozen=True)
class SampleFile:
    path: Path
    particle: str
    energy: float
    seed: int
    fileIndex: int
    nEvents: int
    truth: DetectorTruth

    @property
    def pdg(self) -> int:
        return PARTICLES[self.particle]

    @property
    def key(self) -> int:
        """The random-number key of this file's events."""
        return file_key(self.seed, self.pdg, self.fileIndex, int(round(self.energy * 1000)))


def sample_file_name(particle: str, energy: float, index: int) -> str:
    return f"{particle}_{energy:g}GeV_{index:04d}.slcio"


def make_sample_files(
    particle: str,
    energy: float,
    n_files: int,
    events_per_file: int,
    truth: str | Path | Mapping[str, Any] | DetectorTruth,
    seed: int,
    outdir: str | Path,
) -> list[Path]:
    """Write ``n_files`` sample files and ``<outdir>/<particle>_files.txt`` listing them."""
    _check_request(particle, energy, n_files, events_per_file, seed)
    detector = load_truth(truth)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n_files):
        path = outdir / sample_file_name(particle, energy, index)
        content = {
            "format": FORMAT,
            "version": VERSION,
            "particle": particle,
            "pdg": PARTICLES[particle],
            "energy": float(energy),
            "seed": int(seed),
            "fileIndex": index,
            "nEvents": int(events_per_file),
            "truth": detector.to_mapping(),
        }
        path.write_text(json.dumps(content, indent=1) + "\n")
        paths.append(path)
    (outdir / f"{particle}_files.txt").write_text("".join(f"{p}\n" for p in paths))
    return paths


def _check_request(particle: str, energy: float, n_files: int, events_per_file: int, seed: int) -> None:
    if particle not in PARTICLES:
        raise SampleFileError(f"unknown particle {particle!r}; choose one of {', '.join(PARTICLES)}")
    if not (is_number(energy) and energy > 0):
        raise SampleFileError(f"the sample energy must be a positive number of GeV, not {energy!r}")
    if particle == "kaon0L" and energy <= K0L_MASS:
        raise SampleFileError(f"a K0L of {energy} GeV has no kinetic energy (mass {K0L_MASS} GeV)")
    for name, value in (("number of files", n_files), ("events per file", events_per_file)):
        if not is_int(value) or value <= 0:
            raise SampleFileError(f"the {name} must be a positive integer, not {value!r}")
    if not is_int(seed) or seed < 0:
        raise SampleFileError(f"the seed must be a non-negative integer, not {seed!r}")


def read_sample_file(path: str | Path) -> SampleFile:
    """Read and check one sample file (errors name the file and the problem)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SampleFileError(f"input file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SampleFileError(f"cannot read input file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise SampleFileError(f"input file {path} is not an emulator sample file (not JSON)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SampleFileError(f"input file {path} is not an emulator sample file (format is not {FORMAT!r})")
    if data.get("version") != VERSION:
        raise SampleFileError(
            f"input file {path} has format version {data.get('version')!r}, this emulator reads {VERSION}"
        )
    missing = [k for k in ("particle", "energy", "seed", "fileIndex", "nEvents", "truth") if k not in data]
    if missing:
        raise SampleFileError(f"input file {path} lacks {', '.join(missing)}")
    try:
        _check_request(data["particle"], data["energy"], 1, data["nEvents"], data["seed"])
    except SampleFileError as exc:
        raise SampleFileError(f"input file {path}: {exc}") from None
    if data.get("pdg", PARTICLES[data["particle"]]) != PARTICLES[data["particle"]]:
        raise SampleFileError(f"input file {path}: pdg {data['pdg']} does not match particle {data['particle']}")
    index = data["fileIndex"]
    if not is_int(index) or index < 0:
        raise SampleFileError(f"input file {path}: fileIndex must be a non-negative integer, not {index!r}")
    try:
        truth = truth_from_mapping(data["truth"], where=f"in input file {path}")
    except TruthError as exc:
        raise SampleFileError(str(exc)) from None
    return SampleFile(path, data["particle"], float(data["energy"]), data["seed"], index, data["nEvents"], truth)


__all__ = [
    "FORMAT",
    "K0L_MASS",
    "MUON_MASS",
    "PARTICLES",
    "SampleFile",
    "SampleFileError",
    "VERSION",
    "make_sample_files",
    "read_sample_file",
    "sample_file_name",
]
