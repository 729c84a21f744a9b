"""Which processor parameter carries each calibration constant: data of the detector model.

The procedure fits its constants under DDCaloDigi's and DDMarlinPandora's names (CalibrECAL is
the digitised over the simulated ECAL energy, and so on). A detector's reconstruction chain
decides where they go: CLICdet and CLD give each one to the parameter of the same name
(``data/carriers/DDCaloDigi.yaml``), ILD gives the digitisation constants to the
``calibration_factorsMipGev`` of its RealisticCaloReco processors, in GeV per MIP, i.e. times the
MIP energy its RealisticCaloDigi processors use. A carrier says that in one line:
processor (name, or the settings key naming it, and its type), parameter, and the value as a
product of constants, numbers and other processors' parameters.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ILCDIRAC.CalibrationSystem.Utilities.steering import Steering, SteeringError

#: DDCaloDigi constants the calibration may set.
DIGI_CONSTANTS = (
    "CalibrECAL",
    "ECALEndcapCorrectionFactor",
    "CalibrHCALBarrel",
    "CalibrHCALEndcap",
    "CalibrHCALOther",
    "HCALEndcapCorrectionFactor",
)
#: DDMarlinPandora constants the calibration may set.
PANDORA_CONSTANTS = (
    "ECalToMipCalibration",
    "HCalToMipCalibration",
    "MuonToMipCalibration",
    "ECalToEMGeVCalibration",
    "HCalToEMGeVCalibration",
    "ECalToHadGeVCalibrationBarrel",
    "ECalToHadGeVCalibrationEndCap",
    "HCalToHadGeVCalibration",
    "MaxHCalHitHadronicEnergy",
    "MaxClusterEnergyToApplySoftComp",
)
CONSTANTS = DIGI_CONSTANTS + PANDORA_CONSTANTS
#: Software compensation's limit: set to 0 on the Pandora processor while calibrating (a setting).
SOFT_COMP = "MaxClusterEnergyToApplySoftComp"
#: The constants the procedure fits; every detector model gives a starting value for each.
CALIBRATED_CONSTANTS = tuple(c for c in CONSTANTS
                             if c not in ("HCALEndcapCorrectionFactor", "MaxHCalHitHadronicEnergy", SOFT_COMP))
#: Carrier value: DDCaloDigi's ECAL layer-group boundaries from the settings' layer counts.
LAYER_BOUNDARIES = "ecalLayerBoundaries"
#: Settings keys that name processors; a carrier's ``processor`` may be one of them.
PROCESSOR_SETTINGS = ("DDCaloDigiName", "DDPandoraPFANewProcessorName", "PfoAnalysisName")
PANDORA_TYPE = "DDPandoraPFANewProcessor"
PFO_ANALYSIS_TYPE = "PfoAnalysis"
DEFAULT_CHAIN = Path(__file__).resolve().parent.parent / "data" / "carriers" / "DDCaloDigi.yaml"


@dataclass(frozen=True)
class Carrier:
    """One processor parameter that carries (a product of) constants."""

    processor: str
    type: str
    parameter: str
    value: tuple[str, ...]
    vector: bool = False

    def constants(self) -> set[str]:
        return {factor for factor in self.value if factor in CONSTANTS}

    def processor_name(self, settings: Mapping[str, Any]) -> str:
        return settings[self.processor] if self.processor in PROCESSOR_SETTINGS else self.processor


def parse_carriers(data: Any) -> tuple[tuple[Carrier, ...], list[str]]:
    """Carriers from a model's ``constantCarriers`` list, with every problem found."""
    if not isinstance(data, list) or not data:
        return (), ["constantCarriers must be a non-empty list"]
    carriers, problems = [], []
    for index, entry in enumerate(data):
        where = f"constantCarriers[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"processor", "type", "parameter", "value", "vector"}:
            problems.append(f"{where} must be a mapping of processor, type, parameter, value, vector")
            continue
        fields = [entry.get(key) for key in ("processor", "type", "parameter", "value")]
        if not all(isinstance(v, str) and v.strip() for v in fields):
            problems.append(f"{where}: processor, type, parameter and value must be non-empty strings")
            continue
        factors = tuple(f.strip() for f in entry["value"].split("*"))
        bad = [f for f in factors if not _factor_ok(f)] if factors != (LAYER_BOUNDARIES,) else []
        if bad:
            problems.append(f"{where}: value factors {bad} are not constants ({', '.join(CONSTANTS)}), numbers or "
                            f"Processor.parameter")
            continue
        if not isinstance(entry.get("vector", False), bool):
            problems.append(f"{where}: vector must be true or false")
            continue
        carriers.append(Carrier(entry["processor"].strip(), entry["type"].strip(), entry["parameter"].strip(),
                                factors, entry.get("vector", False)))
    return tuple(carriers), problems


def _factor_ok(factor: str) -> bool:
    if factor in CONSTANTS:
        return True
    if _number(factor) is not None:
        return True
    processor, _, parameter = factor.partition(".")
    return bool(processor and parameter and " " not in factor)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@functools.cache
def default_carriers() -> tuple[Carrier, ...]:
    carriers, problems = parse_carriers(yaml.safe_load(DEFAULT_CHAIN.read_text()))
    if problems:
        raise ValueError(f"{DEFAULT_CHAIN}: {'; '.join(problems)}")
    return carriers


# ------------------------------------------------------------------------------------ processors
def locate(steering: Steering, name: str, kind: str, hint: str = "") -> str:
    """The processor the calibration uses: ``name`` if <execute> runs it, else the one processor
    of type ``kind`` that runs; anything else is a SteeringError saying what to change."""
    if name in steering.processors and steering.runs(name):
        found = steering.processors[name].type
        if found != kind:
            raise SteeringError(f"processor {name!r} is a {found}, not a {kind}")
        return name
    running = steering.running(kind)
    if len(running) == 1:
        return running[0]
    if name not in steering.processors:
        reason = f"{name!r} is not defined"
    elif (executed := steering.executed(name)) is None:
        reason = f"{name!r} is defined but not run by <execute>"
    else:
        reason = f"{name!r} is run only under the condition {executed.condition!r}, which is false"
    if not running:
        raise SteeringError(f"no {kind} processor is run: {reason}")
    raise SteeringError(f"{reason}, and {len(running)} {kind} processors are run ({', '.join(running)}): "
                        f"it is ambiguous which one to calibrate{hint}")


def _hint(carrier: Carrier) -> str:
    if carrier.processor in PROCESSOR_SETTINGS:
        return f"; name it with the setting {carrier.processor}"
    return f"; the detector model names {carrier.processor!r}"


def processor_parameter(steering: Steering, reference: str) -> float:
    """A ``Processor.parameter`` factor: the first token of its effective value, a positive number."""
    name, _, parameter = reference.partition(".")
    if name not in steering.processors:
        raise SteeringError(f"processor {name!r} (for {reference}) is not defined")
    tokens = steering.processors[name].tokens(parameter)
    value = _number(tokens[0]) if tokens else None
    if value is None or value <= 0:
        raise SteeringError(f"{reference} must be a positive number, not {' '.join(tokens or []) or 'unset'!r}")
    return value


# ------------------------------------------------------------------------------------ values
def ecal_layers(n_thin_layers: int, n_thick_layers: int, first_layer: int = 1) -> str:
    """DDCaloDigi's ECALLayers for thin layers followed by thick ones.

    DDCaloDigi puts a hit of layer number ``l`` in CalibrECAL group 0 if ``l < L0``, group 1 if
    ``L0 <= l < L1``. With layers numbered from ``first_layer`` (1 in the CLIC/CLD DD4hep drivers),
    the thin layers are first_layer .. first_layer+nThin-1, so L0 = first_layer + nThin and
    L1 = L0 + nThick. (ILCDIRAC wrote "nThin nThin+nThick+1", which is this for 0-based numbering
    and puts the last thin layer into the thick group for 1-based numbering.)
    """
    low = first_layer + n_thin_layers
    return f"{low} {low + n_thick_layers}"


@dataclass(frozen=True)
class Assignment:
    """What one processor gets: parameter values, and which of them are vectors."""

    processor: str
    values: dict[str, Any]
    vectors: frozenset[str]


def assignments(
    steering: Steering, carriers: Sequence[Carrier], constants: Mapping[str, Any], settings: Mapping[str, Any]
) -> list[Assignment]:
    """The parameter values that carry ``constants`` in this steering file, per processor.

    A carrier whose constants are not all in ``constants`` is left alone (the user's value
    stays); ``ecalLayerBoundaries`` is written only when the ECAL has thick layers."""
    per: dict[str, tuple[dict[str, Any], set[str]]] = {}
    for carrier in carriers:
        if not carrier.constants() <= set(constants):
            continue
        if carrier.value == (LAYER_BOUNDARIES,):
            if not settings["nEcalThickLayers"]:
                continue
            value: Any = ecal_layers(settings["nEcalThinLayers"], settings["nEcalThickLayers"],
                                     settings.get("ecalFirstLayerNumber", 1))
        else:
            value = _product(steering, carrier, constants)
        name = locate(steering, carrier.processor_name(settings), carrier.type, _hint(carrier))
        values, vectors = per.setdefault(name, ({}, set()))
        values[carrier.parameter] = value
        if carrier.vector:
            vectors.add(carrier.parameter)
    return [Assignment(name, values, frozenset(vectors)) for name, (values, vectors) in per.items()]


def _product(steering: Steering, carrier: Carrier, constants: Mapping[str, Any]) -> Any:
    scale, vector = 1.0, None
    for factor in carrier.value:
        if factor in CONSTANTS:
            value = constants[factor]
        elif _number(factor) is not None:
            value = _number(factor)
        else:
            value = processor_parameter(steering, factor)
        if isinstance(value, (list, tuple)):
            if vector is not None:
                raise SteeringError(f"carrier {carrier.processor}.{carrier.parameter} multiplies two vectors")
            vector = [float(v) for v in value]
        else:
            scale *= float(value)
    if vector is None:
        return scale
    return [v * scale for v in vector] if scale != 1.0 else vector


__all__ = [
    "CALIBRATED_CONSTANTS",
    "CONSTANTS",
    "DIGI_CONSTANTS",
    "LAYER_BOUNDARIES",
    "PANDORA_CONSTANTS",
    "PANDORA_TYPE",
    "PFO_ANALYSIS_TYPE",
    "PROCESSOR_SETTINGS",
    "SOFT_COMP",
    "Assignment",
    "Carrier",
    "assignments",
    "default_carriers",
    "ecal_layers",
    "locate",
    "parse_carriers",
    "processor_parameter",
]
