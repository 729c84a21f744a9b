"""Pandora's photon reconstruction as the emulator needs it: settings, PDFs, training.

``read_pandora_settings`` finds the ``PhotonReconstruction`` algorithm of a Pandora settings XML
(``HistogramFile``, ``ShouldMakePdfHistograms``, and in training mode ``NEnergyBins``,
``EnergyBinLowerEdges`` and the per-variable binning, with LCContent's defaults).

Every detector has *ideal* photon-ID PDFs (smooth parametric shapes whose widths depend on the
truth's ``photonId`` parameters). Training fills the PDF histograms with candidates drawn from
them, so a likelihood trained on this detector approaches its ideal PDFs as statistics grow.
``photon_id_quality`` measures a likelihood file against the ideal PDFs, per energy bin (mean
Hellinger distance over variables and signal/background, divided by the truth's
``referenceDistance``, clipped to [0, 1]): 0 for a perfect likelihood, 1 for one trained on
another detector or not trained at that energy. The reconstruction turns the value at a
cluster's energy into fragment / mis-ID probabilities and a small loss of cluster energy
(docs/PHYSICS.md section 8).
"""
from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import special

from ILCDIRAC.CalibrationSystem.Utilities.likelihood import BACKGROUND, SIGNAL, LikelihoodData, PdfHistogram
from ILCDIRAC.CalibrationSystem.Utilities.marlin_xml import without_comments
from marlin_emulator.rng import EventRandom
from marlin_emulator.truth import PhotonIdTruth

#: LCContent PhotonReconstructionAlgorithm variables and their default binning.
VARIABLES: dict[str, tuple[int, float, float]] = {
    "PeakRms": (50, 0.0, 5.0),
    "RmsRatio": (30, 1.0, 3.0),
    "LongProfileStart": (11, -0.5, 10.5),
    "LongProfileDiscrepancy": (42, -0.02, 0.82),
    "PeakEnergyFraction": (52, -0.02, 1.02),
    "MinDistanceToTrack": (40, 0.0, 20.0),
}
#: Settings-file names of the binning parameters (e.g. "PeakRmsNBins"); LCContent calls RmsRatio's "RmsRatio".
_BINNING_KEYS = ("NBins", "LowValue", "HighValue")


class PandoraSettingsError(ValueError):
    """A Pandora settings file that cannot be used."""


@dataclass(frozen=True)
class PhotonSettings:
    """The PhotonReconstruction algorithm's histogram settings (``present`` False without one)."""

    present: bool
    histogramFile: str | None = None
    training: bool = False
    energyBinLowerEdges: tuple[float, ...] = ()
    binning: dict[str, tuple[int, float, float]] = field(default_factory=lambda: dict(VARIABLES))


def read_pandora_settings(path: str | Path) -> PhotonSettings:
    path = Path(path)
    try:  # Pandora reads with TinyXML: a comment may hold "--" (CLDConfig's licence header)
        root = ET.fromstring(without_comments(path.read_bytes()))
    except FileNotFoundError:
        raise PandoraSettingsError(f"Pandora settings file {path} does not exist") from None
    except (ET.ParseError, OSError) as exc:
        raise PandoraSettingsError(f"Pandora settings file {path} is not valid XML: {exc}") from None
    if root.tag != "pandora":
        raise PandoraSettingsError(f"Pandora settings file {path}: the root element is <{root.tag}>, not <pandora>")
    algorithms = [a for a in root.iter("algorithm") if a.get("type") == "PhotonReconstruction"]
    if not algorithms:
        return PhotonSettings(present=False)
    if len(algorithms) > 1:
        raise PandoraSettingsError(
            f"Pandora settings file {path} has {len(algorithms)} PhotonReconstruction algorithms"
        )
    algorithm = algorithms[0]

    def value(tag: str) -> str | None:
        child = algorithm.find(tag)
        return None if child is None or child.text is None else child.text.strip()

    where = f"Pandora settings file {path}, PhotonReconstruction"
    histogramFile = value("HistogramFile")
    if not histogramFile:
        raise PandoraSettingsError(f"{where}: no HistogramFile")
    training = _boolean(value("ShouldMakePdfHistograms") or "false", f"{where}: ShouldMakePdfHistograms")
    if not training:
        return PhotonSettings(present=True, histogramFile=histogramFile)
    nBins, edgesText = value("NEnergyBins"), value("EnergyBinLowerEdges")
    if nBins is None or edgesText is None:
        raise PandoraSettingsError(f"{where}: training needs NEnergyBins and EnergyBinLowerEdges")
    try:
        edges = tuple(sorted(float(t) for t in edgesText.split()))
        count = int(nBins)
    except ValueError:
        raise PandoraSettingsError(f"{where}: NEnergyBins / EnergyBinLowerEdges are not numbers") from None
    if count != len(edges) or len(set(edges)) != len(edges) or not 0 < count <= 10000:
        raise PandoraSettingsError(f"{where}: NEnergyBins {count} does not match the {len(edges)} distinct lower edges")
    binning = {}
    for variable, (bins, low, high) in VARIABLES.items():
        try:
            bins = int(value(variable + "NBins") or bins)
            low = float(value(variable + "LowValue") or low)
            high = float(value(variable + "HighValue") or high)
        except ValueError:
            raise PandoraSettingsError(f"{where}: the binning of {variable} is not numeric") from None
        if bins <= 0 or not high > low:
            raise PandoraSettingsError(f"{where}: {variable} needs a positive number of bins on an increasing range")
        binning[variable] = (bins, low, high)
    return PhotonSettings(
        present=True, histogramFile=histogramFile, training=True, energyBinLowerEdges=edges, binning=binning
    )


def _boolean(text: str, where: str) -> bool:
    word = text.lower()
    if word in ("true", "1"):
        return True
    if word in ("false", "0"):
        return False
    raise PandoraSettingsError(f"{where} must be true or false, not {text!r}")


# ------------------------------------------------------------------------------------ ideal PDFs
def representative_energy(edges: tuple[float, ...], energyBin: int) -> float:
    """The energy at which an energy bin's PDFs are evaluated (geometric centre of the bin)."""
    low = edges[energyBin]
    if energyBin + 1 == len(edges):
        return 1.5 * max(low, 0.1)
    high = edges[energyBin + 1]
    return math.sqrt(low * high) if low > 0 else 0.5 * high


def _gamma_cdf(x: np.ndarray, mean: float, shape: float) -> np.ndarray:
    return special.gammainc(shape, np.clip(x, 0.0, None) * shape / mean)


def _cdf(variable: str, kind: str, energy: float, p: PhotonIdTruth, x: np.ndarray) -> np.ndarray:
    """CDF of a photon-ID variable for signal (photons) or background clusters."""
    signal = kind == SIGNAL
    root = math.sqrt(max(energy, 0.05))
    if variable == "PeakRms":
        mean = p.peakRmsScale * ((1.3 * (1 + 0.4 / root)) if signal else (2.0 * (1 + 0.3 / root)))
        return _gamma_cdf(x, mean, 8.0 if signal else 4.0)
    if variable == "RmsRatio":
        return _gamma_cdf(x - 1.0, 0.25 if signal else 0.55, 3.0 if signal else 2.0)
    if variable == "LongProfileStart":  # integer layer numbers
        mean = p.profileStartScale * ((1.0 * (1 + 0.5 / root)) if signal else 2.8)
        layers = np.where(x >= 0, np.floor(x) + 1.0, 0.0)
        return _gamma_cdf(layers, mean, 1.5)
    if variable == "LongProfileDiscrepancy":
        mean = p.discrepancyScale * ((0.15 * (1 + 0.5 / root)) if signal else 0.32)
        return _gamma_cdf(x, mean, 6.0 if signal else 3.0)
    if variable == "PeakEnergyFraction":
        spike = 0.55 + 0.25 * energy / (energy + 2.0) if signal else 0.3
        a, b = (3.0, 1.5) if signal else (1.2, 1.5)
        return (1 - spike) * special.betainc(a, b, np.clip(x, 0.0, 1.0)) + spike * (x >= 1.0)
    if variable == "MinDistanceToTrack":  # clusters far from every track land in the overflow
        far = 0.95 if signal else 0.6
        near = np.clip((x - 2.0) / 18.0, 0.0, 1.0) if signal else 1.0 - np.exp(-np.clip(x - 2.0, 0.0, None) / 4.0)
        return (1 - far) * near
    raise PandoraSettingsError(f"no photon-ID variable {variable!r}")


@functools.lru_cache(maxsize=4096)
def ideal_pdf(
    variable: str, kind: str, energy: float, photonId: PhotonIdTruth, binning: tuple[int, float, float]
) -> np.ndarray:
    """Probabilities of underflow, the bins and overflow (sums to 1), read-only."""
    bins, low, high = binning
    edges = np.linspace(low, high, bins + 1)
    cdf = _cdf(variable, kind, energy, photonId, edges)
    pdf = np.concatenate([[cdf[0]], np.diff(cdf), [1.0 - cdf[-1]]]).clip(min=0.0)
    pdf /= pdf.sum()
    pdf.setflags(write=False)
    return pdf


@dataclass(frozen=True)
class PhotonIdQuality:
    """Mismatch of the photon likelihood per energy bin: 0 trained on this detector, 1 foreign.

    The default (one bin, mismatch 1) stands for no likelihood or one from another detector.
    """

    energyBinLowerEdges: tuple[float, ...] = (0.0,)
    mismatch: tuple[float, ...] = (1.0,)

    def at(self, energy) -> np.ndarray:
        """The mismatch for clusters of these energies (GeV)."""
        index = np.searchsorted(self.energyBinLowerEdges, np.asarray(energy, dtype=float), side="right") - 1
        return np.asarray(self.mismatch)[np.clip(index, 0, len(self.mismatch) - 1)]


UNTRAINED = PhotonIdQuality()


def photon_id_quality(data: LikelihoodData, photonId: PhotonIdTruth) -> PhotonIdQuality:
    """How far a likelihood file is from this detector's ideal PDFs, per energy bin.

    Per histogram: the squared Hellinger distance to the ideal PDF minus what sampling noise of
    its N training events alone gives ((K - 1) / 8N for K populated bins), so that a file trained
    on this detector scores near 0 whatever its statistics; a histogram without events scores 1.
    Per energy bin: the mean distance over variables and signal/background, divided by the
    truth's referenceDistance and clipped to [0, 1].
    """
    mismatch = []
    for energyBin in range(data.nEnergyBins):
        distances = []
        for variable in data.variables:
            if variable not in VARIABLES:
                continue
            for kind in (SIGNAL, BACKGROUND):
                histogram = data.histogram(kind, variable, energyBin)
                events = data.events(kind)[energyBin]
                pdf = histogram.normalised()
                if events <= 0 or not pdf.any():
                    distances.append(1.0)
                    continue
                ideal = ideal_pdf(
                    variable,
                    kind,
                    representative_energy(data.energyBinLowerEdges, energyBin),
                    photonId,
                    (histogram.nBins, histogram.low, histogram.high),
                )
                squared = max(1.0 - float(np.sum(np.sqrt(pdf * ideal))), 0.0)
                noise = (np.count_nonzero(ideal > 1e-12) - 1) / (8.0 * events)
                distances.append(math.sqrt(max(squared - noise, 0.0)))
        mismatch.append(min(float(np.mean(distances)) / photonId.referenceDistance, 1.0) if distances else 1.0)
    return PhotonIdQuality(tuple(data.energyBinLowerEdges), tuple(mismatch))


# ------------------------------------------------------------------------------------ training
class PhotonTraining:
    """Pandora's PDF histograms filled while training (ShouldMakePdfHistograms)."""

    def __init__(self, settings: PhotonSettings) -> None:
        if not settings.training:
            raise PandoraSettingsError("photon training needs settings with ShouldMakePdfHistograms")
        self.settings = settings
        self.edges = np.asarray(settings.energyBinLowerEdges)
        nEnergy = self.edges.size
        self.counts = {
            (kind, variable): np.zeros((nEnergy, bins + 2))
            for kind in (SIGNAL, BACKGROUND)
            for variable, (bins, _, _) in settings.binning.items()
        }
        self.events = {SIGNAL: np.zeros(nEnergy, dtype=np.int64), BACKGROUND: np.zeros(nEnergy, dtype=np.int64)}

    def fill(
        self,
        energy: np.ndarray,
        signal: np.ndarray,
        owners: np.ndarray,
        index: np.ndarray,
        random: EventRandom,
        photonId: PhotonIdTruth,
    ) -> None:
        """Fill candidates (cluster EM energy, MC photon or not); draws come from ``random``
        keyed by the candidate's event number ``owners`` and its ``index`` in the event."""
        energyBin = np.searchsorted(self.edges, energy, side="right") - 1
        usable = energyBin >= 0
        for kind, isKind in ((SIGNAL, signal & usable), (BACKGROUND, ~signal & usable)):
            self.events[kind] += np.bincount(energyBin[isKind], minlength=self.edges.size)
            for variable, binning in self.settings.binning.items():
                u = random.uniform(owners[isKind], "photonId" + variable, index[isKind])
                for b in np.unique(energyBin[isKind]):
                    inBin = energyBin[isKind] == b
                    pdf = ideal_pdf(variable, kind, representative_energy(tuple(self.edges), int(b)), photonId, binning)
                    slot = np.searchsorted(np.cumsum(pdf), u[inBin], side="right").clip(max=pdf.size - 1)
                    self.counts[(kind, variable)][b] += np.bincount(slot, minlength=pdf.size)

    def likelihood(self) -> LikelihoodData:
        """The normalised PDFs Pandora writes at the end of the run."""
        tables: dict[str, dict[str, tuple[PdfHistogram, ...]]] = {SIGNAL: {}, BACKGROUND: {}}
        for (kind, variable), counts in self.counts.items():
            bins, low, high = self.settings.binning[variable]
            tables[kind][variable] = tuple(
                PdfHistogram(bins, low, high, row / row.sum() if row.sum() > 0 else row) for row in counts
            )
        return LikelihoodData(
            tuple(float(e) for e in self.edges),
            tuple(int(n) for n in self.events[SIGNAL]),
            tuple(int(n) for n in self.events[BACKGROUND]),
            tables[SIGNAL],
            tables[BACKGROUND],
        )


def sampled_likelihood(
    photonId: PhotonIdTruth, edges: tuple[float, ...], nSignal: tuple[int, ...], nBackground: tuple[int, ...], seed: int
) -> LikelihoodData:
    """A likelihood as training on a detector with these photon-ID parameters would give it
    (multinomial samples of its ideal PDFs); how the shipped "other detector" file was made."""
    rng = np.random.default_rng(seed)
    tables: dict[str, dict[str, tuple[PdfHistogram, ...]]] = {SIGNAL: {}, BACKGROUND: {}}
    for variable, binning in VARIABLES.items():
        for kind, counts in ((SIGNAL, nSignal), (BACKGROUND, nBackground)):
            histograms = []
            for energyBin, n in enumerate(counts):
                pdf = ideal_pdf(variable, kind, representative_energy(edges, energyBin), photonId, binning)
                filled = rng.multinomial(n, pdf).astype(float)
                histograms.append(PdfHistogram(binning[0], binning[1], binning[2], filled / n if n else filled))
            tables[kind][variable] = tuple(histograms)
    return LikelihoodData(tuple(edges), tuple(nSignal), tuple(nBackground), tables[SIGNAL], tables[BACKGROUND])


__all__ = [
    "PandoraSettingsError",
    "PhotonSettings",
    "PhotonTraining",
    "VARIABLES",
    "PhotonIdQuality",
    "UNTRAINED",
    "ideal_pdf",
    "photon_id_quality",
    "read_pandora_settings",
    "representative_energy",
    "sampled_likelihood",
]
