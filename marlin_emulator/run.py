"""One emulated Marlin run: steering file in, PfoAnalysis ROOT file (and training file) out.

Paths in the steering file (input files, Pandora settings, the likelihood HistogramFile, the
RootFile) are relative to the working directory, as for Marlin and Pandora. The input files
are read as one stream: ``SkipNEvents`` skips events across the concatenated files and
``MaxRecordNumber`` (> 0) limits how many events are processed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.likelihood import LikelihoodDataError, read_likelihood, write_likelihood
from marlin_emulator.pandora import (
    UNTRAINED,
    PandoraSettingsError,
    PhotonIdQuality,
    PhotonTraining,
    photon_id_quality,
    read_pandora_settings,
)
from marlin_emulator.reco import DEFAULT_PFO_ANALYSIS, RecoConfig, reconstruct, training_candidates
from marlin_emulator.rootio import EventTable, write_pfoanalysis
from marlin_emulator.samples import SampleFile, SampleFileError, read_sample_file
from marlin_emulator.sim import simulate
from marlin_emulator.steering_input import SteeringInput, SteeringInputError, read_steering
from marlin_emulator.truth import TruthError

#: The errors that mean "this run cannot be done" (bad steering, input, settings or likelihood).
RUN_ERRORS = (SteeringInputError, SampleFileError, PandoraSettingsError, LikelihoodDataError, TruthError, OSError)


@dataclass(frozen=True)
class RunReport:
    events: int
    files: int
    rootFile: Path | None
    trainingFile: Path | None
    photonId: PhotonIdQuality | None  # of the first input file's detector; None when training
    seconds: float


def event_slices(samples: list[SampleFile], skip: int, maximum: int) -> list[np.ndarray]:
    """Event numbers to process in each file, for SkipNEvents/MaxRecordNumber over the whole stream."""
    sizes = np.array([s.nEvents for s in samples], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    first = max(skip, 0)
    last = int(sizes.sum()) if maximum <= 0 else min(int(sizes.sum()), first + maximum)
    return [
        np.arange(max(first - start, 0), max(min(last - start, size), 0))
        for start, size in zip(starts, sizes, strict=True)
    ]


def run(steeringFile: str | Path, workDir: str | Path | None = None) -> RunReport:
    """Run the reconstruction a steering file describes; RUN_ERRORS name what is wrong."""
    started = time.process_time()
    workDir = Path.cwd() if workDir is None else Path(workDir)
    config = read_steering(workDir / steeringFile)
    if not config.inputFiles:
        raise SteeringInputError(f"steering file {steeringFile}: LCIOInputFiles is empty")
    samples = [read_sample_file(workDir / name) for name in config.inputFiles]
    settingsPath = workDir / config.pandora.settingsFile
    photon = read_pandora_settings(settingsPath)
    training = PhotonTraining(photon) if photon.training else None
    likelihood = None
    histogramFile = photon.histogramFile
    if photon.present and not photon.training:
        assert histogramFile is not None, "present Pandora photon settings always name a HistogramFile"
        likelihoodPath = workDir / histogramFile
        try:
            text = likelihoodPath.read_text()
        except FileNotFoundError:
            raise PandoraSettingsError(
                f"photon likelihood file {likelihoodPath} (HistogramFile of {settingsPath}) does not exist"
            ) from None
        try:
            likelihood = read_likelihood(text)
        except LikelihoodDataError as exc:
            raise LikelihoodDataError(f"photon likelihood file {likelihoodPath}: {exc}") from None
    qualities: dict = {}

    def quality(sample: SampleFile) -> PhotonIdQuality:
        if likelihood is None:
            return UNTRAINED
        key = sample.truth.photonId
        if key not in qualities:
            qualities[key] = photon_id_quality(likelihood, key)
        return qualities[key]

    tables: list[EventTable] = []
    processed = 0
    slices = event_slices(samples, config.skipNEvents, config.maxRecordNumber)
    for sample, events in zip(samples, slices, strict=True):
        if not events.size and tables:
            continue
        bank = simulate(sample, events)
        tables.append(reconstruct(bank, _reco_config(config, quality(sample))))
        processed += events.size
        if training is not None:
            energy, signal, owners, index = training_candidates(bank)
            training.fill(energy, signal, owners, index, bank.random, sample.truth.photonId)
    rootFile = None
    if config.pfoAnalysis is not None:
        rootFile = workDir / config.pfoAnalysis.rootFile
        write_pfoanalysis(rootFile, EventTable.concatenate(tables), config.pfoAnalysis.collectCalibrationDetails)
    trainingFile = None
    if training is not None:
        assert histogramFile is not None, "training Pandora photon settings always name a HistogramFile"
        trainingFile = workDir / histogramFile
        trainingFile.write_text(write_likelihood(training.likelihood()))
    return RunReport(
        events=processed,
        files=len(samples),
        rootFile=rootFile,
        trainingFile=trainingFile,
        photonId=None if training is not None else quality(samples[0]),
        seconds=time.process_time() - started,
    )


def _reco_config(config: SteeringInput, photonId: PhotonIdQuality) -> RecoConfig:
    return RecoConfig(
        digi=config.digi,
        pandora=config.pandora,
        pfoAnalysis=config.pfoAnalysis or DEFAULT_PFO_ANALYSIS,
        muonDigitisation=config.muonDigitisation,
        photonId=photonId,
    )


__all__ = ["RUN_ERRORS", "RunReport", "event_slices", "run"]
