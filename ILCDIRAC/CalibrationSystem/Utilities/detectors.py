"""Detector models as data: everything geometry-dependent the calibration needs.

The old procedure hard-coded processor names, cos(theta) windows, layer counts and HCAL
thicknesses per detector in code; here each model is one YAML file in ``data/detectors/``, so
supporting a new detector means adding a file. A file may name a ``base`` model and give only
what differs (the FCC-ee ECAL variants do this); ``startingConstants`` then merge per constant.

The keys of a model file that the settings take over are spelled exactly like the settings keys
(``SETTINGS_KEYS``) and checked by the same fields (``settings_schema``), so "a user setting
overrides a model value" is a plain per-key override and a model value is valid exactly when the
same value would be valid in a settings file.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import yaml

from ILCDIRAC.CalibrationSystem.Utilities.carriers import (
    CALIBRATED_CONSTANTS,
    CONSTANTS,
    Carrier,
    default_carriers,
    parse_carriers,
)
from ILCDIRAC.CalibrationSystem.Utilities.limits import shown
from ILCDIRAC.CalibrationSystem.Utilities.schema import REQUIRED, Field, convert, did_you_mean, is_number
from ILCDIRAC.CalibrationSystem.Utilities.settings_schema import BY_NAME, MODEL_KEYS

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "detectors"

#: Suffixes that mark ``detectorModel`` as a geometry tarball the jobs must ship.
TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")

#: Model values that the settings take over unless the user sets them (checked by their settings fields).
SETTINGS_KEYS = MODEL_KEYS
#: The model's own numbers, which the settings do not take over.
_MODEL_FIELDS = (
    Field("nEcalLayers", "int", REQUIRED, low=1),
    Field("ecalAbsorberThicknessThin", "float", None, low=0, openLow=True, unit="mm"),
    Field("ecalAbsorberThicknessThick", "float", None, low=0, openLow=True, unit="mm"),
)
#: Keys a model may leave null: without thick ECAL layers there is nothing to correct or describe.
_NULLABLE = ("ecalResponseCorrectionForThickLayers", "ecalAbsorberThicknessThin", "ecalAbsorberThicknessThick")
_DESCRIPTIVE_KEYS = ("name", "aliases", "base", "description", "sources", "startingConstants", "constantCarriers",
                     "pfoAnalysisCollections")
_FILE_KEYS = frozenset(SETTINGS_KEYS + _DESCRIPTIVE_KEYS + tuple(f.name for f in _MODEL_FIELDS))


class DetectorModelError(ValueError):
    """An unknown model name, or a model data file that is malformed."""


@dataclass(frozen=True)
class DetectorModel:
    """One detector model; lengths in mm, MIP thresholds in MIPs, constants under Marlin names."""

    name: str
    aliases: tuple[str, ...]
    description: str
    DDCaloDigiName: str
    DDPandoraPFANewProcessorName: str
    PfoAnalysisName: str
    ecalBarrelCosThetaRange: tuple[float, float]
    ecalEndcapCosThetaRange: tuple[float, float]
    hcalBarrelCosThetaRange: tuple[float, float]
    hcalEndcapCosThetaRange: tuple[float, float]
    nEcalLayers: int
    nEcalThinLayers: int
    nEcalThickLayers: int
    #: None when the model has no thick layers (then nothing needs correcting).
    ecalResponseCorrectionForThickLayers: float | None
    #: Number of the first ECAL layer in the cell ID (DDCaloDigi compares it with ``ECALLayers``).
    ecalFirstLayerNumber: int
    nHcalLayers: int
    hcalAbsorberThicknessEndcap: float
    hcalAbsorberThicknessRing: float
    hcalScintillatorThicknessEndcap: float
    hcalScintillatorThicknessRing: float
    ecalMipThreshold: float
    hcalMipThreshold: float
    ecalAbsorberThicknessThin: float | None = None
    ecalAbsorberThicknessThick: float | None = None
    startingConstants: Mapping[str, Any] = field(default_factory=dict)
    sources: str = ""
    #: The processor parameters that carry the constants (default: the DDCaloDigi chain).
    constantCarriers: tuple[Carrier, ...] = ()
    #: The simulated-hit collections of a PfoAnalysis the calibration adds (parameter -> names).
    pfoAnalysisCollections: Mapping[str, str] = field(default_factory=dict)

    def settings_defaults(self) -> dict[str, Any]:
        """The settings values this model supplies (``SETTINGS_KEYS``), as plain JSON-safe values."""
        values = {key: getattr(self, key) for key in SETTINGS_KEYS}
        return {key: list(v) if isinstance(v, tuple) else v for key, v in values.items()}

    def constants(self) -> dict[str, Any]:
        """A mutable copy of the default starting constants (``CalibrECAL`` as a list)."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in self.startingConstants.items()}


def is_tarball(name: str) -> bool:
    """Whether ``detectorModel`` names a geometry tarball rather than a model."""
    return name.lower().endswith(TARBALL_SUFFIXES)


def model_stem(name: str) -> str:
    """The model name inside a tarball path or LFN: ``/a/b/FCCee_01_v04_ecal20_10.tgz`` -> the stem."""
    base = PurePosixPath(name.strip()).name
    for suffix in TARBALL_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def available_models() -> list[str]:
    """The canonical names of every model in the data folder."""
    return sorted(_models())


def load_detector_model(name: str) -> DetectorModel:
    """The model called ``name`` (or an alias, or a geometry tarball named after the model)."""
    if not isinstance(name, str) or not name.strip():
        raise DetectorModelError(f"a detector model name must be a non-empty string, not {shown(name)}")
    models = _models()
    index = _name_index()
    stem = model_stem(name)
    for candidate in (stem, stem.lower()):
        if candidate in index:
            return models[index[candidate]]
    names = sorted(_all_names())
    hint = did_you_mean(stem, names, cutoff=0.7)
    raise DetectorModelError(f"unknown detector model {shown(stem)}{hint}; known models: {', '.join(names)}")


def _all_names() -> set[str]:
    return {n for model in _models().values() for n in (model.name, *model.aliases)}


@functools.cache
def _name_index() -> dict[str, str]:
    """Name or alias (exact, and lower-cased when that is unambiguous) -> canonical name."""
    index: dict[str, str] = {}
    lowered: dict[str, set[str]] = {}
    for model in _models().values():
        for n in (model.name, *model.aliases):
            index[n] = model.name
            lowered.setdefault(n.lower(), set()).add(model.name)
    for low, owners in lowered.items():
        if len(owners) == 1:
            index.setdefault(low, next(iter(owners)))
    return index


@functools.cache
def _models() -> dict[str, DetectorModel]:
    raw = {}
    for path in sorted(DATA_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise DetectorModelError(f"{path}: a detector model file must hold a mapping")
        unknown = sorted(set(data) - _FILE_KEYS)
        if unknown:
            raise DetectorModelError(f"{path}: unknown keys {unknown}")
        if data.get("name") != path.stem:
            raise DetectorModelError(f"{path}: 'name' must be the file name stem {path.stem!r}")
        raw[path.stem] = data
    models = {name: _build(name, _resolve(name, raw, ())) for name in raw}
    names: dict[str, str] = {}
    for model in models.values():
        for n in (model.name, *model.aliases):
            if n in names:
                raise DetectorModelError(f"detector model name {n!r} is used by {names[n]} and {model.name}")
            names[n] = model.name
    return models


def _resolve(name: str, raw: Mapping[str, dict], chain: tuple[str, ...]) -> dict[str, Any]:
    """The model's data with its ``base`` chain merged in (constants merged per key)."""
    if name in chain:
        raise DetectorModelError(f"detector model {name}: circular 'base' chain {' -> '.join(chain + (name,))}")
    if name not in raw:
        raise DetectorModelError(f"detector model {chain[-1]}: base model {name!r} does not exist")
    data = dict(raw[name])
    base = data.pop("base", None)
    if base is None:
        return data
    merged = _resolve(base, raw, chain + (name,))
    constants = {**merged.get("startingConstants", {}), **data.get("startingConstants", {})}
    merged.update({k: v for k, v in data.items() if k != "aliases"})
    merged["aliases"] = data.get("aliases", [])
    merged["startingConstants"] = constants
    return merged


def _build(name: str, data: dict[str, Any]) -> DetectorModel:
    """Check a model's data completely and freeze it; every problem is reported at once."""
    problems: list[str] = []
    required = set(SETTINGS_KEYS) | {"nEcalLayers", "startingConstants"}
    missing = sorted(k for k in required if k not in data)
    problems += [f"missing key {k!r}" for k in missing]
    values: dict[str, Any] = {}
    for spec in (*(BY_NAME[key] for key in SETTINGS_KEYS), *_MODEL_FIELDS):
        value = data.get(spec.name)
        if value is None and (spec.name in _NULLABLE or spec.name in missing):
            values[spec.name] = None
            continue
        values[spec.name], message = convert(spec, value)
        if message:
            problems.append(f"{spec.name}: {message}")
    thin, thick, layers = (values[key] for key in ("nEcalThinLayers", "nEcalThickLayers", "nEcalLayers"))
    if all(isinstance(n, int) for n in (thin, thick, layers)):
        if thin + thick != layers:
            problems.append("nEcalThinLayers + nEcalThickLayers must equal nEcalLayers")
        if thick > 0 and values["ecalResponseCorrectionForThickLayers"] is None:
            problems.append("a model with thick ECAL layers needs ecalResponseCorrectionForThickLayers")
    constants, constantProblems = _check_constants(data.get("startingConstants", {}))
    problems += constantProblems
    carriers, carrierProblems = parse_carriers(data["constantCarriers"]) if "constantCarriers" in data else (
        default_carriers(), [])
    problems += carrierProblems
    carried = {c for carrier in carriers for c in carrier.constants()}
    if carriers:
        problems += [f"constantCarriers: no carrier for {c!r}" for c in CALIBRATED_CONSTANTS if c not in carried]
    collections = data.get("pfoAnalysisCollections", {})
    if not (
        isinstance(collections, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in collections.items())
    ):
        problems.append("pfoAnalysisCollections must map PfoAnalysis parameter names to collection names")
        collections = {}
    if problems:
        raise DetectorModelError(f"detector model {name} ({DATA_DIR / (name + '.yaml')}): " + "; ".join(problems))
    aliases = data.get("aliases") or []
    return DetectorModel(
        name=name,
        aliases=tuple(aliases),
        description=str(data.get("description", "")).strip(),
        sources=str(data.get("sources", "")).strip(),
        startingConstants=MappingProxyType(constants),
        constantCarriers=carriers,
        pfoAnalysisCollections=MappingProxyType(dict(collections)),
        **{k: v for k, v in values.items() if k not in ("name",)},
    )


def _check_constants(constants: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(constants, dict):
        return {}, ["startingConstants must be a mapping"]
    problems = [f"startingConstants: unknown constant {k!r}" for k in constants if k not in CONSTANTS]
    problems += [f"startingConstants: missing {k!r}" for k in CALIBRATED_CONSTANTS if k not in constants]
    frozen: dict[str, Any] = {}
    for key, value in constants.items():
        if key == "CalibrECAL":
            if not (isinstance(value, list) and len(value) == 2 and all(is_number(x) and x > 0 for x in value)):
                problems.append(f"startingConstants: CalibrECAL must be [thin, thick] positive numbers, not {value!r}")
                continue
            frozen[key] = (float(value[0]), float(value[1]))
        elif is_number(value) and value > 0:
            frozen[key] = float(value)
        else:
            problems.append(f"startingConstants: {key} must be a positive number, not {value!r}")
    return frozen, problems


__all__ = [
    "DATA_DIR",
    "DetectorModel",
    "DetectorModelError",
    "SETTINGS_KEYS",
    "TARBALL_SUFFIXES",
    "available_models",
    "is_tarball",
    "load_detector_model",
    "model_stem",
]
