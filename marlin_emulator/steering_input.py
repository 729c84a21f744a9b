"""What the emulator takes from a Marlin steering file, read as Marlin reads it.

Marlin semantics (via ``Utilities.steering``): ``<constants>`` are substituted (``${name}``,
``$ENV{name}``); processors count only if ``<execute>`` runs them (when there is an
``<execute>``); group parameters apply to every processor of the group; a parameter's value is
its ``value`` attribute or its text. Processors are recognised by their ``type`` (DDCaloDigi,
DDPandoraPFANewProcessor, PfoAnalysis, DDSimpleMuonDigi); other processors are ignored, as a
detector-less Marlin would not care about them either. Missing calibration constants are errors
rather than silent processor defaults, so a broken steering file fails loudly.
"""
from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ILCDIRAC.CalibrationSystem.Utilities import steering

DIGI_TYPE = "DDCaloDigi"
PANDORA_TYPE = "DDPandoraPFANewProcessor"
PFO_ANALYSIS_TYPE = "PfoAnalysis"
MUON_DIGI_TYPE = "DDSimpleMuonDigi"
#: DDMarlinPandora's default software-compensation limit (LCContent SoftwareCompensationParameters).
DEFAULT_SOFT_COMP_LIMIT = 100.0
#: DDCaloDigi's raw sim-energy thresholds (GeV) when the steering gives none.
DEFAULT_ECAL_THRESHOLD = 5e-5
DEFAULT_HCAL_THRESHOLD = 2.5e-4


class SteeringInputError(ValueError):
    """The steering file cannot drive a reconstruction (named file, processor and parameter)."""


@dataclass(frozen=True)
class DigiParameters:
    calibrEcal: tuple[float, ...]
    ecalLayers: tuple[int, ...]
    ecalEndcapCorrectionFactor: float
    calibrHcalBarrel: float
    calibrHcalEndcap: float
    calibrHcalOther: float
    hcalEndcapCorrectionFactor: float
    ecalTimeWindows: tuple[float, float]  # barrel, endcap (ns); inf without a timing cut
    hcalTimeWindows: tuple[float, float]
    ecalThreshold: float  # raw sim energy (GeV)
    hcalThreshold: float


@dataclass(frozen=True)
class PandoraParameters:
    settingsFile: str
    ecalToMip: float
    hcalToMip: float
    muonToMip: float
    ecalMipThreshold: float | None  # None: the processor default (the truth's nominal threshold)
    hcalMipThreshold: float | None
    ecalToEm: float
    hcalToEm: float
    ecalToHadBarrel: float
    ecalToHadEndcap: float
    hcalToHad: float
    maxHcalHitHadronicEnergy: float
    maxClusterEnergyToApplySoftComp: float


@dataclass(frozen=True)
class PfoAnalysisParameters:
    rootFile: str
    collectCalibrationDetails: bool
    muonHistogramBins: int
    muonHistogramHigh: float


@dataclass(frozen=True)
class SteeringInput:
    inputFiles: tuple[str, ...]
    maxRecordNumber: int  # <= 0: all events
    skipNEvents: int
    digi: DigiParameters
    pandora: PandoraParameters
    pfoAnalysis: PfoAnalysisParameters | None
    muonDigitisation: float | None  # CalibrMUON of an executed DDSimpleMuonDigi


def read_steering(path: "str | Path") -> SteeringInput:
    """Parse a steering file; SteeringInputError names what is missing or malformed."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SteeringInputError(f"steering file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SteeringInputError(f"cannot read steering file {path}: {exc}") from None
    try:
        return parse_steering(text)
    except (SteeringInputError, steering.SteeringError) as exc:
        raise SteeringInputError(f"steering file {path}: {exc}") from None


def parse_steering(text: str) -> SteeringInput:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SteeringInputError(f"not well-formed XML: {exc}") from None
    if root.tag != "marlin":
        raise SteeringInputError(f"not a Marlin steering file: the root element is <{root.tag}>")
    text = expand_constants(text, root)
    executed = set(steering.executed_processors(text)) if root.find("execute") is not None else None
    globalParams = steering.read_global_parameters(text)
    names = {t: _active(text, t, executed) for t in (DIGI_TYPE, PANDORA_TYPE, PFO_ANALYSIS_TYPE, MUON_DIGI_TYPE)}
    for required in (DIGI_TYPE, PANDORA_TYPE):
        if names[required] is None:
            raise SteeringInputError(f"no {required} processor is executed")
    pfo = names[PFO_ANALYSIS_TYPE]
    muonDigitisation = None
    if names[MUON_DIGI_TYPE]:
        muonParams = _Parameters(text, names[MUON_DIGI_TYPE])
        muonDigitisation = _first_positive(muonParams, "CalibrMUON") if muonParams.has("CalibrMUON") else None
    return SteeringInput(
        inputFiles=tuple(globalParams.get("LCIOInputFiles", "").split()),
        maxRecordNumber=_global_int(globalParams, "MaxRecordNumber", 0),
        skipNEvents=max(_global_int(globalParams, "SkipNEvents", 0), 0),
        digi=_digi(_Parameters(text, names[DIGI_TYPE])),
        pandora=_pandora(_Parameters(text, names[PANDORA_TYPE])),
        pfoAnalysis=_pfo_analysis(_Parameters(text, pfo)) if pfo else None,
        muonDigitisation=muonDigitisation,
    )


def expand_constants(text: str, root: ET.Element) -> str:
    """Substitute Marlin ``${constant}`` and ``$ENV{variable}`` references."""
    constants: dict[str, str] = {}
    for element in root.iter("constant"):
        name = element.get("name")
        if not name:
            raise SteeringInputError("a <constant> has no name")
        constants[name] = element.get("value", (element.text or "").strip())

    def substitute(value: str) -> str:
        def one(match: re.Match) -> str:
            if match.group(1) is not None:
                if match.group(1) not in os.environ:
                    raise SteeringInputError(f"environment variable {match.group(1)} (used as $ENV{{...}}) is not set")
                return os.environ[match.group(1)]
            if match.group(2) not in constants:
                raise SteeringInputError(f"constant ${{{match.group(2)}}} is not defined in <constants>")
            return constants[match.group(2)]

        for _ in range(20):
            expanded = re.sub(r"\$ENV\{([^}]+)\}|\$\{([^}]+)\}", one, value)
            if expanded == value:
                return expanded
            value = expanded
        raise SteeringInputError("constants refer to each other in a loop")

    return substitute(text)


def _active(text: str, processorType: str, executed: set[str] | None) -> str | None:
    names = [n for n in steering.processor_names_by_type(text, processorType) if executed is None or n in executed]
    if len(names) > 1:
        raise SteeringInputError(f"{len(names)} {processorType} processors are executed ({', '.join(names)}); expected one")
    return names[0] if names else None


def _global_int(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw.split()[0])
    except ValueError:
        raise SteeringInputError(f"global parameter {name} must be an integer, not {raw!r}") from None


class _Parameters:
    """One processor's parameters with typed, named accessors."""

    def __init__(self, text: str, processor: str) -> None:
        self.processor = processor
        self.values = steering.read_parameters(text, processor)

    def has(self, name: str) -> bool:
        return bool(self.values.get(name, "").split())

    def _tokens(self, name: str) -> list[str]:
        tokens = self.values.get(name, "").split()
        if not tokens:
            raise SteeringInputError(f"processor {self.processor} has no value for {name}")
        return tokens

    def floats(self, name: str) -> tuple[float, ...]:
        tokens = self._tokens(name)
        try:
            values = tuple(float(t) for t in tokens)
        except ValueError:
            raise SteeringInputError(f"processor {self.processor}: {name} must be numbers, not {self.values[name]!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise SteeringInputError(f"processor {self.processor}: {name} must be finite, not {self.values[name]!r}")
        return values

    def float(self, name: str, default: float | None = None, positive: bool = True) -> float:
        if default is not None and not self.has(name):
            return default
        values = self.floats(name)
        if len(values) != 1:
            raise SteeringInputError(f"processor {self.processor}: {name} has {len(values)} values, expected one")
        if positive and values[0] <= 0:
            raise SteeringInputError(f"processor {self.processor}: {name} must be positive, not {values[0]}")
        return values[0]

    def ints(self, name: str) -> tuple[int, ...]:
        tokens = self._tokens(name)
        try:
            return tuple(int(t) for t in tokens)
        except ValueError:
            raise SteeringInputError(f"processor {self.processor}: {name} must be integers, not {self.values[name]!r}") from None

    def text(self, name: str, default: str | None = None) -> str:
        if default is not None and not self.has(name):
            return default
        return " ".join(self._tokens(name))

    def flag(self, name: str, default: bool) -> bool:
        if not self.has(name):
            return default
        word = self._tokens(name)[0].lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise SteeringInputError(f"processor {self.processor}: {name} must be a boolean, not {self.values[name]!r}")


def _digi(p: _Parameters) -> DigiParameters:
    calibrEcal = p.floats("CalibrECAL")
    ecalLayers = p.ints("ECALLayers")
    if len(calibrEcal) < len(ecalLayers):
        raise SteeringInputError(
            f"processor {p.processor}: CalibrECAL has {len(calibrEcal)} values for the {len(ecalLayers)} layer groups of ECALLayers"
        )
    if any(c <= 0 for c in calibrEcal):
        raise SteeringInputError(f"processor {p.processor}: CalibrECAL values must be positive, not {list(calibrEcal)}")
    return DigiParameters(
        calibrEcal=calibrEcal,
        ecalLayers=ecalLayers,
        ecalEndcapCorrectionFactor=p.float("ECALEndcapCorrectionFactor", 1.0),
        calibrHcalBarrel=_first_positive(p, "CalibrHCALBarrel"),
        calibrHcalEndcap=_first_positive(p, "CalibrHCALEndcap"),
        calibrHcalOther=_first_positive(p, "CalibrHCALOther"),
        hcalEndcapCorrectionFactor=p.float("HCALEndcapCorrectionFactor", 1.0),
        ecalTimeWindows=_windows(p, "UseEcalTiming", "ECALBarrelTimeWindowMax", "ECALEndcapTimeWindowMax"),
        hcalTimeWindows=_windows(p, "UseHcalTiming", "HCALBarrelTimeWindowMax", "HCALEndcapTimeWindowMax"),
        ecalThreshold=_threshold(p, "ECALThreshold", "ECALThresholdUnit", "CalibECALMIP", DEFAULT_ECAL_THRESHOLD),
        hcalThreshold=_threshold(p, "HCALThreshold", "HCALThresholdUnit", "CalibHCALMIP", DEFAULT_HCAL_THRESHOLD),
    )


def _first_positive(p: _Parameters, name: str) -> float:
    """HCAL (and muon) constants are FloatVec, one per layer group; the emulator has one group."""
    value = p.floats(name)[0]
    if value <= 0:
        raise SteeringInputError(f"processor {p.processor}: {name} must be positive, not {value}")
    return value


def _windows(p: _Parameters, useName: str, barrelName: str, endcapName: str) -> tuple[float, float]:
    if not p.flag(useName, True):
        return (math.inf, math.inf)
    return (p.float(barrelName, math.inf), p.float(endcapName, math.inf))


def _threshold(p: _Parameters, name: str, unitName: str, mipName: str, default: float) -> float:
    value = p.floats(name)[0] if p.has(name) else default
    unit = p.text(unitName, "GeV")
    if unit == "GeV":
        return value
    if unit == "MIP":
        return value * p.float(mipName, 1e-4)
    raise SteeringInputError(f"processor {p.processor}: {unitName} {unit!r} is not supported (GeV or MIP)")


def _pandora(p: _Parameters) -> PandoraParameters:
    return PandoraParameters(
        settingsFile=p.text("PandoraSettingsXmlFile"),
        ecalToMip=p.float("ECalToMipCalibration"),
        hcalToMip=p.float("HCalToMipCalibration"),
        muonToMip=p.float("MuonToMipCalibration"),
        ecalMipThreshold=p.float("ECalMipThreshold") if p.has("ECalMipThreshold") else None,
        hcalMipThreshold=p.float("HCalMipThreshold") if p.has("HCalMipThreshold") else None,
        ecalToEm=p.float("ECalToEMGeVCalibration"),
        hcalToEm=p.float("HCalToEMGeVCalibration"),
        ecalToHadBarrel=p.float("ECalToHadGeVCalibrationBarrel"),
        ecalToHadEndcap=p.float("ECalToHadGeVCalibrationEndCap"),
        hcalToHad=p.float("HCalToHadGeVCalibration"),
        maxHcalHitHadronicEnergy=p.float("MaxHCalHitHadronicEnergy", math.inf),
        maxClusterEnergyToApplySoftComp=p.float("MaxClusterEnergyToApplySoftComp", DEFAULT_SOFT_COMP_LIMIT, positive=False),
    )


def _pfo_analysis(p: _Parameters) -> PfoAnalysisParameters:
    bins = p.ints("NBinsMuonCaloHitEnergyHist")[0] if p.has("NBinsMuonCaloHitEnergyHist") else 500
    if bins <= 0:
        raise SteeringInputError(f"processor {p.processor}: NBinsMuonCaloHitEnergyHist must be positive")
    rootFile = p.text("RootFile", "PFOAnalysis.root")
    return PfoAnalysisParameters(
        rootFile=rootFile,
        collectCalibrationDetails=p.flag("CollectCalibrationDetails", False),
        muonHistogramBins=bins,
        muonHistogramHigh=p.float("XUpperValueMuonCaloHitEnergyHist", 0.002),
    )


__all__ = [
    "DigiParameters",
    "PandoraParameters",
    "PfoAnalysisParameters",
    "SteeringInput",
    "SteeringInputError",
    "expand_constants",
    "parse_steering",
    "read_steering",
]
