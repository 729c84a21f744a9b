"""What every calibration phase provides, and the context it reads its numbers from.

A phase is the physics of one calibration step type: which samples the workers reconstruct,
which branches and histograms they reduce to a ``Summary``, which estimator turns the merged
summary into measurements, which update rule turns measurements into new constants, and when
the phase counts as converged. Everything here is pure: no DIRAC, no database, no files.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary, SummarySpec

#: Kinetic energy of a K0L is its total energy minus this mass (GeV).
K0L_MASS = 0.497672

Constants = dict[str, Any]
#: Reconstructed outputs of one sample: branch name -> per-event array, histogram name -> (counts, edges).
SampleOutput = Mapping[str, Any]


@dataclass(frozen=True)
class PhaseContext:
    """The numbers from the settings (and detector model) that the phases' physics depends on.

    No field has a default: the resolved settings always carry every key (their defaults and the
    detector model's values live in ``settings_schema`` and the model files, nowhere else)."""

    energies: Mapping[str, float]
    digitisationAccuracy: float
    pandoraPFAAccuracy: float
    ecalBarrelCosThetaRange: tuple[float, float]
    ecalEndcapCosThetaRange: tuple[float, float]
    hcalBarrelCosThetaRange: tuple[float, float]
    hcalEndcapCosThetaRange: tuple[float, float]
    nHcalLayers: int
    nEcalThinLayers: int
    nEcalThickLayers: int
    ecalResponseCorrectionForThickLayers: float
    #: (absorber x scintillator) endcap-over-ring ratio of the HCAL layers (phase x.2's ring formula).
    hcalThicknessRatio: float

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> PhaseContext:
        """Build from a resolved settings dict (``Settings.to_dict()``)."""
        return cls(
            energies={sample: float(settings[f"{sample}Energy"]) for sample in ("gamma", "kaon", "muon", "zuds")},
            digitisationAccuracy=float(settings["digitisationAccuracy"]),
            pandoraPFAAccuracy=float(settings["pandoraPFAAccuracy"]),
            ecalBarrelCosThetaRange=tuple(settings["ecalBarrelCosThetaRange"]),
            ecalEndcapCosThetaRange=tuple(settings["ecalEndcapCosThetaRange"]),
            hcalBarrelCosThetaRange=tuple(settings["hcalBarrelCosThetaRange"]),
            hcalEndcapCosThetaRange=tuple(settings["hcalEndcapCosThetaRange"]),
            nHcalLayers=int(settings["nHcalLayers"]),
            nEcalThinLayers=int(settings["nEcalThinLayers"]),
            nEcalThickLayers=int(settings["nEcalThickLayers"]),
            ecalResponseCorrectionForThickLayers=float(settings["ecalResponseCorrectionForThickLayers"]),
            hcalThicknessRatio=(settings["hcalAbsorberThicknessEndcap"] * settings["hcalScintillatorThicknessRing"])
            / (settings["hcalAbsorberThicknessRing"] * settings["hcalScintillatorThicknessEndcap"]),
        )


@dataclass(frozen=True)
class Measurement:
    """What the estimator found in one step: named values with statistical errors, and whether
    the fit could be trusted at all (a phase that cannot measure fails the calibration)."""

    values: Mapping[str, float]
    errors: Mapping[str, float] = field(default_factory=dict)
    ok: bool = True
    reason: str = ""
    #: Files the phase produced for later steps (name -> text), e.g. a merged likelihood.
    artifacts: Mapping[str, str] = field(default_factory=dict)
    #: The offline-replay solution (``Phase.solve``), when the phase has one.
    solution: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"values": dict(self.values), "errors": dict(self.errors), "ok": self.ok, "reason": self.reason,
                "artifacts": sorted(self.artifacts), "solution": dict(self.solution) if self.solution else None}


class Phase:
    """Base class; each phase module defines one subclass and reads top to bottom."""

    number: int
    name: str
    #: The samples the workers reconstruct for this phase ("gamma", "kaon", "muon", "zuds").
    samples: tuple[str, ...]
    #: Tree branches the worker reads per sample ("x[0]" means the leading element of a vector branch).
    branches: Mapping[str, tuple[str, ...]] = {}
    #: ROOT histograms the worker reads per sample (already filled by PfoAnalysis).
    rootHistograms: Mapping[str, tuple[str, ...]] = {}
    #: Other files the reconstruction leaves in the work directory, read as text per sample.
    outputFiles: Mapping[str, tuple[str, ...]] = {}
    #: Which Pandora settings the reconstruction runs with: the user's default or photon training.
    pandoraSettings: str = "default"
    #: Constants this phase fits (the others pass through unchanged).
    fits: tuple[str, ...] = ()
    #: Single-pass phases advance after one step whatever they measure.
    iterative: bool = True
    #: The observables scale exactly with the fitted constants, so one ratio update lands on target.
    proportional: bool = False
    #: Phase numbers whose constants change this phase's observables (for running phases together).
    dependsOn: tuple[int, ...] = ()
    #: ``solve`` replays the estimator on the step's events to its fixed point (offline replay).
    replays: bool = False
    #: The setting holding the relative accuracy this phase is asked for.
    accuracySetting: str = "digitisationAccuracy"

    def spec(self, ctx: PhaseContext) -> SummarySpec:
        raise NotImplementedError

    def reduce(self, outputs: Mapping[str, SampleOutput], ctx: PhaseContext) -> Summary:
        """Worker side: per-sample reconstruction outputs -> this phase's summary."""
        raise NotImplementedError

    def measure(self, merged: Summary, ctx: PhaseContext) -> Measurement:
        """Service side: merged summary -> estimator outputs."""
        raise NotImplementedError

    def update(self, constants: Constants, measurement: Measurement, ctx: PhaseContext) -> Constants:
        """The update rule: new values of the constants this phase fits."""
        raise NotImplementedError

    def targets(self, ctx: PhaseContext) -> dict[str, float]:
        """What an iterative phase's measured values should be: value name -> target (GeV)."""
        return {}

    def tolerance(self, ctx: PhaseContext) -> float:
        """How far (GeV) a measured value may be from its target for the phase to advance."""
        return 0.0

    def converged(self, measurement: Measurement, ctx: PhaseContext) -> bool:
        """The original advance criterion, on the values measured with the step's constants."""
        if not self.iterative:
            return True
        tolerance = self.tolerance(ctx)
        return all(abs(measurement.values[name] - target) < tolerance for name, target in self.targets(ctx).items())

    def within_errors(self, measurement: Measurement, ctx: PhaseContext, sigmas: float = 2.0) -> bool:
        """Every measured value is within the tolerance or within ``sigmas`` statistical errors of
        its target: the estimate cannot tell the constants from good enough ones, so changing them
        would only follow the noise."""
        targets, tolerance = self.targets(ctx), self.tolerance(ctx)
        return bool(targets) and all(
            abs(measurement.values[name] - target) <= max(tolerance, sigmas * measurement.errors.get(name, 0.0))
            for name, target in targets.items()
        )

    def solve(self, constants: Constants, merged: Summary, ctx: PhaseContext,
              start: Constants | None = None) -> Constants | None:
        """Offline replay: the constants at which the estimator would find the target on these
        same events, when the phase can predict its observables for other constants (else None).
        ``start``: constants near the answer, where the search may begin."""
        return None

    def fixed_point(self, constants: Constants, merged: Summary, ctx: PhaseContext,
                    start: Constants | None = None) -> Constants | None:
        """What this step's events say the constants should be: the estimator's fixed point on
        them, by offline replay where the phase has one, else the update rule applied to the
        estimate (exact for proportional phases; the result itself for single-pass ones). None
        if the estimator cannot measure. Its spread over resampled events is the statistical
        uncertainty of the constants (``logic.uncertainties``)."""
        if self.replays:
            return self.solve(constants, merged, ctx, start)
        measurement = self.measure(merged, ctx)
        return self.update(constants, measurement, ctx) if measurement.ok else None

    def accuracy(self, ctx: PhaseContext) -> float:
        """The relative accuracy the user asked of this phase's constants."""
        return float(getattr(ctx, self.accuracySetting))

    def expected_precision(self, ctx: PhaseContext, events: Mapping[str, float]) -> dict[str, tuple[str, float]]:
        """Before any event is reconstructed: constant -> (sample, expected relative statistical
        uncertainty) for ``events`` events per sample in one step (for ``--dry-run``). Empty
        where the phase has no such estimate."""
        return {}

    def predict(
        self, measuredWith: Constants, current: Constants, measurement: Measurement, ctx: PhaseContext
    ) -> Constants | None:
        """The update as if the measurement had been made with ``current`` instead of
        ``measuredWith`` constants (phases run in the same pass as their dependencies), or None."""
        return None


def stochastic_precision(spread: float, referenceEnergy: float, energy: float, events: float) -> float:
    """Relative statistical uncertainty of a scale fitted to ``events`` events whose relative
    spread per event is ``spread`` at ``referenceEnergy`` and scales like a calorimeter's
    stochastic term, 1 / sqrt(E)."""
    if events <= 0:
        return math.inf
    return spread * math.sqrt(referenceEnergy / energy) / math.sqrt(events)


def window_acceptance(window: tuple[float, float]) -> float:
    """Fraction of an isotropic sample (|cos(theta)| uniform on [0, 1]) inside a |cos(theta)| window."""
    low, high = window
    return max(0.0, min(high, 1.0) - max(low, 0.0))


def in_window(absCos: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return (absCos > low) & (absCos < high)


def fill(spec: SummarySpec, values: Mapping[str, np.ndarray], nEvents: int) -> Summary:
    """A summary whose histograms are filled from the given per-histogram value arrays."""
    summary = spec.empty()
    for name, data in values.items():
        summary.hists[name].fill(np.asarray(data, dtype=float))
    summary.nEvents = int(nEvents)
    return summary


def root_histograms(spec: SummarySpec, output: SampleOutput, names, into: Summary | None = None) -> Summary:
    """Copy histograms PfoAnalysis filled into a summary, insisting on the binning the phase expects."""
    summary = into if into is not None else spec.empty()
    for name in names:
        counts, edges = output[name]
        expected = spec.hists[name]
        if len(counts) != expected.bins or not np.allclose([edges[0], edges[-1]], [expected.low, expected.high]):
            raise ValueError(
                f"histogram {name} has {len(counts)} bins on [{edges[0]}, {edges[-1]}], "
                f"PfoAnalysis writes {expected.bins} on [{expected.low}, {expected.high}]"
            )
        summary.hists[name].view()[...] = np.asarray(counts, dtype=float)
    return summary
