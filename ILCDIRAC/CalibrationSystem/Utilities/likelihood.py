"""Pandora photon-likelihood data (``PandoraLikelihoodData*.xml``): read, write, merge.

The format is what LCContent's ``PhotonReconstructionAlgorithm`` writes when it trains
(``ShouldMakePdfHistograms``) and reads otherwise: a TinyXML document with *several top-level
elements* (so not well-formed XML on its own)::

    <NEnergyBins>9</NEnergyBins>
    <EnergyBinLowerEdges>0 0.2 0.5 1 1.5 2.5 5 10 20 </EnergyBinLowerEdges>
    <NSignalEvents>...one count per energy bin...</NSignalEvents>
    <NBackgroundEvents>...</NBackgroundEvents>
    <PhotonSigPeakRms_0>
        <NBinsX>50</NBinsX> <XLow>0</XLow> <XHigh>5</XHigh>
        <BinContents>underflow, NBinsX bins, overflow</BinContents>
    </PhotonSigPeakRms_0>
    <PhotonBkgPeakRms_0> ... one Sig and one Bkg histogram per variable and energy bin

Each histogram is normalised to unit sum over all NBinsX + 2 entries (Pandora's
``NormalizeHistogram``); an energy bin without training events keeps all-zero histograms.

Stage 2 of the calibration merges the workers' training files: per energy bin every normalised
PDF is weighted by its file's NSignalEvents (signal) or NBackgroundEvents (background), the
weighted PDFs are summed and the sum is renormalised. Unlike ILCDIRAC's merge script this keeps
floating-point precision (no rounding of the weighted contents to integers) and treats energy bins
without events as empty instead of dividing by zero.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.marlin_xml import without_comments

SIGNAL = "Sig"
BACKGROUND = "Bkg"
_KINDS = (SIGNAL, BACKGROUND)
_HISTOGRAM_TAG = re.compile(r"^Photon(Sig|Bkg)([A-Za-z0-9]+)_(\d+)$")
_HEADER_TAGS = ("NEnergyBins", "EnergyBinLowerEdges", "NSignalEvents", "NBackgroundEvents")


class LikelihoodDataError(ValueError):
    """Photon likelihood data that is malformed or that cannot be merged."""


@dataclass(frozen=True)
class PdfHistogram:
    """One Pandora histogram: ``contents`` holds underflow, the ``nBins`` bins and overflow."""

    nBins: int
    low: float
    high: float
    contents: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.nBins, int) or self.nBins <= 0:
            raise LikelihoodDataError(f"a histogram needs a positive number of bins, not {self.nBins!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise LikelihoodDataError(f"histogram range [{self.low}, {self.high}] is not an increasing finite interval")
        contents = np.asarray(self.contents, dtype=float)
        if contents.shape != (self.nBins + 2,):
            raise LikelihoodDataError(
                f"a histogram of {self.nBins} bins needs {self.nBins + 2} contents (with under- and overflow), "
                f"got {contents.size}"
            )
        if not np.all(np.isfinite(contents)) or np.any(contents < 0):
            raise LikelihoodDataError("histogram contents must be finite and non-negative")
        contents.setflags(write=False)
        object.__setattr__(self, "contents", contents)

    def same_binning(self, other: PdfHistogram) -> bool:
        return self.nBins == other.nBins and math.isclose(self.low, other.low) and math.isclose(self.high, other.high)

    def normalised(self) -> np.ndarray:
        """Contents scaled to unit sum (all zeros stay zeros)."""
        total = float(self.contents.sum())
        return self.contents / total if total > 0 else np.zeros_like(self.contents)


@dataclass(frozen=True)
class LikelihoodData:
    """The photon-ID PDFs of one likelihood file.

    ``signal[variable][energyBin]`` and ``background[variable][energyBin]`` are the histograms;
    variables keep the order of the file (LCContent: PeakRms, RmsRatio, LongProfileStart,
    LongProfileDiscrepancy, PeakEnergyFraction, MinDistanceToTrack).
    """

    energyBinLowerEdges: tuple[float, ...]
    nSignalEvents: tuple[int, ...]
    nBackgroundEvents: tuple[int, ...]
    signal: Mapping[str, tuple[PdfHistogram, ...]]
    background: Mapping[str, tuple[PdfHistogram, ...]]

    def __post_init__(self) -> None:
        nBins = len(self.energyBinLowerEdges)
        if nBins == 0:
            raise LikelihoodDataError("likelihood data needs at least one energy bin")
        edges = np.asarray(self.energyBinLowerEdges, dtype=float)
        if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise LikelihoodDataError(
                f"EnergyBinLowerEdges must increase strictly, got {list(self.energyBinLowerEdges)}"
            )
        for name, counts in (("NSignalEvents", self.nSignalEvents), ("NBackgroundEvents", self.nBackgroundEvents)):
            if len(counts) != nBins:
                raise LikelihoodDataError(f"{name} has {len(counts)} entries for {nBins} energy bins")
            if any((not isinstance(n, int)) or n < 0 for n in counts):
                raise LikelihoodDataError(f"{name} must be non-negative integers, got {list(counts)}")
        if not self.signal:
            raise LikelihoodDataError("likelihood data has no PDF histograms")
        if list(self.signal) != list(self.background):
            raise LikelihoodDataError(
                f"signal variables {list(self.signal)} differ from background variables {list(self.background)}"
            )
        for kind, table in ((SIGNAL, self.signal), (BACKGROUND, self.background)):
            for variable, histograms in table.items():
                if len(histograms) != nBins:
                    raise LikelihoodDataError(
                        f"Photon{kind}{variable} has {len(histograms)} energy bins, expected {nBins}"
                    )

    @property
    def nEnergyBins(self) -> int:
        return len(self.energyBinLowerEdges)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self.signal)

    def histogram(self, kind: str, variable: str, energyBin: int) -> PdfHistogram:
        if kind not in _KINDS:
            raise LikelihoodDataError(f"histogram kind must be {SIGNAL!r} or {BACKGROUND!r}, not {kind!r}")
        table = self.signal if kind == SIGNAL else self.background
        if variable not in table:
            raise LikelihoodDataError(f"no photon-ID variable {variable!r}; known: {', '.join(table)}")
        if not 0 <= energyBin < self.nEnergyBins:
            raise LikelihoodDataError(f"energy bin {energyBin} outside 0..{self.nEnergyBins - 1}")
        return table[variable][energyBin]

    def events(self, kind: str) -> tuple[int, ...]:
        return self.nSignalEvents if kind == SIGNAL else self.nBackgroundEvents


# ------------------------------------------------------------------------------------ reading
def read_likelihood(text: str) -> LikelihoodData:
    """Parse the text of a Pandora likelihood file (several top-level elements, comments allowed)."""
    if not isinstance(text, str):
        raise LikelihoodDataError(f"likelihood data must be text, not {type(text).__name__}")
    # Pandora reads these files with TinyXML, which lets a comment hold "--" (CLDConfig's licence)
    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", without_comments(text.encode("utf-8")).decode("utf-8"))
    try:
        root = ET.fromstring(f"<LikelihoodData>{body}</LikelihoodData>")
    except ET.ParseError as exc:
        raise LikelihoodDataError(f"likelihood data is not valid Pandora XML: {exc}") from None
    elements = {tag: root.find(tag) for tag in _HEADER_TAGS}
    missing = [tag for tag, element in elements.items() if element is None]
    if missing:
        raise LikelihoodDataError(f"likelihood data lacks {', '.join(missing)}")
    header = {tag: element for tag, element in elements.items() if element is not None}
    nEnergyBins = _int(header["NEnergyBins"].text, "NEnergyBins")
    edges = _numbers(header["EnergyBinLowerEdges"].text, "EnergyBinLowerEdges", float)
    nSignal = _numbers(header["NSignalEvents"].text, "NSignalEvents", int)
    nBackground = _numbers(header["NBackgroundEvents"].text, "NBackgroundEvents", int)
    if len(edges) != nEnergyBins:
        raise LikelihoodDataError(f"NEnergyBins is {nEnergyBins} but EnergyBinLowerEdges has {len(edges)} values")
    found: dict[tuple[str, str, int], PdfHistogram] = {}
    variables: list[str] = []
    for element in root:
        if element.tag in _HEADER_TAGS:
            continue
        match = _HISTOGRAM_TAG.match(element.tag)
        if match is None:
            raise LikelihoodDataError(f"unexpected element <{element.tag}> in likelihood data")
        kind, variable, energyBin = match.group(1), match.group(2), int(match.group(3))
        if (kind, variable, energyBin) in found:
            raise LikelihoodDataError(f"histogram <{element.tag}> appears twice")
        if energyBin >= nEnergyBins:
            raise LikelihoodDataError(f"histogram <{element.tag}> is for energy bin {energyBin} of only {nEnergyBins}")
        found[(kind, variable, energyBin)] = _histogram(element)
        if variable not in variables:
            variables.append(variable)
    tables: dict[str, dict[str, tuple[PdfHistogram, ...]]] = {SIGNAL: {}, BACKGROUND: {}}
    for variable in variables:
        for kind in _KINDS:
            absent = [b for b in range(nEnergyBins) if (kind, variable, b) not in found]
            if absent:
                raise LikelihoodDataError(f"likelihood data lacks Photon{kind}{variable} for energy bins {absent}")
            tables[kind][variable] = tuple(found[(kind, variable, b)] for b in range(nEnergyBins))
    return LikelihoodData(tuple(edges), tuple(nSignal), tuple(nBackground), tables[SIGNAL], tables[BACKGROUND])


def _histogram(element: ET.Element) -> PdfHistogram:
    values = {}
    for tag in ("NBinsX", "XLow", "XHigh", "BinContents"):
        child = element.find(tag)
        if child is None:
            raise LikelihoodDataError(f"histogram <{element.tag}> lacks <{tag}>")
        values[tag] = child.text
    try:
        return PdfHistogram(
            nBins=_int(values["NBinsX"], f"{element.tag}/NBinsX"),
            low=_float(values["XLow"], f"{element.tag}/XLow"),
            high=_float(values["XHigh"], f"{element.tag}/XHigh"),
            contents=np.array(_numbers(values["BinContents"], f"{element.tag}/BinContents", float)),
        )
    except LikelihoodDataError as exc:
        message = str(exc)
        raise LikelihoodDataError(message if element.tag in message else f"<{element.tag}>: {message}") from None


def _int(text: str | None, where: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise LikelihoodDataError(f"{where} must be an integer, not {text!r}") from None


def _float(text: str | None, where: str) -> float:
    try:
        value = float((text or "").strip())
    except ValueError:
        raise LikelihoodDataError(f"{where} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise LikelihoodDataError(f"{where} must be finite, not {text!r}")
    return value


def _numbers(text: str | None, where: str, kind: type) -> list:
    tokens = (text or "").split()
    if not tokens:
        raise LikelihoodDataError(f"{where} is empty")
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise LikelihoodDataError(f"{where} must hold numbers, got {' '.join(tokens[:5])!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise LikelihoodDataError(f"{where} holds non-finite values")
    if kind is int:
        if not all(v.is_integer() for v in values):
            raise LikelihoodDataError(f"{where} must hold integers, got {' '.join(tokens[:5])!r}")
        return [int(v) for v in values]
    return values


# ------------------------------------------------------------------------------------ writing
def write_likelihood(data: LikelihoodData) -> str:
    """The text Pandora writes for these PDFs (variables outer, energy bins inner, Sig then Bkg)."""
    if not isinstance(data, LikelihoodData):
        raise LikelihoodDataError(f"write_likelihood needs LikelihoodData, not {type(data).__name__}")
    lines = [
        f"<NEnergyBins>{data.nEnergyBins}</NEnergyBins>",
        f"<EnergyBinLowerEdges>{_join(data.energyBinLowerEdges)}</EnergyBinLowerEdges>",
        f"<NSignalEvents>{_join(data.nSignalEvents)}</NSignalEvents>",
        f"<NBackgroundEvents>{_join(data.nBackgroundEvents)}</NBackgroundEvents>",
    ]
    for variable in data.variables:
        for energyBin in range(data.nEnergyBins):
            for kind in _KINDS:
                tag = f"Photon{kind}{variable}_{energyBin}"
                histogram = data.histogram(kind, variable, energyBin)
                lines += [
                    f"<{tag}>",
                    f"    <NBinsX>{histogram.nBins}</NBinsX>",
                    f"    <XLow>{_number(histogram.low)}</XLow>",
                    f"    <XHigh>{_number(histogram.high)}</XHigh>",
                    f"    <BinContents>{_join(histogram.contents)}</BinContents>",
                    f"</{tag}>",
                ]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return format(float(value), ".12g")


def _join(values) -> str:
    return " ".join(str(v) if isinstance(v, (int, np.integer)) else _number(v) for v in values) + " "


# ------------------------------------------------------------------------------------ merging
def merge_likelihoods(files: Sequence[LikelihoodData]) -> LikelihoodData:
    """One likelihood from the training files of many workers (event-weighted PDF average)."""
    files = list(files)
    if not files:
        raise LikelihoodDataError("cannot merge an empty list of likelihood files")
    for index, item in enumerate(files):
        if not isinstance(item, LikelihoodData):
            raise LikelihoodDataError(f"item {index} to merge is a {type(item).__name__}, not LikelihoodData")
    reference = files[0]
    for index, item in enumerate(files[1:], start=1):
        _check_compatible(reference, item, index)
    nSignal = tuple(int(sum(f.nSignalEvents[b] for f in files)) for b in range(reference.nEnergyBins))
    nBackground = tuple(int(sum(f.nBackgroundEvents[b] for f in files)) for b in range(reference.nEnergyBins))
    tables: dict[str, dict[str, tuple[PdfHistogram, ...]]] = {SIGNAL: {}, BACKGROUND: {}}
    for kind in _KINDS:
        for variable in reference.variables:
            merged = []
            for energyBin in range(reference.nEnergyBins):
                template = reference.histogram(kind, variable, energyBin)
                weighted = sum(
                    (f.events(kind)[energyBin] * f.histogram(kind, variable, energyBin).normalised() for f in files),
                    np.zeros(template.nBins + 2),
                )
                total = float(np.sum(weighted))
                contents = weighted / total if total > 0 else np.zeros(template.nBins + 2)
                merged.append(PdfHistogram(template.nBins, template.low, template.high, contents))
            tables[kind][variable] = tuple(merged)
    return LikelihoodData(reference.energyBinLowerEdges, nSignal, nBackground, tables[SIGNAL], tables[BACKGROUND])


def _check_compatible(reference: LikelihoodData, other: LikelihoodData, index: int) -> None:
    if not np.allclose(reference.energyBinLowerEdges, other.energyBinLowerEdges) or (
        reference.nEnergyBins != other.nEnergyBins
    ):
        raise LikelihoodDataError(
            f"file {index} has energy bins {list(other.energyBinLowerEdges)}, "
            f"file 0 has {list(reference.energyBinLowerEdges)}"
        )
    if reference.variables != other.variables:
        raise LikelihoodDataError(
            f"file {index} has variables {list(other.variables)}, file 0 has {list(reference.variables)}"
        )
    for kind in _KINDS:
        for variable in reference.variables:
            for energyBin in range(reference.nEnergyBins):
                a = reference.histogram(kind, variable, energyBin)
                b = other.histogram(kind, variable, energyBin)
                if not a.same_binning(b):
                    raise LikelihoodDataError(
                        f"file {index}: Photon{kind}{variable}_{energyBin} has {b.nBins} bins on [{b.low}, {b.high}], "
                        f"file 0 has {a.nBins} on [{a.low}, {a.high}]"
                    )


__all__ = [
    "BACKGROUND",
    "SIGNAL",
    "LikelihoodData",
    "LikelihoodDataError",
    "PdfHistogram",
    "merge_likelihoods",
    "read_likelihood",
    "write_likelihood",
]
