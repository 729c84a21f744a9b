"""The user's reconstruction files and what the calibration makes of them.

A calibration carries the user's own files in their own layout (relative paths below the
folder of the top steering file, which is stored as ``steering.xml``): the steering file, the
files it includes, the Pandora settings its Pandora processor names (or ``pandoraSettingsFile``),
the likelihood files those settings read, and the photon-training settings when the sequence
trains. This module says which files those are (``collect``), refuses what cannot work before
anything runs (``check``: the same for ``--dry-run``, the submission and the service), writes the
files of one worker run (``run_files``) and the ready-to-run result set (``result_files``).
Everything is pure: files in, files out.
"""
from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.carriers import (
    PANDORA_TYPE,
    PFO_ANALYSIS_TYPE,
    SOFT_COMP,
    assignments,
    locate,
)
from ILCDIRAC.CalibrationSystem.Utilities.detectors import load_detector_model
from ILCDIRAC.CalibrationSystem.Utilities.pandora_settings import (
    PandoraSettingsError,
    histogram_files,
    makes_pdf_histograms,
    with_histogram_file,
)
from ILCDIRAC.CalibrationSystem.Utilities.paths import PathError, relative_path
from ILCDIRAC.CalibrationSystem.Utilities.pfoanalysis import CALIBRATION_HISTOGRAMS
from ILCDIRAC.CalibrationSystem.Utilities.phases import PHASES
from ILCDIRAC.CalibrationSystem.Utilities.steering import (
    STEERING_FILE,
    FileSource,
    Steering,
    SteeringError,
    read_steering,
)
from ILCDIRAC.CalibrationSystem.Utilities.steering_editor import SteeringEditor

#: The phase whose reconstruction runs the photon-training Pandora settings.
TRAINING_PHASE = next(number for number, phase in PHASES.items() if phase.pandoraSettings == "training")
_MUON_BINS, _, _MUON_HIGH = CALIBRATION_HISTOGRAMS["MuonDirectionCorrectedCaloHitEnergy"]
#: What a PfoAnalysis must be told so that the estimators find their branches and histograms.
PFO_ANALYSIS_FORCED = {
    "CollectCalibrationDetails": 1,
    "NBinsMuonCaloHitEnergyHist": _MUON_BINS,
    "XUpperValueMuonCaloHitEnergyHist": _MUON_HIGH,
}
#: PfoAnalysis input collection -> the DDMarlinPandora parameter (and its default) it follows.
_PFO_FROM_PANDORA = {
    "PfoCollection": ("PFOCollectionName", "PandoraPFANewPFOs"),
    "MCParticleCollection": ("MCParticleCollections", "MCParticle"),
    "ECalCollections": ("ECalCaloHitCollections", None),
    "HCalCollections": ("HCalCaloHitCollections", None),
    "MuonCollections": ("MuonCaloHitCollections", None),
    "LCalCollections": ("LCalCaloHitCollections", None),
    "LHCalCollections": ("LHCalCaloHitCollections", None),
}


@dataclass(frozen=True)
class Plan:
    """What the calibration uses in a steering file (found once, used for every run)."""

    steering: Steering
    pandora: str
    pfoAnalysis: str
    pfoAction: str  # "use" (it runs), "run" (defined: added to <execute>) or "add" (a new one, defined and run)
    pandoraSettings: str
    trainingSettings: str | None


def trains(settings: Mapping[str, Any]) -> bool:
    return any(int(key.split(".")[1]) == TRAINING_PHASE for key in settings["phaseSequence"])


def retrains_for_later_phases(settings: Mapping[str, Any]) -> bool:
    """Whether phases run after photon training (they then use the trained likelihood)."""
    keys = [int(key.split(".")[1]) for key in settings["phaseSequence"]]
    return TRAINING_PHASE in keys and keys.index(TRAINING_PHASE) < len(keys) - 1


# ------------------------------------------------------------------------------------ planning
def plan(files: FileSource, settings: Mapping[str, Any], top: str = STEERING_FILE) -> Plan:
    """Read the steering file and find everything the calibration needs in it; SteeringError
    says what is missing or ambiguous."""
    steering = read_steering(files, top, settings.get("steeringConstants") or {})
    pandora = locate(steering, settings["DDPandoraPFANewProcessorName"], PANDORA_TYPE,
                     "; name it with the setting DDPandoraPFANewProcessorName")
    constants = dict(settings["startingConstants"])
    assignments(steering, load_detector_model(settings["detectorModelName"]).constantCarriers, constants, settings)
    pfo, action = _pfo_analysis(steering, settings, pandora)
    chosen = settings.get("pandoraSettingsFile")
    if chosen is None:
        chosen = steering.processors[pandora].value("PandoraSettingsXmlFile")
        if not chosen:
            raise SteeringError(
                f"processor {pandora!r} sets no PandoraSettingsXmlFile (and pandoraSettingsFile is not set)"
            )
        where = f"PandoraSettingsXmlFile of {pandora}"
    else:
        where = "pandoraSettingsFile"
    pandoraSettings = _path(chosen, where)
    training = _training_settings(files, settings, pandoraSettings) if trains(settings) else None
    return Plan(steering, pandora, pfo, action, pandoraSettings, training)


#: The photon-training settings' usual name, looked for where the upstream configurations keep it.
TRAINING_SETTINGS = "PandoraSettingsPhotonTraining.xml"


def _training_settings(files: FileSource, settings: Mapping[str, Any], pandoraSettings: str) -> str:
    """``pandoraSettingsTrainingFile``, or PandoraSettingsPhotonTraining.xml where CLDConfig and
    CLICPerformance (CalibrationPandoraSettings/), ILDConfig (beside the Pandora settings) or a
    flat folder keep it."""
    if settings.get("pandoraSettingsTrainingFile"):
        return _path(settings["pandoraSettingsTrainingFile"], "pandoraSettingsTrainingFile")
    candidates = list(dict.fromkeys([f"CalibrationPandoraSettings/{TRAINING_SETTINGS}",
                                     posixpath.join(posixpath.dirname(pandoraSettings), TRAINING_SETTINGS),
                                     TRAINING_SETTINGS]))
    found = next((name for name in candidates if files.get(name) is not None), None)
    if found is None:
        raise SteeringError(f"photon training needs Pandora settings that make PDF histograms: none found as "
                            f"{', '.join(candidates)}; name them with the setting pandoraSettingsTrainingFile")
    return found


def _path(name: str, where: str) -> str:
    """A file Pandora opens relative to the directory Marlin runs in: the top file's folder."""
    if name.startswith("/"):
        raise SteeringError(f"{where} {name!r} is an absolute path; the calibration ships only files below the "
                            f"steering file's folder: copy it there and name it relatively")
    try:
        return relative_path(name)
    except PathError as exc:
        raise SteeringError(f"{where}: {exc}") from None


def _pfo_analysis(steering: Steering, settings: Mapping[str, Any], pandora: str) -> tuple[str, str]:
    """The PfoAnalysis the calibration reads: the one that runs after Pandora, else one defined
    but not run (then run after Pandora), else a new one added after Pandora."""
    name = settings["PfoAnalysisName"]
    running = steering.running(PFO_ANALYSIS_TYPE)
    if name in running:
        chosen = name
    elif len(running) == 1:
        chosen = running[0]
    elif running:
        raise SteeringError(f"{len(running)} PfoAnalysis processors are run ({', '.join(running)}): it is ambiguous "
                            f"which one the calibration reads; name it with the setting PfoAnalysisName")
    else:
        defined = steering.processors.get(name)
        if defined is not None and defined.type == PFO_ANALYSIS_TYPE and steering.executed(name) is None:
            return name, "run"
        while name in steering.processors:
            name += "Calibration"
        return name, "add"
    order = [e.name for e in steering.execute]
    if order.index(chosen) < order.index(pandora):
        raise SteeringError(f"PfoAnalysis {chosen!r} runs before the Pandora processor {pandora!r}: it would not see "
                            f"its particle flow objects")
    return chosen, "use"


# ------------------------------------------------------------------------------------ files
def collect(files: FileSource, settings: Mapping[str, Any], top: str = STEERING_FILE) -> dict[str, str]:
    """{relative path: text} of every file the calibration carries, the top file as ``steering.xml``."""
    found = plan(files, settings, top)
    out = {STEERING_FILE: _read(files, top, "the steering file")}
    for name in found.steering.includes:
        if name == STEERING_FILE:
            raise SteeringError(f"the included file {name} has the name the calibration gives the top steering file; "
                                f"rename it")
        out[name] = _read(files, name, "the included steering file")
    out[found.pandoraSettings] = _read(files, found.pandoraSettings, f"the Pandora settings ({_why(found, settings)})")
    for likelihood in _likelihood_files(out[found.pandoraSettings], found.pandoraSettings):
        out[likelihood] = _read(files, likelihood, f"the photon likelihood file of {found.pandoraSettings}")
    if found.trainingSettings is not None:
        text = _read(
            files, found.trainingSettings, "the photon-training Pandora settings (pandoraSettingsTrainingFile)"
        )
        _check_training(text, found.trainingSettings)
        out[found.trainingSettings] = text
    if retrains_for_later_phases(settings) and not _likelihood_files(out[found.pandoraSettings], found.pandoraSettings):
        raise SteeringError(f"{found.pandoraSettings} has no <HistogramFile>: the phases after photon training could "
                            f"not use the trained likelihood")
    return out


def check(files: FileSource, settings: Mapping[str, Any]) -> list[str]:
    """Everything that would make the calibration fail on these files, as messages (empty: fine).
    The service, the submission and ``--dry-run`` all run this."""
    try:
        collect(files, settings)
    except SteeringError as exc:
        return [str(exc)]
    return []


def _why(found: Plan, settings: Mapping[str, Any]) -> str:
    if settings.get("pandoraSettingsFile"):
        return "pandoraSettingsFile"
    return f"PandoraSettingsXmlFile of {found.pandora}"


def _read(files: FileSource, name: str, what: str) -> str:
    text = files.get(name)
    if text is None:
        raise SteeringError(f"{what} {name} not found")
    return text


def _likelihood_files(text: str, name: str) -> list[str]:
    try:
        return [_path(f, f"<HistogramFile> of {name}") for f in histogram_files(text, name)]
    except PandoraSettingsError as exc:
        raise SteeringError(str(exc)) from None


def _check_training(text: str, name: str) -> None:
    try:
        trained = makes_pdf_histograms(text, name) and histogram_files(text, name)
    except PandoraSettingsError as exc:
        raise SteeringError(str(exc)) from None
    if not trained:
        raise SteeringError(f"{name} (pandoraSettingsTrainingFile) trains no photon likelihood: it needs a "
                            f"PhotonReconstruction with ShouldMakePdfHistograms true and a <HistogramFile>")


def trained_likelihood_path(files: Mapping[str, str], settings: Mapping[str, Any], calibrationID: int) -> str:
    """Where the retrained photon likelihood goes in the user's layout: beside the likelihood the
    user's settings read, named after it and the calibration."""
    found = plan(files, settings)
    current = _likelihood_files(files[found.pandoraSettings], found.pandoraSettings)
    folder, stem = (posixpath.dirname(current[0]), posixpath.splitext(posixpath.basename(current[0]))[0]) if current \
        else ("", "PandoraLikelihoodData")
    name = posixpath.join(folder, f"{stem}_calibration{calibrationID}.xml")
    while name in files:
        name = name.removesuffix(".xml") + "_new.xml"
    return name


# ------------------------------------------------------------------------------------ one run
@dataclass(frozen=True)
class Run:
    """What one worker run sets besides the constants."""

    inputFiles: tuple[str, ...]
    maxRecordNumber: int
    skipNEvents: int
    rootFile: str
    #: Photon training: the file the training settings' HistogramFile is pointed at.
    trainingOutput: str | None = None
    #: After training: the trained likelihood (path in the layout, text) the user's settings read.
    likelihood: tuple[str, str] | None = None


def run_files(
    files: Mapping[str, str], settings: Mapping[str, Any], constants: Mapping[str, Any], run: Run
) -> dict[str, str]:
    """Every file of one reconstruction run, by relative path (the top file as ``steering.xml``):
    the user's files with this step's constants, this worker's events, the PfoAnalysis output and
    the Pandora settings of the run."""
    found = plan(files, settings)
    editor = _constants_editor(found, settings, constants)
    editor.set_globals({"LCIOInputFiles": list(run.inputFiles), "MaxRecordNumber": run.maxRecordNumber,
                        "SkipNEvents": run.skipNEvents})
    pandora: dict[str, Any] = {}
    if run.trainingOutput is not None:
        pandora["PandoraSettingsXmlFile"] = found.trainingSettings
    elif settings.get("pandoraSettingsFile"):
        pandora["PandoraSettingsXmlFile"] = found.pandoraSettings
    if settings["disableSoftwareCompensation"]:
        pandora[SOFT_COMP] = 0
    if pandora:
        editor.set_parameters(found.pandora, pandora)
    forced = {**PFO_ANALYSIS_FORCED, "RootFile": run.rootFile}
    if found.pfoAction == "add":
        editor.add_processor(found.pfoAnalysis, PFO_ANALYSIS_TYPE, {**_pfo_collections(found, settings), **forced},
                             after=found.pandora)
    else:
        editor.set_parameters(found.pfoAnalysis, forced)
        if found.pfoAction == "run":
            editor.run_after(found.pfoAnalysis, found.pandora)
    out = {**files, **editor.texts()}
    try:
        if run.trainingOutput is not None:
            training = found.trainingSettings
            if training is None:
                raise SteeringError("photon training needs Pandora settings that make PDF histograms: none found")
            out[training] = with_histogram_file(files[training], run.trainingOutput, training)
        elif run.likelihood is not None:
            path, text = run.likelihood
            out[found.pandoraSettings] = with_histogram_file(files[found.pandoraSettings], path, found.pandoraSettings)
            out[path] = text
    except PandoraSettingsError as exc:
        raise SteeringError(str(exc)) from None
    return out


def _constants_editor(found: Plan, settings: Mapping[str, Any], constants: Mapping[str, Any]) -> SteeringEditor:
    editor = SteeringEditor(found.steering)
    editor.set_constants(settings.get("steeringConstants") or {})
    carriers = load_detector_model(settings["detectorModelName"]).constantCarriers
    for assignment in assignments(found.steering, carriers, constants, settings):
        editor.set_parameters(assignment.processor, assignment.values, assignment.vectors)
    return editor


def _pfo_collections(found: Plan, settings: Mapping[str, Any]) -> dict[str, str]:
    """The input collections of an added PfoAnalysis: the calorimeter hits and particles the
    Pandora processor uses, and the detector model's simulated-hit collections."""
    pandora = found.steering.processors[found.pandora]
    values = {}
    for parameter, (source, default) in _PFO_FROM_PANDORA.items():
        tokens = pandora.tokens(source)
        if tokens:
            values[parameter] = (
                tokens[0] if parameter in ("PfoCollection", "MCParticleCollection") else " ".join(tokens)
            )
        elif default is not None:
            values[parameter] = default
    values.update(load_detector_model(settings["detectorModelName"]).pfoAnalysisCollections)
    return values


# ------------------------------------------------------------------------------------ results
def result_files(
    files: Mapping[str, str],
    settings: Mapping[str, Any],
    constants: Mapping[str, Any],
    likelihood: tuple[str, str] | None = None,
) -> dict[str, str]:
    """The ready-to-run set in the user's layout: the top steering file (``steering.xml``) and
    its includes with the calibrated constants (and ``steeringConstants``), the Pandora settings
    it runs with and the likelihood those read: the retrained one, ``likelihood`` = (path, text),
    when the calibration trained one. Nothing else of the user's files changes."""
    found = plan(files, settings)
    editor = _constants_editor(found, settings, constants)
    if settings.get("pandoraSettingsFile"):
        editor.set_parameters(found.pandora, {"PandoraSettingsXmlFile": found.pandoraSettings})
    out = editor.texts()
    settingsText = files[found.pandoraSettings]
    if likelihood is not None:
        path, text = likelihood
        try:
            settingsText = with_histogram_file(settingsText, path, found.pandoraSettings)
        except PandoraSettingsError as exc:
            raise SteeringError(str(exc)) from None
        out[path] = text
    else:
        out.update({name: files[name] for name in _likelihood_files(settingsText, found.pandoraSettings)})
    out[found.pandoraSettings] = settingsText
    return out


__all__ = [
    "PFO_ANALYSIS_FORCED",
    "Plan",
    "Run",
    "check",
    "collect",
    "plan",
    "result_files",
    "retrains_for_later_phases",
    "run_files",
    "trained_likelihood_path",
    "trains",
]
