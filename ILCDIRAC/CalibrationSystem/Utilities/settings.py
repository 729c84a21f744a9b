"""The user's calibration settings: load (YAML or the talk's legacy text), validate, resolve.

One validated, frozen ``Settings`` comes out of either format. Validation collects *every*
problem before failing, each naming its key, so a user fixes a settings file in one go
(``dirac-clic-calibration-submit --dry-run FILE``). Resolution fills in defaults and the
detector model's values (a user setting wins per key) and expands sample list files, so the
service and the workers only ever see ``Settings.to_dict()``: plain, complete, JSON-safe.
The keys themselves (type, bounds, default, meaning) are declared once in ``settings_schema``.
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ILCDIRAC.CalibrationSystem.Utilities.carriers import CONSTANTS, SOFT_COMP
from ILCDIRAC.CalibrationSystem.Utilities.detectors import (
    DetectorModel,
    DetectorModelError,
    is_tarball,
    load_detector_model,
)
from ILCDIRAC.CalibrationSystem.Utilities.limits import shown
from ILCDIRAC.CalibrationSystem.Utilities.paths import PathError, normal_lfn, sample_file
from ILCDIRAC.CalibrationSystem.Utilities.phases import PHASES
from ILCDIRAC.CalibrationSystem.Utilities.schema import (
    MODEL,
    REQUIRED,
    SCALAR_KINDS,
    Field,
    convert,
    did_you_mean,
    is_int,
    is_number,
)
from ILCDIRAC.CalibrationSystem.Utilities.settings_schema import (
    BY_NAME,
    DEFAULT_PHASE_SEQUENCE,
    DERIVED_KEYS,
    INPUT_KEYS,
    MAX_STAGE,
)
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import PhaseKey

SAMPLES = ("gamma", "kaon", "muon", "zuds")
#: A settings file and a sample list file are read only up to these sizes (bytes): a settings
#: file is a page of text, a list file thousands of LFNs.
MAX_SETTINGS_BYTES = 1024 * 1024
MAX_LIST_FILE_BYTES = 8 * 1024 * 1024
#: A YAML settings file may nest this deep and hold (with every alias expanded) this many values;
#: an "alias bomb" of a few hundred bytes would otherwise expand to billions.
MAX_YAML_DEPTH = 50
MAX_YAML_VALUES = 100_000
#: Problems listed at most (a broken file of a megabyte would otherwise list tens of thousands).
MAX_PROBLEMS = 20


class SettingsError(ValueError):
    """Everything wrong with a settings file; ``problems`` lists each, naming its key."""

    def __init__(self, problems: list[str]) -> None:
        problems = list(problems)
        if len(problems) > MAX_PROBLEMS:
            problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]
        self.problems = problems
        super().__init__("\n".join(self.problems))


# ------------------------------------------------------------------------------------ the keys
#: The keys a user may set, by name (the fields of ``settings_schema``; derived keys excluded).
KEYS: Mapping[str, Field] = MappingProxyType({name: BY_NAME[name] for name in INPUT_KEYS})
_STRING_KINDS = ("str", "optstr", "choice", "lfn")


# ------------------------------------------------------------------------------------ Settings
@dataclass(frozen=True)
class Settings:
    """Validated, resolved settings; field names are the settings keys (see docs/SETTINGS.md)."""

    numberOfJobs: int
    fractionOfFinishedJobsNeededToStartNextStep: float
    digitisationAccuracy: float
    pandoraPFAAccuracy: float
    startStage: int
    startPhase: int
    stopStage: int
    stopPhase: int
    #: The phases that will run, after the start/stop cut.
    phaseSequence: tuple[str, ...]
    disableSoftwareCompensation: bool
    detectorModel: str
    ecalBarrelCosThetaRange: tuple[float, float]
    ecalEndcapCosThetaRange: tuple[float, float]
    hcalBarrelCosThetaRange: tuple[float, float]
    hcalEndcapCosThetaRange: tuple[float, float]
    nEcalThinLayers: int
    nEcalThickLayers: int
    ecalResponseCorrectionForThickLayers: float
    ecalFirstLayerNumber: int
    nHcalLayers: int
    hcalAbsorberThicknessEndcap: float
    hcalAbsorberThicknessRing: float
    hcalScintillatorThicknessEndcap: float
    hcalScintillatorThicknessRing: float
    ecalMipThreshold: float
    hcalMipThreshold: float
    marlinVersion: str | None
    DDCaloDigiName: str
    DDPandoraPFANewProcessorName: str
    PfoAnalysisName: str
    outputPath: str | None
    outputSE: str | None
    steeringFile: str
    gammaFiles: tuple[str, ...]
    kaonFiles: tuple[str, ...]
    muonFiles: tuple[str, ...]
    zudsFiles: tuple[str, ...]
    gammaEnergy: float
    kaonEnergy: float
    muonEnergy: float
    zudsEnergy: float
    gammaEventsPerFile: int
    kaonEventsPerFile: int
    muonEventsPerFile: int
    zudsEventsPerFile: int
    #: Marlin parameter name -> value (CalibrECAL as a (thin, thick) tuple); read-only.
    startingConstants: Mapping[str, Any]
    maxIterationsPerPhase: int
    maxFailedWorkerFraction: float
    maxResubmissionsPerWorker: int
    marlinExecutable: str
    #: Marlin constant name -> value, as ``Marlin --constant.NAME=VALUE`` would set them; read-only.
    steeringConstants: Mapping[str, str]
    backend: str
    strategy: str
    #: None: the file the steering's Pandora processor names (PandoraSettingsXmlFile).
    pandoraSettingsFile: str | None
    #: None: PandoraSettingsPhotonTraining.xml found beside the steering as CLDConfig, CLICPerformance
    #: or ILDConfig place it.
    pandoraSettingsTrainingFile: str | None
    cpuTime: int
    platform: str
    #: Mail the owner (their Registry Email) when the calibration finishes or fails.
    notifyByMail: bool
    #: The canonical name of the detector model (``detectorModel`` may be an alias or a tarball).
    detectorModelName: str
    #: ``detectorModel`` when it names a geometry tarball the jobs must ship, else None.
    geometryTarball: str | None

    def phases(self) -> list[tuple[int, int]]:
        """The resolved phase sequence as (stage, phase) pairs."""
        return [PhaseKey.parse(key) for key in self.phaseSequence]

    def samples(self) -> list[str]:
        """The samples the phase sequence reconstructs."""
        needed = {s for _, p in self.phases() for s in PHASES[p].samples}
        return [s for s in SAMPLES if s in needed]

    def model(self) -> DetectorModel:
        return load_detector_model(self.detectorModelName)

    def to_dict(self) -> dict[str, Any]:
        """Every key, resolved, as plain JSON-safe values (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def resolved_text(self) -> str:
        """A readable YAML dump of the resolved settings (for ``--dry-run``); loads back unchanged."""
        header = (
            "# Resolved calibration settings: defaults and detector-model values filled in,\n"
            f"# sample list files expanded. Detector model: {self.detectorModelName}.\n"
        )
        return header + yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, width=100)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------------ public API
def load_settings(path: str | Path) -> Settings:
    """Load and validate a settings file; list files and the steering file are looked up next to it."""
    path = Path(path)
    try:
        text = read_bounded(path, MAX_SETTINGS_BYTES)
    except (OSError, ValueError) as exc:
        raise SettingsError([f"cannot read settings file {path}: {getattr(exc, 'strerror', None) or exc}"]) from None
    fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else None
    return parse_settings(text, fmt=fmt, base_dir=path.resolve().parent)


def read_bounded(path: Path, limit: int) -> str:
    """The text of a file of at most ``limit`` bytes; ValueError for a bigger (or endless) one,
    found without reading more than ``limit`` + 1 bytes."""
    with open(path, "rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than the limit of {limit // 1024} KiB")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None


def parse_settings(text: str, *, fmt: str | None = None, base_dir: str | Path | None = None) -> Settings:
    """Parse settings text ("yaml", "legacy" or detected from the content) and validate it.

    ``base_dir`` is where relative list files and the steering file are looked up (default: the
    current directory)."""
    if fmt is None:
        fmt = detect_format(text)
    if fmt == "yaml":
        raw, problems = _parse_yaml(text)
        if problems and not raw:  # unreadable: anything more would only be noise
            raise SettingsError(problems)
    elif fmt == "legacy":
        raw, problems = _parse_legacy(text)
    else:
        raise ValueError(f"unknown settings format {fmt!r}; use 'yaml', 'legacy' or None")
    return _resolve(raw, Path(base_dir) if base_dir is not None else Path.cwd(), problems)


def settings_from_dict(d: Mapping[str, Any], *, base_dir: str | Path | None = None) -> Settings:
    """Validate settings given as a mapping (what a client sent, or ``Settings.to_dict()``).

    Without ``base_dir`` no file is read: sample lists must be lists, and the steering file is not
    looked for (the service gets its content separately)."""
    if not isinstance(d, Mapping):
        raise SettingsError([f"settings must be a mapping of key -> value, not {type(d).__name__}"])
    return _resolve(dict(d), Path(base_dir) if base_dir is not None else None, [])


def detect_format(text: str) -> str:
    """"legacy" if the text uses ``*** section ***`` headers or is not a YAML mapping, else "yaml"."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if stripped.startswith("***"):
                return "legacy"
            break
    try:
        data = yaml.load(text, Loader=_Loader)
    except _OverLimit:
        return "yaml"
    except yaml.YAMLError:
        return "legacy"
    return "yaml" if isinstance(data, dict) or data is None else "legacy"


# ------------------------------------------------------------------------------------ parsers
class _OverLimit(yaml.MarkedYAMLError):
    """A YAML document over MAX_YAML_DEPTH or MAX_YAML_VALUES."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2), not as a string, and that
    refuses a document nested deeper than MAX_YAML_DEPTH or holding, with every alias expanded,
    more than MAX_YAML_VALUES values: it counts each alias as the size of the node it repeats
    while composing, before anything is built, so an alias bomb stops after a few values."""

    def __init__(self, stream):
        super().__init__(stream)
        self._values = 0
        self._depth = 0
        self._expanded: dict[str, int] = {}

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in self._expanded:
                raise _OverLimit(problem="has an alias inside the node it refers to (a recursive alias)",
                                 problem_mark=event.start_mark)
            self._count(self._expanded[event.anchor], event)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _OverLimit(problem=f"nests deeper than {MAX_YAML_DEPTH} levels", problem_mark=event.start_mark)
        before = self._values
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, event)
        if event.anchor is not None:
            self._expanded[event.anchor] = self._values - before
        return node

    def _count(self, values: int, event: yaml.Event) -> None:
        self._values += values
        if self._values > MAX_YAML_VALUES:
            # the stubs give an event the C loader's Mark too; this pure-Python loader makes yaml.error.Mark
            raise _OverLimit(problem=f"holds more than {MAX_YAML_VALUES} values once its aliases are expanded",
                             problem_mark=event.start_mark)  # type: ignore[arg-type]


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings such as "1e-3" (``_Loader`` reads them as floats) and writes
    short lists on one line, long ones (file lists) one item per line."""

    def represent_list(self, data: Iterable[Any]) -> yaml.SequenceNode:
        flow = len(repr(data)) <= 80
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
        list("-+0123456789."),
    )
del _cls


def _parse_yaml(text: str) -> tuple[dict[str, Any], list[str]]:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        if isinstance(exc, _OverLimit):
            return {}, [f"the settings file is refused: it {exc.problem}{where}"]
        return {}, [f"the settings file is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [f"the settings file must be a mapping of key: value, not a {type(data).__name__}"]
    bad = [k for k in data if not isinstance(k, str)]
    return {str(k): v for k, v in data.items()}, [f"{shown(k)}: keys must be names (strings)" for k in bad]


def _parse_legacy(text: str) -> tuple[dict[str, Any], list[str]]:
    """The talk's format: ``*** section ***`` headers (ignored), ``key value`` lines, ``#`` comments.

    Values that look like Python literals (numbers, lists, True/False) are read as such, except for
    string-valued keys, which keep their text (so ``marlinVersion 1.10`` stays "1.10")."""
    raw: dict[str, Any] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("***"):
            continue
        parts = stripped.split(None, 1)
        key = parts[0]
        if len(parts) == 1:
            problems.append(f"{key}: no value given (line {number})")
            continue
        if key in raw:
            problems.append(f"{key}: given twice (line {number})")
            continue
        raw[key] = _legacy_value(key, parts[1].strip())
    return raw, problems


def _legacy_value(key: str, text: str) -> Any:
    spec = KEYS.get(key)
    if spec is not None and spec.kind in ("optstr", "lfn") and text in ("None", "null"):
        return None
    if spec is not None and spec.kind in _STRING_KINDS:
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


# ------------------------------------------------------------------------------------ resolution
class _Problems(list):
    def add(self, key: str, message: str) -> None:
        self.append(f"{key if len(key) <= 60 else shown(key)}: {message}")


def _resolve(raw: dict[str, Any], base: Path | None, parseProblems: list[str]) -> Settings:
    problems = _Problems(parseProblems)
    for key in raw:
        if key not in KEYS and key not in DERIVED_KEYS:
            problems.add(key, "unknown key" + did_you_mean(key, list(KEYS)))
    model, modelName, tarball = _model(raw.get("detectorModel", REQUIRED), problems)
    for key, expected in (("detectorModelName", modelName), ("geometryTarball", tarball)):
        if key in raw and model is not None and raw[key] != expected:
            problems.add(key, f"is derived from detectorModel ({expected!r}), not {shown(raw[key])}; leave it out")
    modelValues = model.settings_defaults() if model is not None else {}

    values: dict[str, Any] = {}
    for key, spec in KEYS.items():
        if key in ("detectorModel", "startingConstants"):
            continue
        given = key in raw
        if not given:
            if spec.default is REQUIRED:
                problems.add(key, "required")
                continue
            if spec.default is MODEL:
                if key in modelValues:
                    values[key] = modelValues[key]
                continue
            values[key] = spec.default
            continue
        value, message = _convert(key, spec, raw[key], base)
        if message:
            problems.add(key, message)
        else:
            values[key] = value

    _check_cos_ranges(values, problems)
    _check_layers(raw, values, model, problems)
    constants = _starting_constants(raw.get("startingConstants"), model, values, problems)
    sequence = _phase_sequence(values, problems)
    _check_samples(sequence, values, problems)
    if values.get("backend") == "dirac" and not values.get("marlinVersion"):
        problems.add("marlinVersion", "required for the dirac backend (the iLCSoft release the jobs set up)")
    if values.get("outputPath") and not values.get("outputSE"):
        problems.add("outputSE", "required with an outputPath (the storage element the results are uploaded to)")
    if base is not None and isinstance(values.get("steeringFile"), str):
        steering = _locate(base, values["steeringFile"])
        if not steering.is_file():
            problems.add("steeringFile", f"{shown(values['steeringFile'])} not found (looked for {steering})")
        else:
            values["steeringFile"] = str(steering)
    if problems:
        raise SettingsError(problems)
    assert modelName is not None, "a model that does not load is one of the problems"
    values.pop("phaseSequence", None)
    steeringConstants = values.pop("steeringConstants", None) or {}
    checked: dict[str, Any] = {key: tuple(v) if isinstance(v, list) else v for key, v in values.items()}
    return Settings(
        **checked,
        phaseSequence=tuple(sequence),
        detectorModel=raw["detectorModel"].strip(),
        detectorModelName=modelName,
        geometryTarball=tarball,
        startingConstants=MappingProxyType(constants),
        steeringConstants=MappingProxyType(steeringConstants),
    )


def _model(name: Any, problems: _Problems) -> tuple[DetectorModel | None, str | None, str | None]:
    if name is REQUIRED:
        problems.add("detectorModel", "required (a model name such as FCCee_o1_v04, or a geometry tarball)")
        return None, None, None
    if not isinstance(name, str) or not name.strip():
        problems.add("detectorModel", f"must be a model name or a geometry tarball, not {shown(name)}")
        return None, None, None
    try:
        model = load_detector_model(name)
    except DetectorModelError as exc:
        problems.add("detectorModel", str(exc))
        return None, None, None
    name = name.strip()
    return model, model.name, name if is_tarball(name) else None


def _convert(key: str, spec: Field, value: Any, base: Path | None) -> tuple[Any, str | None]:
    """The checked value of one key, or a message saying what is wrong with it."""
    if spec.kind in SCALAR_KINDS:
        return convert(spec, value)
    if spec.kind == "files":
        return _file_list(value, base)
    if spec.kind == "lfn":
        if value is None:
            return None, None
        try:
            return normal_lfn(value.strip() if isinstance(value, str) else value, "it"), None
        except PathError as exc:
            return None, f"{exc} (the results go to the grid; got {shown(value)})"
    if spec.kind == "phases":
        return _phase_list(value)
    return _string_map(value)


def _locate(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


def _file_list(value: Any, base: Path | None) -> tuple[Any, str | None]:
    """A list of sample files (paths or LFNs, opaque), a .txt file listing one per line, or one file."""
    if isinstance(value, str) and value.strip().lower().endswith(".txt"):
        if base is None:
            return None, (f"{shown(value)} names a list file, but list files are only read when loading a settings "
                          f"file; send the list of files itself")
        path = _locate(base, value.strip())
        try:
            lines = read_bounded(path, MAX_LIST_FILE_BYTES).splitlines()
        except OSError:
            return None, f"list file {shown(value)} not found (looked for {path})"
        except ValueError as exc:
            return None, f"list file {path} is refused: {exc}"
        files = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not files:
            return None, f"list file {path} lists no files"
        value = files
    elif isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return None, f"must be a list of files or the name of a .txt file listing them, got {shown(value)}"
    bad = [f for f in value if not isinstance(f, str) or not f.strip()]
    if bad:
        return None, f"file names must be non-empty strings, got {shown(bad[:3])}"
    files = []
    for number, name in enumerate(value, start=1):
        try:
            files.append(sample_file(name, f"file {number}"))
        except PathError as exc:
            return None, f"{exc}: {shown(name)}"
    twice = sorted(name for name, n in Counter(files).items() if n > 1)
    if twice:
        return None, f"lists {shown(twice[:3])} more than once (their events would count twice)"
    return files, None


#: At most this many steering constants, each name and value at most this long.
MAX_STEERING_CONSTANTS, MAX_CONSTANT_LENGTH = 100, 1000


def _string_map(value: Any) -> tuple[Any, str | None]:
    """Marlin constant overrides: names and values are text (numbers are written as given)."""
    if value is None:
        return {}, None
    if not isinstance(value, Mapping):
        return None, f"must be a mapping of constant name -> value, got {value!r}"
    if len(value) > MAX_STEERING_CONSTANTS:
        return None, f"sets {len(value)} constants, more than {MAX_STEERING_CONSTANTS}"
    converted = {}
    for name, item in value.items():
        if is_int(item) or isinstance(item, float):
            item = str(item)
        if not (isinstance(name, str) and name.strip() and isinstance(item, str)) or "${" in name:
            return None, f"{name!r}: constant names must be non-empty text and values text or numbers, got {item!r}"
        if len(name) > MAX_CONSTANT_LENGTH or len(item) > MAX_CONSTANT_LENGTH:
            return None, f"{name[:40]!r}: constant names and values must be at most {MAX_CONSTANT_LENGTH} characters"
        converted[name.strip()] = item
    return converted, None


def _phase_list(value: Any) -> tuple[Any, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, (list, tuple)) or not value:
        return None, f"must be a non-empty list of \"stage.phase\" strings such as \"1.0\", got {shown(value)}"
    keys, bad = [], []
    for item in value:
        try:
            key = PhaseKey.parse(repr(item) if isinstance(item, float) else item)
        except ValueError:
            key = None
        if key is None or key.phase not in PHASES or not 1 <= key.stage <= MAX_STAGE:
            bad.append(item)
        else:
            keys.append(str(key))
    if bad:
        known = ", ".join(f"{n} {phase.name}" for n, phase in PHASES.items())
        return None, f'unknown phases {shown(bad)}: use "stage.phase" with stage 1-{MAX_STAGE} and phase one of {known}'
    twice = sorted(key for key, n in Counter(keys).items() if n > 1)
    if twice:
        return None, f"names phases {shown(twice)} more than once"
    return keys, None


def _check_cos_ranges(values: dict[str, Any], problems: _Problems) -> None:
    for calo in ("ecal", "hcal"):
        barrel, endcap = values.get(f"{calo}BarrelCosThetaRange"), values.get(f"{calo}EndcapCosThetaRange")
        if barrel and endcap and barrel[1] > endcap[0]:
            problems.add(f"{calo}BarrelCosThetaRange",
                         f"{list(barrel)} overlaps {calo}EndcapCosThetaRange {list(endcap)}: a barrel window must end "
                         f"before the endcap window starts")


def _check_layers(raw: Mapping[str, Any], values: dict[str, Any], model: DetectorModel | None,
                  problems: _Problems) -> None:
    thin, thick = values.get("nEcalThinLayers"), values.get("nEcalThickLayers")
    if not (isinstance(thin, int) and isinstance(thick, int)):
        return
    userSet = "nEcalThinLayers" in raw or "nEcalThickLayers" in raw
    if model is not None and userSet and thin + thick != model.nEcalLayers:
        problems.add("nEcalThinLayers/nEcalThickLayers",
                     f"{thin} thin + {thick} thick = {thin + thick} layers, but detector model {model.name} "
                     f"has {model.nEcalLayers} ECAL layers")
    correction = values.get("ecalResponseCorrectionForThickLayers")
    if correction is None and "ecalResponseCorrectionForThickLayers" not in raw:
        if thick > 0:
            problems.add("ecalResponseCorrectionForThickLayers",
                         f"required with nEcalThickLayers = {thick} (the thick-layer constant is this "
                         f"factor times the thin one) and detector model {model.name if model else '?'} "
                         f"does not give one")
        else:
            values["ecalResponseCorrectionForThickLayers"] = 1.0


def _starting_constants(given: Any, model: DetectorModel | None, values: Mapping[str, Any],
                        problems: _Problems) -> dict[str, Any]:
    """The model's constants overridden per key by the user's; CalibrECAL as (thin, thick)."""
    constants = dict(model.startingConstants) if model is not None else {}
    if given is None:
        return constants
    if not isinstance(given, Mapping):
        problems.add("startingConstants", f"must be a mapping of Marlin parameter name -> value, got {shown(given)}")
        return constants
    ratio = values.get("ecalResponseCorrectionForThickLayers") or 1.0
    for name, value in given.items():
        where = f"startingConstants.{name}"
        if name == SOFT_COMP:
            problems.add(where, "is not a starting constant: it comes from your steering file and "
                                "disableSoftwareCompensation")
        elif name not in CONSTANTS:
            problems.add(where, "unknown constant" + did_you_mean(str(name), [c for c in CONSTANTS if c != SOFT_COMP]))
        elif name == "CalibrECAL":
            if is_number(value) and value > 0:
                constants[name] = (float(value), float(value) * ratio)
            elif (isinstance(value, (list, tuple)) and len(value) == 2
                  and all(is_number(x) and x > 0 for x in value)):
                constants[name] = (float(value[0]), float(value[1]))
            else:
                problems.add(
                    where, f"must be [thin, thick] positive numbers (or one number for both), got {shown(value)}"
                )
        elif is_number(value) and value > 0:
            constants[name] = float(value)
        else:
            problems.add(where, f"must be a positive number, got {shown(value)}")
    return constants


def _phase_sequence(values: Mapping[str, Any], problems: _Problems) -> list[str]:
    sequence = list(values.get("phaseSequence") or DEFAULT_PHASE_SEQUENCE)
    bounds = [values.get(k) for k in ("startStage", "startPhase", "stopStage", "stopPhase")]
    if not all(isinstance(b, int) for b in bounds):
        return sequence
    start, stop = (bounds[0], bounds[1]), (bounds[2], bounds[3])
    kept = [key for key in sequence if start <= PhaseKey.parse(key) <= stop]
    if not kept:
        problems.add("startStage/startPhase/stopStage/stopPhase",
                     f"from {start[0]}.{start[1]} to {stop[0]}.{stop[1]} leaves nothing of the phase sequence "
                     f"{sequence} to run")
    return kept


def _check_samples(sequence: list[str], values: Mapping[str, Any], problems: _Problems) -> None:
    for sample in SAMPLES:
        users = [k for k in sequence if sample in PHASES[PhaseKey.parse(k)[1]].samples]
        key = f"{sample}Files"
        if users and key in values and not values[key]:
            problems.add(key, f"required: phases {', '.join(users)} reconstruct the {sample} sample")


__all__ = [
    "DEFAULT_PHASE_SEQUENCE",
    "KEYS",
    "Settings",
    "SettingsError",
    "detect_format",
    "load_settings",
    "parse_settings",
    "settings_from_dict",
]
