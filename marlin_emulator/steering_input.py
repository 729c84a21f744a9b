"""What the emulator takes from a Marlin steering file, read as Marlin reads it.

The file is read by the calibration's own Marlin reader (``Utilities.steering``): constants,
includes relative to the steering file's folder, groups and their parameter precedence,
``<execute>`` with its conditions. Processors count only if ``<execute>`` runs them; they are
recognised by their ``type``: DDCaloDigi, or ILD's chain of RealisticCaloDigi* and
RealisticCaloReco* processors (a hit's energy is sim energy / calibration_mip x
calibration_factorsMipGev of its layer group, which the emulator turns into the DDCaloDigi-like
constants of its detector model, recognising each calorimeter region by the simulated-hit
collection its digitiser reads), DDPandoraPFANewProcessor, PfoAnalysis, DDSimpleMuonDigi; other
processors are ignored, as a detector-less Marlin would not care about them either. Missing
calibration constants are errors rather than silent processor defaults, so a broken steering
file fails loudly.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ILCDIRAC.CalibrationSystem.Utilities import steering
from ILCDIRAC.CalibrationSystem.Utilities.steering import Steering

DIGI_TYPE = "DDCaloDigi"
PANDORA_TYPE = "DDPandoraPFANewProcessor"
PFO_ANALYSIS_TYPE = "PfoAnalysis"
MUON_DIGI_TYPE = "DDSimpleMuonDigi"
#: ILD's digitiser and reconstruction processor types (silicon and scintillator variants).
REALISTIC_DIGI, REALISTIC_RECO = "RealisticCaloDigi", "RealisticCaloReco"
#: The simulated-hit collections by which a RealisticCaloDigi's calorimeter region is known
#: (ILD's DD4hep models; MergeCollections makes the ECAL ones from the Even/Odd silicon hits).
REGION_COLLECTIONS = {
    "ecalBarrel": ("EcalBarrelCollection", "ECalBarrelCollection"),
    "ecalEndcap": ("EcalEndcapsCollection", "ECalEndcapCollection"),
    "hcalBarrel": ("HcalBarrelRegCollection", "HCalBarrelCollection"),
    "hcalEndcap": ("HcalEndcapsCollection", "HCalEndcapCollection"),
    "hcalRing": ("HcalEndcapRingCollection", "HCalRingCollection"),
}
#: RealisticCaloDigi's time window when timingCut is on and the steering gives none (ns).
REALISTIC_TIME_WINDOW = 100.0
#: PfoAnalysis's default upper edge of MuonDirectionCorrectedCaloHitEnergy (GeV; 500 bins from 0).
PFO_MUON_HISTOGRAM_HIGH = 1.0
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


def read_steering(path: str | Path) -> SteeringInput:
    """Parse a steering file (and the files it includes, relative to its folder);
    SteeringInputError names what is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise SteeringInputError(f"steering file {path} does not exist")
    try:
        return steering_input(steering.read_steering(steering.FolderFiles(path.parent), path.name))
    except (SteeringInputError, steering.SteeringError) as exc:
        raise SteeringInputError(f"steering file {path}: {exc}") from None


def parse_steering(text: str) -> SteeringInput:
    """A steering file given as text (it can include nothing)."""
    try:
        return steering_input(steering.read_text(text))
    except steering.SteeringError as exc:
        raise SteeringInputError(str(exc)) from None


def steering_input(parsed: Steering) -> SteeringInput:
    names = {t: _active(parsed, t) for t in (DIGI_TYPE, PANDORA_TYPE, PFO_ANALYSIS_TYPE, MUON_DIGI_TYPE)}
    pandora, digiName, muonName = names[PANDORA_TYPE], names[DIGI_TYPE], names[MUON_DIGI_TYPE]
    if pandora is None:
        raise SteeringInputError(f"no {PANDORA_TYPE} processor is executed")
    if digiName is not None:
        digi = _digi(_Parameters(parsed, digiName))
    elif _realistic(parsed, REALISTIC_RECO):
        digi = _realistic_chain(parsed)
    else:
        raise SteeringInputError(
            f"no {DIGI_TYPE} processor (nor a {REALISTIC_DIGI}/{REALISTIC_RECO} chain) is executed"
        )
    pfo = names[PFO_ANALYSIS_TYPE]
    muonDigitisation = None
    if muonName:
        muonParams = _Parameters(parsed, muonName)
        muonDigitisation = _first_positive(muonParams, "CalibrMUON") if muonParams.has("CalibrMUON") else None
    globalParams = {p.name: parsed.global_value(p.name) for p in parsed.globals}
    return SteeringInput(
        inputFiles=tuple((globalParams.get("LCIOInputFiles") or "").split()),
        maxRecordNumber=_global_int(globalParams, "MaxRecordNumber", 0),
        skipNEvents=max(_global_int(globalParams, "SkipNEvents", 0), 0),
        digi=digi,
        pandora=_pandora(_Parameters(parsed, pandora)),
        pfoAnalysis=_pfo_analysis(_Parameters(parsed, pfo)) if pfo else None,
        muonDigitisation=muonDigitisation,
    )


def _active(parsed: Steering, processorType: str) -> str | None:
    names = parsed.running(processorType)
    if len(names) > 1:
        raise SteeringInputError(
            f"{len(names)} {processorType} processors are executed ({', '.join(names)}); expected one"
        )
    return names[0] if names else None


def _realistic(parsed: Steering, prefix: str) -> list[str]:
    return [e.name for e in parsed.execute
            if e.runs is not False and parsed.processors[e.name].type.startswith(prefix)]


def _global_int(params: Mapping[str, str | None], name: str, default: int) -> int:
    raw = (params.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw.split()[0])
    except ValueError:
        raise SteeringInputError(f"global parameter {name} must be an integer, not {raw!r}") from None


class _Parameters:
    """One processor's parameters with typed, named accessors."""

    def __init__(self, parsed: Steering, processor: str) -> None:
        self.processor = processor
        self.values = parsed.processors[processor].values()

    def has(self, name: str) -> bool:
        return bool(self.values.get(name, "").split())

    def tokens(self, name: str) -> list[str]:
        tokens = self.values.get(name, "").split()
        if not tokens:
            raise SteeringInputError(f"processor {self.processor} has no value for {name}")
        return tokens

    def floats(self, name: str) -> tuple[float, ...]:
        tokens = self.tokens(name)
        try:
            values = tuple(float(t) for t in tokens)
        except ValueError:
            raise SteeringInputError(
                f"processor {self.processor}: {name} must be numbers, not {self.values[name]!r}"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise SteeringInputError(f"processor {self.processor}: {name} must be finite, not {self.values[name]!r}")
        return values

    def float(self, name: str, default: float | None = None, positive: bool = True) -> float:
        """A scalar parameter: like Marlin's getFloatVal, the first token (a processor's own value
        comes before the one its group appends)."""
        if default is not None and not self.has(name):
            return default
        values = self.floats(name)[:1]
        if positive and values[0] <= 0:
            raise SteeringInputError(f"processor {self.processor}: {name} must be positive, not {values[0]}")
        return values[0]

    def ints(self, name: str) -> tuple[int, ...]:
        tokens = self.tokens(name)
        try:
            return tuple(int(t) for t in tokens)
        except ValueError:
            raise SteeringInputError(
                f"processor {self.processor}: {name} must be integers, not {self.values[name]!r}"
            ) from None

    def text(self, name: str, default: str | None = None) -> str:
        """A string parameter: the first token, as Marlin's getStringVal."""
        if default is not None and not self.has(name):
            return default
        return self.tokens(name)[0]

    def flag(self, name: str, default: bool) -> bool:
        if not self.has(name):
            return default
        word = self.tokens(name)[0].lower()
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
            f"processor {p.processor}: CalibrECAL has {len(calibrEcal)} values "
            f"for the {len(ecalLayers)} layer groups of ECALLayers"
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
        maxClusterEnergyToApplySoftComp=p.float(
            "MaxClusterEnergyToApplySoftComp", DEFAULT_SOFT_COMP_LIMIT, positive=False
        ),
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
        muonHistogramHigh=p.float("XUpperValueMuonCaloHitEnergyHist", PFO_MUON_HISTOGRAM_HIGH),
    )


def _realistic_chain(parsed: Steering) -> DigiParameters:
    """ILD's RealisticCaloDigi -> RealisticCaloReco chain as DDCaloDigi-like digitisation: per
    region, the reconstruction's GeV-per-MIP factors over the digitiser's MIP energy."""
    digitisers = {}
    for name in _realistic(parsed, REALISTIC_DIGI):
        p = _Parameters(parsed, name)
        inputs = set(p.tokens("inputHitCollections"))
        region = next((r for r, known in REGION_COLLECTIONS.items() if inputs & set(known)), None)
        if region is not None:
            digitisers[p.text("outputHitCollections")] = (region, p)
    regions: dict[str, tuple[_Parameters, _Parameters]] = {}
    for name in _realistic(parsed, REALISTIC_RECO):
        p = _Parameters(parsed, name)
        found = digitisers.get(p.text("inputHitCollections"))
        if found is not None:
            regions[found[0]] = (found[1], p)
    missing = [r for r in REGION_COLLECTIONS if r not in regions]
    if missing:
        raise SteeringInputError(f"the {REALISTIC_DIGI}/{REALISTIC_RECO} chain has no executed digitiser and "
                                 f"reconstruction for {', '.join(missing)}")

    def constants(region: str) -> tuple[float, ...]:
        digi, reco = regions[region]
        return tuple(f / digi.float("calibration_mip") for f in reco.floats("calibration_factorsMipGev"))

    barrel, endcap = constants("ecalBarrel"), constants("ecalEndcap")
    groups = regions["ecalBarrel"][1].ints("calibration_layergroups")
    return DigiParameters(
        calibrEcal=barrel,
        ecalLayers=tuple(sum(groups[: k + 1]) for k in range(len(groups))),
        ecalEndcapCorrectionFactor=endcap[0] / barrel[0],
        calibrHcalBarrel=constants("hcalBarrel")[0],
        calibrHcalEndcap=constants("hcalEndcap")[0],
        calibrHcalOther=constants("hcalRing")[0],
        hcalEndcapCorrectionFactor=1.0,
        ecalTimeWindows=_realistic_windows(regions["ecalBarrel"][0], regions["ecalEndcap"][0]),
        hcalTimeWindows=_realistic_windows(regions["hcalBarrel"][0], regions["hcalEndcap"][0]),
        ecalThreshold=_realistic_threshold(regions["ecalBarrel"][0]),
        hcalThreshold=_realistic_threshold(regions["hcalBarrel"][0]),
    )


def _realistic_windows(barrel: _Parameters, endcap: _Parameters) -> tuple[float, float]:
    def window(p: _Parameters) -> float:
        if not p.flag("timingCut", False):
            return math.inf
        return p.float("timingWindowMax", REALISTIC_TIME_WINDOW)

    return window(barrel), window(endcap)


def _realistic_threshold(p: _Parameters) -> float:
    """RealisticCaloDigi's threshold in GeV of simulated energy (its default unit is MIPs)."""
    value = p.float("threshold", 0.5, positive=False)
    unit = p.text("thresholdUnit", "MIP")
    if unit == "GeV":
        return value
    if unit == "MIP":
        return value * p.float("calibration_mip")
    raise SteeringInputError(f"processor {p.processor}: thresholdUnit {unit!r} is not supported (GeV or MIP)")


__all__ = [
    "DigiParameters",
    "PandoraParameters",
    "PfoAnalysisParameters",
    "SteeringInput",
    "SteeringInputError",
    "parse_steering",
    "read_steering",
    "steering_input",
]
