"""The worker report: what one worker sends back for one phase of one step.

Workers never ship ROOT files or per-event lists. They reduce ``PfoAnalysisTree`` to the few
fixed-binning histograms (one- or two-dimensional) that the phase's estimator consumes, plus small
text files where a phase merges files (photon likelihoods). The phase fixes the binning up front
(``SummarySpec``), so reports of all workers add up exactly, merging and fitting cost the same
whatever the number of events, and a malformed or foreign report is rejected before anything is
stored.

Where an estimator needs more than bin counts (the chi-square method weighs every event by its
own energies), a *sum histogram* carries, per bin, the sum of one coordinate of the entries that
another histogram of the same binning counts: each bin then stands for its entries at their exact
mean, and the estimator needs no finer binning to be exact where it is linear in the coordinates.

On the wire a summary is a plain dict of str/int/float/list (safe for DISET's DEncode and JSON);
histograms travel as their non-zero bins (flat indices in C order, flow bins included) and
values, so a report is never larger than its binning, and a small sample sends a small report.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boost_histogram as bh
import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.limits import shown
from ILCDIRAC.CalibrationSystem.Utilities.schema import is_int, is_number

SUMMARY_VERSION = 2
#: Largest count or value a report may carry (integers are exact in float64 up to here): sums of
#: hundreds of reports stay finite.
MAX_VALUE = 2**53


class SummaryError(ValueError):
    """A worker report that does not match what the phase expects."""


@dataclass(frozen=True)
class Axis:
    """A regular axis; with ``flow`` its underflow and overflow bins are carried along so nothing
    silently disappears (without, values outside are the filler's responsibility)."""

    bins: int
    low: float
    high: float
    flow: bool = True

    def bh(self) -> bh.axis.Regular:
        return bh.axis.Regular(self.bins, self.low, self.high, underflow=self.flow, overflow=self.flow)

    def to_payload(self) -> list:
        return [self.bins, self.low, self.high, self.flow]

    def edges_with_flow(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper edge of every bin as stored (flow bins reach to infinity)."""
        edges = np.linspace(self.low, self.high, self.bins + 1)
        if self.flow:
            edges = np.concatenate(([-math.inf], edges, [math.inf]))
        return edges[:-1], edges[1:]


@dataclass(frozen=True)
class HistSpec:
    """A regular binning: one dimension, or two with the second axis ``y``.

    ``sumOf = (counts, axis)`` makes it a sum histogram: each entry counted in histogram
    ``counts`` (same binning) adds its coordinate on ``axis`` (0 or 1) here, so the mean
    coordinate of every filled bin lies inside that bin (checked on arrival)."""

    bins: int
    low: float
    high: float
    y: Axis | None = None
    sumOf: tuple[str, int] | None = None

    @property
    def axes(self) -> tuple[Axis, ...]:
        return (Axis(self.bins, self.low, self.high),) + ((self.y,) if self.y else ())

    @property
    def shape(self) -> tuple[int, ...]:
        """Stored bins per axis, flow bins included."""
        return tuple(axis.bins + 2 * axis.flow for axis in self.axes)

    def histogram(self) -> bh.Histogram:
        return bh.Histogram(*(axis.bh() for axis in self.axes), storage=bh.storage.Double())


@dataclass(frozen=True)
class SummarySpec:
    """What a phase expects from each worker: named histograms and named small text files (e.g.
    a Pandora likelihood file) each checked by its validator."""

    hists: Mapping[str, HistSpec] = field(default_factory=dict)
    files: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)
    maxFileLength: int = 2_000_000

    def __post_init__(self) -> None:
        for name, spec in self.hists.items():
            if spec.sumOf is None:
                continue
            counts, axis = spec.sumOf
            if counts not in self.hists or self.hists[counts].sumOf is not None or self.hists[counts].axes != spec.axes:
                raise ValueError(f"sum histogram {name!r} needs a count histogram {counts!r} of the same binning")
            if axis not in range(len(spec.axes)):
                raise ValueError(f"sum histogram {name!r} sums axis {axis}, it has {len(spec.axes)}")

    def empty(self) -> Summary:
        return Summary({name: spec.histogram() for name, spec in self.hists.items()}, 0,
                       {name: [] for name in self.files})


@dataclass
class Summary:
    """Histograms plus text files plus the number of events processed.

    ``files`` maps a name to a list of texts: one per worker report, in worker order once merged."""

    hists: dict[str, bh.Histogram]
    nEvents: int
    files: dict[str, list[str]] = field(default_factory=dict)

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """In-range bin contents and bin edges of a one-dimensional histogram, as the estimators
        take them."""
        hist = self.hists[name]
        return np.asarray(hist.values(), dtype=float), np.asarray(hist.axes[0].edges, dtype=float)

    def to_payload(self) -> dict[str, Any]:
        hists = {}
        for name, hist in self.hists.items():
            stored = np.asarray(hist.values(flow=True), dtype=float).ravel()
            index = np.flatnonzero(stored)
            values = stored[index]
            integral = np.all(values == np.round(values))
            hists[name] = {
                "axes": [Axis(a.size, float(a.edges[0]), float(a.edges[-1]), bool(a.traits.underflow)).to_payload()
                         for a in hist.axes],
                "index": index.tolist(),
                "values": values.astype(np.int64).tolist() if integral else values.tolist(),
            }
        return {"version": SUMMARY_VERSION, "nEvents": int(self.nEvents), "hists": hists,
                "files": {name: list(texts) for name, texts in self.files.items()}}

    @classmethod
    def from_payload(cls, payload: Any, spec: SummarySpec) -> Summary:
        """Validate a report against the phase's spec; raise SummaryError naming the first problem found."""
        return cls.merge_payloads([payload], spec)

    @staticmethod
    def merge_payloads(payloads: Iterable[Any], spec: SummarySpec) -> Summary:
        """Validate the workers' reports one by one and add them up, histograms bin by bin and
        files in the given (worker) order: deterministic. Each report is added in its sparse
        form, so merging costs its non-zero bins, not the binning times the workers."""
        merged = spec.empty()
        for payload in payloads:
            nEvents, hists, files = _validated(payload, spec)
            for name, (index, values) in hists.items():
                view = merged.hists[name].view(flow=True)
                view[np.unravel_index(index, view.shape)] += values
            merged.nEvents += nEvents
            for name in spec.files:
                merged.files[name].extend(files[name])
        return merged

    def resampled(self, spec: SummarySpec, rng: np.random.Generator) -> Summary:
        """A Poisson bootstrap replica: every bin count drawn from a Poisson distribution with the
        observed count as mean; a sum histogram keeps its bins' means (scaled with its counts).
        Files are kept as they are."""
        replica = spec.empty()
        ratios = {}
        for name, hspec in spec.hists.items():
            if hspec.sumOf is None:
                observed = np.asarray(self.hists[name].values(flow=True), dtype=float)
                filled = np.nonzero(observed)
                drawn = rng.poisson(observed[filled]).astype(float)
                replica.hists[name].view(flow=True)[filled] = drawn
                ratios[name] = (filled, drawn / observed[filled])
        for name, hspec in spec.hists.items():
            if hspec.sumOf is not None:
                filled, ratio = ratios[hspec.sumOf[0]]
                replica.hists[name].view(flow=True)[filled] = (
                    np.asarray(self.hists[name].values(flow=True))[filled] * ratio
                )
        replica.nEvents = self.nEvents
        replica.files = {name: list(texts) for name, texts in self.files.items()}
        return replica


def _same_names(raw: Any, expected: Any, field: str, what: str) -> None:
    if not isinstance(raw, Mapping):
        raise SummaryError(f"summary '{field}' must be a dict")
    if set(raw) != set(expected):
        missing, extra = sorted(set(expected) - set(raw)), sorted(set(raw) - set(expected))
        raise SummaryError(f"summary {what} do not match the phase: missing {missing}, unexpected {extra}")


def _validated(
    payload: Any, spec: SummarySpec
) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]], dict[str, list[str]]]:
    """(nEvents, {histogram: (flat indices, values)}, files) of a report that passed every check."""
    if not isinstance(payload, Mapping):
        raise SummaryError(f"summary must be a dict, not {type(payload).__name__}")
    if payload.get("version") != SUMMARY_VERSION:
        raise SummaryError(f"summary version {shown(payload.get('version'))} is not {SUMMARY_VERSION}")
    unknown = set(payload) - {"version", "nEvents", "hists", "files"}
    if unknown:
        raise SummaryError(f"summary has unknown fields {sorted(unknown)}")
    nEvents = payload.get("nEvents")
    if not is_int(nEvents) or not 0 <= nEvents <= MAX_VALUE:
        raise SummaryError(f"summary nEvents must be a non-negative integer up to 2^53, not {shown(nEvents)}")
    return nEvents, _hists_from_payload(payload.get("hists"), spec), _files_from_payload(payload.get("files", {}), spec)


def _hists_from_payload(raw: Any, spec: SummarySpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    _same_names(raw, spec.hists, "hists", "histograms")
    hists = {}
    for name, hspec in spec.hists.items():
        entry = raw[name]
        if not isinstance(entry, Mapping) or set(entry) != {"axes", "index", "values"}:
            raise SummaryError(f"histogram {name!r} must be a dict of 'axes', 'index' and 'values'")
        if not _same_axes(entry["axes"], hspec.axes):
            raise SummaryError(
                f"histogram {name!r} binning {shown(entry['axes'])} is not the phase's "
                f"{[axis.to_payload() for axis in hspec.axes]!r}"
            )
        size = math.prod(hspec.shape)
        index = _numbers(entry["index"], f"histogram {name!r} index", maxLength=size)
        values = _numbers(entry["values"], f"histogram {name!r} values", maxLength=size)
        if index.size != values.size:
            raise SummaryError(f"histogram {name!r} has {index.size} indices for {values.size} values")
        if index.size and (np.any(index != np.round(index)) or index[0] < 0 or index[-1] >= size
                           or np.any(np.diff(index) <= 0)):
            raise SummaryError(f"histogram {name!r} index must be increasing whole bin numbers in [0, {size})")
        if np.any(values < 0):
            raise SummaryError(f"histogram {name!r} has negative values")
        hists[name] = (index.astype(np.int64), values)
    for name, hspec in spec.hists.items():
        if hspec.sumOf is not None:
            _check_sums(name, hists[name], hspec.sumOf, hists[hspec.sumOf[0]], hspec)
    return hists


def _same_axes(raw: Any, axes: tuple[Axis, ...]) -> bool:
    if not isinstance(raw, list) or len(raw) != len(axes):
        return False
    for entry, axis in zip(raw, axes, strict=True):
        if not isinstance(entry, list) or len(entry) != 4:
            return False
        bins, low, high, flow = entry
        if bins != axis.bins or isinstance(bins, bool) or flow is not axis.flow:
            return False
        if not (_close(low, axis.low) and _close(high, axis.high)):
            return False
    return True


def _check_sums(name: str, sums: tuple[np.ndarray, np.ndarray], sumOf: tuple[str, int],
                counts: tuple[np.ndarray, np.ndarray], hspec: HistSpec) -> None:
    """Where nothing was counted nothing may be summed; elsewhere the mean must lie in the bin."""
    countName, axisNumber = sumOf
    (index, total), (countIndex, n) = sums, counts
    position = np.searchsorted(countIndex, index)
    counted = position < countIndex.size
    counted[counted] = countIndex[position[counted]] == index[counted]
    if not counted.all():
        raise SummaryError(f"histogram {name!r} has sums in bins where {countName!r} counted nothing")
    axis = hspec.axes[axisNumber]
    low, high = axis.edges_with_flow()
    binNumber = np.unravel_index(index, hspec.shape)[axisNumber]
    mean = total / n[position]
    slack = 1e-9 * max((axis.high - axis.low) / axis.bins, abs(axis.high))
    outside = (mean < low[binNumber] - slack) | (mean > high[binNumber] + slack)
    if outside.any():
        raise SummaryError(
            f"histogram {name!r} has {int(outside.sum())} bin(s) whose mean coordinate lies outside the bin"
        )


def _files_from_payload(raw: Any, spec: SummarySpec) -> dict[str, list[str]]:
    _same_names(raw, spec.files, "files", "files")
    files = {}
    for name, validate in spec.files.items():
        texts = raw[name]
        if not isinstance(texts, list) or len(texts) != 1 or not isinstance(texts[0], str):
            raise SummaryError(f"file {name!r} must be a list holding exactly one text")
        if len(texts[0]) > spec.maxFileLength:
            raise SummaryError(f"file {name!r} has {len(texts[0])} characters, more than {spec.maxFileLength}")
        try:
            validate(texts[0])
        except ValueError as exc:
            raise SummaryError(f"file {name!r} is not valid: {exc}") from None
        files[name] = list(texts)
    return files


def _numbers(raw: Any, what: str, *, maxLength: int) -> np.ndarray:
    if not isinstance(raw, (list, tuple)):
        raise SummaryError(f"{what} must be a list of numbers")
    if len(raw) > maxLength:
        raise SummaryError(f"{what} has {len(raw)} entries, more than the {maxLength} bins")
    try:
        values = np.array(raw)
    except ValueError as exc:
        raise SummaryError(f"{what} is not a flat list of numbers: {exc}") from None
    if values.size and (values.ndim != 1 or values.dtype.kind not in "iuf"):
        raise SummaryError(f"{what} must be a flat list of numbers")
    values = values.astype(float)
    if not np.all(np.isfinite(values)):
        raise SummaryError(f"{what} contains NaN or infinity")
    if values.size and np.max(np.abs(values)) > MAX_VALUE:
        raise SummaryError(f"{what} contains values beyond 2^53")
    return values


def _close(value: Any, expected: float) -> bool:
    return is_number(value) and abs(value - expected) <= 1e-9 * max(1.0, abs(expected))
