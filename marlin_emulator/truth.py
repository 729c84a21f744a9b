"""Detector truth for the emulator: the constants a perfect calibration would find, and the
physics-model parameters that produce them. One YAML file per detector in ``data/emulator/``.

A truth file is a mapping of sections (schema: the dataclasses below, one per section; every key
is required unless the file names a ``base`` truth, whose values it then overrides key by key).
Lengths are in radiation lengths (X0) or nuclear interaction lengths (lambda) along the normal to
the layers, energies in GeV, angles as |cos(theta)|, times in ns, probabilities in [0, 1]::

    name: FCCee_o1_v04          # required; a file may also give aliases, description, sources
    base: <truth name or path>  # optional
    trueConstants: {...}        # TrueConstants
    mipSimEnergy: {...}         # MipSimEnergy
    ecal: {...}  hcal: {...}  muonSystem: {...}  regions: {...}  timing: {...}
    photon: {...}  hadron: {...}  muon: {...}  jets: {...}  pandora: {...}  photonId: {...}
    quirks: {...}

The truth constants are defined at 10 ns calorimeter time windows and for a photon likelihood
trained on this detector. The emulator derives from them the Pandora cluster-capture factors
(``kappa = 1 / (EMscale * (1 - sub-threshold loss))``) and the ECAL hadron/EM response ratio
(``ECalToHad / ECalToEM``), so the reconstruction is consistent with the constants by construction.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ILCDIRAC.CalibrationSystem.Utilities.schema import bounded, convert, dataclass_fields

DATA_DIR = Path(__file__).resolve().parent / "data" / "truth"


class TruthError(ValueError):
    """An unknown truth name or a malformed truth file."""


# ------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class TrueConstants:
    """What the calibration should find (DDCaloDigi and DDMarlinPandora names)."""

    CalibrECAL: tuple[float, float] = bounded(low=0, openLow=True)  # thin, thick layers
    ECALEndcapCorrectionFactor: float = bounded(low=0, openLow=True)
    CalibrHCALBarrel: float = bounded(low=0, openLow=True)
    CalibrHCALEndcap: float = bounded(low=0, openLow=True)
    CalibrHCALOther: float = bounded(low=0, openLow=True)
    ECalToEMGeVCalibration: float = bounded(low=0, openLow=True)
    ECalToHadGeVCalibration: float = bounded(low=0, openLow=True)  # barrel = endcap
    HCalToHadGeVCalibration: float = bounded(low=0, openLow=True)


@dataclass(frozen=True)
class MipSimEnergy:
    """Most probable direction-corrected simulated energy of a MIP hit, per subdetector (GeV)."""

    ecal: float = bounded(low=0, openLow=True)
    hcalBarrel: float = bounded(low=0, openLow=True)
    hcalEndcap: float = bounded(low=0, openLow=True)
    hcalRing: float = bounded(low=0, openLow=True)
    yoke: float = bounded(low=0, openLow=True)


@dataclass(frozen=True)
class EcalTruth:
    nThinLayers: int = bounded(low=1)
    nThickLayers: int = bounded(low=0)
    thinLayerX0: float = bounded(low=0, openLow=True)
    thickLayerX0: float = bounded(low=0, openLow=True)
    firstLayerNumber: int  # cell-ID number of the first layer (DDCaloDigi compares it with ECALLayers)
    interactionLengths: float = bounded(low=0, openLow=True)
    stochasticTerm: float = bounded(low=0)  # photon resolution, relative, times sqrt(E/GeV)
    constantTerm: float = bounded(low=0)
    hitsPerGeV: float = bounded(low=0, openLow=True)


@dataclass(frozen=True)
class HcalTruth:
    nLayers: int = bounded(low=6)
    layerInteractionLengths: float = bounded(low=0, openLow=True)
    eOverH: float = bounded(low=1)
    emResponse: float  # response to EM showers relative to the hadron calibration
    hitsPerGeV: float
    #: mean PfoAnalysis direction factor of HCAL endcap sim hits
    endcapDirectionFactorMean: float = bounded(low=0, openLow=True, high=1, openHigh=True)
    directionFactorSpread: float = bounded(low=0, high=0.3, openHigh=True)


@dataclass(frozen=True)
class MuonSystemTruth:
    nLayers: int
    digitisationConstant: float  # CalibrMUON used when the steering runs no DDSimpleMuonDigi
    leakageCatchFraction: float = bounded(low=0, high=1)  # fraction of rear-leaking hadronic energy seen in the yoke


@dataclass(frozen=True)
class RegionsTruth:
    ecalTransition: tuple[float, float]  # |cos| range where ECAL barrel and endcap share the energy
    #: relative response loss at the centre of the ECAL transition
    transitionResponseDip: float = bounded(low=0, high=1, openHigh=True)
    hcalRing: tuple[float, float]  # |cos| range where the HCAL ring takes part of the energy
    ringPeakFraction: float = bounded(low=0, high=1)
    forwardEdge: float  # beyond: energy starts going to the LumiCal
    lumiCalEdge: float  # beyond: all energy goes to the LumiCal


@dataclass(frozen=True)
class TimingTruth:
    ecalLateFraction: float  # energy arriving after 10 ns, relative to the prompt energy
    hcalLateFraction: float
    lateTimeConstant: float  # ns; late energy arrives as exp(-(t - 10 ns) / tau), normalised at 400 ns


@dataclass(frozen=True)
class PhotonTruth:
    criticalEnergy: float
    profileB: float
    startDepthMean: float  # X0
    profileShapeSpread: float
    trackerX0: float  # material in front of the calorimeter (conversions)
    crackProbability: float = bounded(low=0, high=1)
    crackLoss: tuple[float, float]
    fragmentProbability: float = bounded(low=0, high=1)
    fragmentEnergyFraction: tuple[float, float]
    misIdProbability: float = bounded(low=0, high=1)


@dataclass(frozen=True)
class HadronTruth:
    emFractionExponent: float  # <f_em> = 1 - (T / 1 GeV) ** -exponent
    emFractionSpread: float
    ecalEOverH: float = bounded(low=1)
    stochasticTerm: float
    constantTerm: float
    profileShape: float  # longitudinal Gamma profile in lambda
    profileScale: float
    profileShapeSpread: float
    #: profile quantile taken as the deepest hit (pfoMinHCalLayerToEdge)
    maxDepthQuantile: float = bounded(low=0, high=1)
    fragmentProbability: float = bounded(low=0, high=1)
    fragmentEnergyFraction: tuple[float, float]
    misIdProbability: float = bounded(low=0, high=1)
    #: HCAL hit hadronic-energy spectrum: two exponentials (GeV)
    hitEnergyMeans: tuple[float, float] = bounded(low=0, openLow=True)
    hitEnergyWeights: tuple[float, float] = bounded(low=0)  # their hit-count weights
    softCompensationStrength: float


@dataclass(frozen=True)
class MuonTruth:
    ecalLandauWidth: float  # Landau width relative to the most probable value
    hcalLandauWidth: float
    yokeLandauWidth: float
    ecalSmearing: float  # relative Gaussian smearing (photo-statistics, electronics)
    hcalSmearing: float
    yokeSmearing: float
    trackResolution: float


@dataclass(frozen=True)
class JetsTruth:
    """Z -> uds events, only as far as stage 2 (photon training) and fPFA need them."""

    chargedMultiplicity: float  # mean at 91.2 GeV
    photonsPerCharged: float
    neutralHadronsPerCharged: float
    energyFractions: tuple[float, float, float]  # charged, photons, neutral hadrons
    fragmentClustersPerCharged: float


@dataclass(frozen=True)
class PandoraTruth:
    ecalMipThreshold: float = bounded(low=0, openLow=True)  # the thresholds the truth constants assume
    hcalMipThreshold: float = bounded(low=0, openLow=True)
    #: cluster energy lost below the threshold at the nominal MIP scale
    ecalSubThresholdLoss: float = bounded(low=0, high=1)
    hcalSubThresholdLoss: float = bounded(low=0, high=1)


@dataclass(frozen=True)
class PhotonIdTruth:
    """Shape parameters of this detector's ideal photon-ID PDFs and the effect of a mismatch."""

    peakRmsScale: float
    profileStartScale: float
    discrepancyScale: float
    referenceDistance: float = bounded(low=0, openLow=True)  # PDF distance at which a likelihood counts as untrained
    trainedProbabilityScale: float = bounded(low=0, high=1)  # fragment / mis-ID probabilities with a trained likelihood
    untrainedEmEnergyLoss: float  # photon-cluster energy lost with an untrained likelihood
    untrainedHadEnergyLoss: float


@dataclass(frozen=True)
class QuirksTruth:
    hCalEnergyFromEdgeIntBug: bool  # quirk 4: hCalCaloHitEnergyFromEdge stored through an int


SECTIONS: dict[str, type] = {
    "trueConstants": TrueConstants,
    "mipSimEnergy": MipSimEnergy,
    "ecal": EcalTruth,
    "hcal": HcalTruth,
    "muonSystem": MuonSystemTruth,
    "regions": RegionsTruth,
    "timing": TimingTruth,
    "photon": PhotonTruth,
    "hadron": HadronTruth,
    "muon": MuonTruth,
    "jets": JetsTruth,
    "pandora": PandoraTruth,
    "photonId": PhotonIdTruth,
    "quirks": QuirksTruth,
}
_DESCRIPTIVE = ("name", "aliases", "base", "description", "sources")
#: Each section's keys with their types and bounds, from its dataclass.
_SECTION_FIELDS = {section: dataclass_fields(cls) for section, cls in SECTIONS.items()}


@dataclass(frozen=True)
class DetectorTruth:
    name: str
    aliases: tuple[str, ...]
    description: str
    trueConstants: TrueConstants
    mipSimEnergy: MipSimEnergy
    ecal: EcalTruth
    hcal: HcalTruth
    muonSystem: MuonSystemTruth
    regions: RegionsTruth
    timing: TimingTruth
    photon: PhotonTruth
    hadron: HadronTruth
    muon: MuonTruth
    jets: JetsTruth
    pandora: PandoraTruth
    photonId: PhotonIdTruth
    quirks: QuirksTruth

    # ---- derived quantities the reconstruction uses
    @property
    def ecalLayerX0(self) -> tuple[float, ...]:
        return (self.ecal.thinLayerX0,) * self.ecal.nThinLayers + (self.ecal.thickLayerX0,) * self.ecal.nThickLayers

    @property
    def ecalLayerTrueConstants(self) -> tuple[float, ...]:
        thin, thick = self.trueConstants.CalibrECAL
        return (thin,) * self.ecal.nThinLayers + (thick,) * self.ecal.nThickLayers

    @property
    def nEcalLayers(self) -> int:
        return self.ecal.nThinLayers + self.ecal.nThickLayers

    @property
    def ecalClusterCapture(self) -> float:
        return 1.0 / (self.trueConstants.ECalToEMGeVCalibration * (1.0 - self.pandora.ecalSubThresholdLoss))

    @property
    def hcalClusterCapture(self) -> float:
        return 1.0 / (self.trueConstants.HCalToHadGeVCalibration * (1.0 - self.pandora.hcalSubThresholdLoss))

    @property
    def ecalHadronResponse(self) -> float:
        """ECAL response to hadronic energy relative to EM (1 / 1.095 for CLD)."""
        return self.trueConstants.ECalToEMGeVCalibration / self.trueConstants.ECalToHadGeVCalibration

    def em_fraction_mean(self, kinetic: float) -> float:
        """Mean electromagnetic fraction of hadron showers of this kinetic energy (GeV)."""
        return 1.0 - max(kinetic, 1.0) ** (-self.hadron.emFractionExponent)

    @property
    def trueEcalToMip(self) -> float:
        return 1.0 / (self.trueConstants.CalibrECAL[0] * self.mipSimEnergy.ecal)

    @property
    def trueHcalToMip(self) -> float:
        return 1.0 / (self.trueConstants.CalibrHCALBarrel * self.mipSimEnergy.hcalBarrel)

    def to_mapping(self) -> dict[str, Any]:
        """Plain, fully resolved mapping (no ``base``) that ``truth_from_mapping`` reads back."""
        data: dict[str, Any] = {"name": self.name, "aliases": list(self.aliases), "description": self.description}
        for section in SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            data[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return data


# ------------------------------------------------------------------------------------ loading
def available_truths() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.yaml"))


def load_truth(source: str | Path | Mapping[str, Any] | DetectorTruth) -> DetectorTruth:
    """A truth from a shipped name or alias, a YAML file path, a mapping, or a DetectorTruth."""
    if isinstance(source, DetectorTruth):
        return source
    if isinstance(source, Mapping):
        return truth_from_mapping(source, where="truth mapping")
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise TruthError(f"a detector truth is a name, a YAML path or a mapping, not {source!r}")
    path = _as_path(str(source))
    if path is not None:
        return truth_from_mapping(_resolve_file(path, ()), where=str(path))
    return _shipped(str(source).strip())


def truth_from_mapping(data: Mapping[str, Any], where: str = "truth mapping") -> DetectorTruth:
    """Validate a complete (or ``base``-relative) truth mapping; every problem is reported at once."""
    if not isinstance(data, Mapping):
        raise TruthError(f"{where}: a truth must be a mapping, not {type(data).__name__}")
    if "base" in data:
        data = _merge(_base_data(data["base"], Path.cwd(), (where,)), data)
    return _build(dict(data), where)


def _shipped(name: str) -> DetectorTruth:
    index = _name_index()
    canonical = index.get(name) or index.get(name.lower())
    if canonical is None:
        raise TruthError(f"unknown detector truth {name!r}; shipped truths: {', '.join(available_truths())}")
    return _load_shipped(canonical)


@functools.cache
def _load_shipped(canonical: str) -> DetectorTruth:
    path = DATA_DIR / f"{canonical}.yaml"
    return truth_from_mapping(_resolve_file(path, ()), where=str(path))


@functools.cache
def _name_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for path in sorted(DATA_DIR.glob("*.yaml")):
        raw = _read_yaml(path)
        for n in [path.stem, *(raw.get("aliases") or [])]:
            index[n] = path.stem
            index.setdefault(n.lower(), path.stem)
    return index


def _as_path(text: str) -> Path | None:
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or "/" in text or path.is_file():
        if not path.is_file():
            raise TruthError(f"detector truth file {text} does not exist")
        return path.resolve()
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TruthError(f"cannot read detector truth file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise TruthError(f"{path}: a detector truth file must hold a mapping")
    return data


def _resolve_file(path: Path, chain: tuple[str, ...]) -> dict[str, Any]:
    if str(path) in chain:
        raise TruthError(f"circular 'base' chain: {' -> '.join(chain + (str(path),))}")
    data = _read_yaml(path)
    if "base" not in data:
        return data
    return _merge(_base_data(data["base"], path.parent, chain + (str(path),)), data)


def _base_data(base: Any, directory: Path, chain: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(base, str) or not base.strip():
        raise TruthError(f"{chain[-1]}: 'base' must name a truth or a YAML file, not {base!r}")
    candidate = (directory / base) if not Path(base).is_absolute() else Path(base)
    if base.endswith((".yaml", ".yml")) or "/" in base:
        if not candidate.is_file():
            raise TruthError(f"{chain[-1]}: base truth file {candidate} does not exist")
        return _resolve_file(candidate.resolve(), chain)
    index = _name_index()
    canonical = index.get(base) or index.get(base.lower())
    if canonical is None:
        raise TruthError(f"{chain[-1]}: unknown base truth {base!r}; shipped truths: {', '.join(available_truths())}")
    return _resolve_file(DATA_DIR / f"{canonical}.yaml", chain)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Sections merge key by key; descriptive keys (and aliases) come from the overriding file."""
    merged = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("aliases", "base")}
    for key, value in override.items():
        if key == "base":
            continue
        if key in SECTIONS and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    merged.setdefault("aliases", [])
    return merged


# ------------------------------------------------------------------------------------ validation
def _build(data: dict[str, Any], where: str) -> DetectorTruth:
    problems: list[str] = []
    unknown = sorted(set(data) - set(SECTIONS) - set(_DESCRIPTIVE))
    problems += [f"unknown key {k!r}" for k in unknown]
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("'name' must be a non-empty string")
    aliases = data.get("aliases") or []
    if not (isinstance(aliases, list) and all(isinstance(a, str) and a for a in aliases)):
        problems.append("'aliases' must be a list of names")
        aliases = []
    sections = {}
    for section, cls in SECTIONS.items():
        if section not in data:
            problems.append(f"missing section {section!r}")
            continue
        value, sectionProblems = _build_section(cls, data[section], section)
        problems += sectionProblems
        sections[section] = value
    if not problems:
        problems += _physics_problems(sections)
    if problems:
        raise TruthError(f"detector truth {where}: " + "; ".join(problems))
    assert isinstance(name, str), "a missing or bad name is one of the problems"
    return DetectorTruth(
        name=name, aliases=tuple(aliases), description=str(data.get("description", "")).strip(), **sections
    )


def _build_section(cls: type, raw: Any, section: str) -> tuple[Any, list[str]]:
    if not isinstance(raw, Mapping):
        return None, [f"{section} must be a mapping"]
    fields = _SECTION_FIELDS[section]
    problems = [f"{section}.{k}: unknown key" for k in sorted(set(raw) - {f.name for f in fields})]
    values = {}
    for spec in fields:
        if spec.name not in raw:
            problems.append(f"{section}.{spec.name}: missing")
            continue
        values[spec.name], problem = convert(spec, raw[spec.name])
        if problem:
            problems.append(f"{section}.{spec.name}: {problem}")
    if problems:
        return None, problems
    return cls(**values), []


def _physics_problems(s: Mapping[str, Any]) -> list[str]:
    """The consistency the physics model needs across keys (each violation named); the bounds of
    single keys are their fields' (``bounded`` on the section dataclasses)."""
    problems: list[str] = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    c, pandora, hcal = s["trueConstants"], s["pandora"], s["hcal"]
    ringMean = hcal.endcapDirectionFactorMean / ring_direction_ratio(c, s["mipSimEnergy"])
    spread = math.sqrt(3.0) * hcal.directionFactorSpread
    need(
        spread < ringMean < 1 - spread,
        f"the HCAL ring direction factor implied by the truth constants ({ringMean:.3f}) must lie inside (0, 1) "
        f"with its spread",
    )
    regions = s["regions"]
    for key in ("ecalTransition", "hcalRing"):
        low, high = getattr(regions, key)
        need(0 < low < high < 1, f"regions.{key} must be two increasing values in (0, 1)")
    need(regions.forwardEdge < regions.lumiCalEdge <= 1, "regions need forwardEdge < lumiCalEdge <= 1")
    for label, (low, high) in (
        ("photon.crackLoss", s["photon"].crackLoss),
        ("photon.fragmentEnergyFraction", s["photon"].fragmentEnergyFraction),
        ("hadron.fragmentEnergyFraction", s["hadron"].fragmentEnergyFraction),
    ):
        need(0 <= low <= high < 1, f"{label} must be an increasing pair in [0, 1)")
    need(
        c.ECalToEMGeVCalibration * (1 - pandora.ecalSubThresholdLoss) >= 1,
        "trueConstants.ECalToEMGeVCalibration must be at least 1 / (1 - pandora.ecalSubThresholdLoss): "
        "a cluster cannot hold more than the digitised energy",
    )
    need(
        c.HCalToHadGeVCalibration * (1 - pandora.hcalSubThresholdLoss) >= 1,
        "trueConstants.HCalToHadGeVCalibration must be at least 1 / (1 - pandora.hcalSubThresholdLoss)",
    )
    jets = s["jets"]
    need(
        abs(sum(jets.energyFractions) - 1) < 1e-6 and min(jets.energyFractions) >= 0,
        "jets.energyFractions must sum to 1",
    )
    need(sum(s["hadron"].hitEnergyWeights) > 0, "hadron.hitEnergyWeights must not all be 0")
    return problems


def ring_direction_ratio(c: TrueConstants, mip: MipSimEnergy) -> float:
    """<dc>_endcap / <dc>_ring that makes the original ring formula give the true CalibrHCALOther:
    CalibrHCALOther = (<dc>_EC / <dc>_ring) (MIP_EC / MIP_ring) CalibrHCALEndcap."""
    return c.CalibrHCALOther / (c.CalibrHCALEndcap * mip.hcalEndcap / mip.hcalRing)


__all__ = [
    "DATA_DIR",
    "DetectorTruth",
    "SECTIONS",
    "TruthError",
    "available_truths",
    "load_truth",
    "ring_direction_ratio",
    "truth_from_mapping",
]
