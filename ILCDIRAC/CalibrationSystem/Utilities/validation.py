"""Whether a calibration's settings and input files make a calibration the service can run, and
who is asking: the check ``createCalibration`` makes and ``--dry-run`` repeats on the user's
machine before anything is sent.

Pure (no DIRAC, no database), so that the user's commands run the service's own check without
loading the service's logic; ``CalibrationError`` is the one error the service answers callers
with, its message unchanged.
"""
from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities import reconstruction
from ILCDIRAC.CalibrationSystem.Utilities.limits import ServiceLimits, shown
from ILCDIRAC.CalibrationSystem.Utilities.paths import LFN_PREFIX, lfn_within, path_problem, relative_path
from ILCDIRAC.CalibrationSystem.Utilities.settings import Settings, SettingsError, settings_from_dict
from ILCDIRAC.CalibrationSystem.Utilities.slicing import slice_problems
from ILCDIRAC.CalibrationSystem.Utilities.steering import STEERING_FILE
from ILCDIRAC.CalibrationSystem.Utilities.stored_files import MAX_FILE_NAME, RESULT_NAMES, RESULT_PREFIX, is_input_file

NO_LIMITS = ServiceLimits()


class CalibrationError(Exception):
    """A request that cannot be honoured; the message goes back to the caller unchanged."""


@dataclass(frozen=True)
class Caller:
    """Who is calling, as DIRAC authenticated them, and what the service's configuration allows them.

    ``isAdmin``: may see and kill any calibration (never feed one). ``userHome``: the caller's grid
    user folder (an LFN), below which an outputPath must lie; None when their group has no VO.
    ``localBackend``: may create ``backend: local`` calibrations, whose lost workers the agent
    restarts on its own machine under its own account (single-user installations only)."""

    dn: str
    username: str
    group: str
    properties: frozenset[str]
    isAdmin: bool = False
    userHome: str | None = None
    localBackend: bool = False


def new_error_id() -> str:
    """A short random ID that ties an internal error's answer to its log entry."""
    return uuid.uuid4().hex[:12]



def _check_policy(caller: Caller, settings: Mapping[str, Any], limits: ServiceLimits) -> None:
    """What this service allows this caller, beyond what makes settings valid anywhere."""
    if settings["numberOfJobs"] > limits.maxWorkers:
        raise CalibrationError(f"numberOfJobs = {settings['numberOfJobs']} is more than this service allows "
                               f"({limits.name('maxWorkers')})")
    if settings["backend"] == "local" and not caller.localBackend:
        raise CalibrationError("backend local is not enabled for you on this service (LocalBackendUsers): its "
                               "workers would run on the service's own machine; use backend dirac")
    outputPath = settings.get("outputPath")
    if outputPath:
        if caller.userHome is None:
            raise CalibrationError(f"outputPath: your group {caller.group} has no VO, so you have no grid user "
                                   f"folder to put results in; leave outputPath out")
        if not lfn_within(outputPath, caller.userHome):
            raise CalibrationError(f"outputPath {shown(outputPath)} is not in your grid user folder "
                                   f"{caller.userHome}: results are only delivered there")
    tarball = settings.get("geometryTarball")
    if settings["backend"] == "dirac" and tarball and not tarball.startswith(LFN_PREFIX):
        raise CalibrationError(f"detectorModel {shown(tarball)}: a grid calibration's geometry tarball must be "
                               f"an LFN (LFN:/...): resubmitted jobs get it from the grid, never from a machine's disk")


def validate_calibration(
    settingsDict: Any, inputFiles: Any, limits: ServiceLimits = NO_LIMITS, caller: Caller | None = None
) -> tuple[Settings, dict[str, Any], dict[str, str]]:
    """(settings, resolved settings, input files) if they make a calibration the service can
    run, and (with a ``caller``) one this caller may create; else CalibrationError with the
    problems. ``--dry-run`` runs this same check, without a caller."""
    try:
        settings = settings_from_dict(settingsDict)
    except SettingsError as exc:
        raise CalibrationError("invalid settings: " + "; ".join(exc.problems)) from None
    resolved = settings.to_dict()
    if caller is not None:
        _check_policy(caller, resolved, limits)
    files = check_input_files(inputFiles, resolved, limits)
    problems = []
    for sample in settings.samples():
        problems += slice_problems(
            resolved[f"{sample}Files"], resolved[f"{sample}EventsPerFile"], resolved["numberOfJobs"], sample
        )
    if problems:
        raise CalibrationError("cannot create calibration: " + "; ".join(problems[:10]))
    return settings, resolved, files


def results_needed(fraction: float, numberOfWorkers: int) -> int:
    """ceil(fraction * workers), immune to 0.9 * 100 = 90.00000000000001."""
    return max(1, math.ceil(round(fraction * numberOfWorkers, 9)))


def check_input_files(
    inputFiles: Any, settings: Mapping[str, Any], limits: ServiceLimits = NO_LIMITS
) -> dict[str, str]:
    """The user's reconstruction files if the calibration can run with them (names, number and
    sizes within the limits, then the steering, included and Pandora files checked as Marlin and
    Pandora will read them); otherwise CalibrationError with the problems."""
    if not isinstance(inputFiles, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in inputFiles.items()
    ):
        raise CalibrationError("input files must be a dict of file name -> text content")
    if STEERING_FILE not in inputFiles:
        raise CalibrationError(f"input files must contain the Marlin steering file as {STEERING_FILE!r}")
    _check_input_files(inputFiles, limits)
    problems = []
    for name in inputFiles:
        problem = path_problem(name)
        if problem is None and relative_path(name) != name:
            problem = f"file name {shown(name)} is not normalised (write it as {shown(relative_path(name))})"
        if problem is None and not is_input_file(name):
            problem = (f"file name {shown(name)} is kept for the calibration's own files (names starting with "
                       f"{RESULT_PREFIX!r} or 'step<N>_', and {', '.join(RESULT_NAMES)})")
        if problem:
            problems.append(problem)
    if problems:
        raise CalibrationError("input files: " + "; ".join(problems[:10]))
    problems = [f"steering file: {problem}" for problem in reconstruction.check(inputFiles, settings)]
    if problems:
        raise CalibrationError("cannot create calibration: " + "; ".join(problems))
    return dict(inputFiles)


def _check_input_files(files: Mapping[str, str], limits: ServiceLimits) -> None:
    if len(files) > limits.maxInputFiles:
        raise CalibrationError(f"{len(files)} input files are more than {limits.name('maxInputFiles')}")
    for name, text in files.items():
        if len(name.encode()) > MAX_FILE_NAME:
            raise CalibrationError(f"input file name {shown(name)} is longer than {MAX_FILE_NAME} bytes")
        size = len(text.encode(errors="surrogatepass"))
        if size > limits.maxFileSize:
            raise CalibrationError(f"input file {shown(name)} has {size} bytes, more than {limits.name('maxFileSize')}")
