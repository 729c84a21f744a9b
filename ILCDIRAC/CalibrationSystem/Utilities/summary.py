"""The worker report: what one worker sends back for one phase of one step.

Workers never ship ROOT files. They reduce ``PfoAnalysisTree`` to the few histograms (and, where an
estimator needs per-event pairs, small per-event arrays) that the phase's estimator consumes. The
phase fixes the binning up front (``SummarySpec``), so reports of all workers add up exactly and a
malformed or foreign report is rejected before anything is stored.

On the wire a summary is a plain dict of str/int/float/list (safe for DISET's DEncode and JSON).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import boost_histogram as bh
import numpy as np

from ILCDIRAC.CalibrationSystem.Utilities.limits import shown

SUMMARY_VERSION = 1
#: Largest count or value a report may carry (integers are exact in float64 up to here): sums of
#: hundreds of reports stay finite.
MAX_VALUE = 2**53


class SummaryError(ValueError):
    """A worker report that does not match what the phase expects."""


@dataclass(frozen=True)
class HistSpec:
    """A regular 1D binning; flow bins are carried along so nothing silently disappears."""

    bins: int
    low: float
    high: float

    def axis(self) -> bh.axis.Regular:
        return bh.axis.Regular(self.bins, self.low, self.high)

    def histogram(self) -> bh.Histogram:
        return bh.Histogram(self.axis(), storage=bh.storage.Double())


@dataclass(frozen=True)
class SummarySpec:
    """What a phase expects from each worker: named histograms, named per-event arrays, and named
    small text files (e.g. a Pandora likelihood file) each checked by its validator."""

    hists: Mapping[str, HistSpec] = field(default_factory=dict)
    arrays: tuple[str, ...] = ()
    files: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)
    maxArrayLength: int = 2_000_000
    maxFileLength: int = 2_000_000

    def empty(self) -> "Summary":
        return Summary({name: spec.histogram() for name, spec in self.hists.items()},
                       {name: np.zeros(0, dtype=np.float32) for name in self.arrays}, 0,
                       {name: [] for name in self.files})


@dataclass
class Summary:
    """Histograms plus per-event arrays plus text files plus the number of events processed.

    ``files`` maps a name to a list of texts: one per worker report, in worker order once merged."""

    hists: dict[str, bh.Histogram]
    arrays: dict[str, np.ndarray]
    nEvents: int
    files: dict[str, list[str]] = field(default_factory=dict)

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """In-range bin contents and bin edges of one histogram, as the estimators take them."""
        hist = self.hists[name]
        return np.asarray(hist.values(), dtype=float), np.asarray(hist.axes[0].edges, dtype=float)

    def to_payload(self) -> dict[str, Any]:
        hists = {}
        for name, hist in self.hists.items():
            axis = hist.axes[0]
            counts = hist.values(flow=True)
            integral = np.all(counts == np.round(counts))
            hists[name] = {
                "bins": int(axis.size),
                "low": float(axis.edges[0]),
                "high": float(axis.edges[-1]),
                "counts": counts.astype(np.int64).tolist() if integral else counts.tolist(),
            }
        arrays = {name: np.asarray(arr, dtype=np.float32).astype(float).tolist() for name, arr in self.arrays.items()}
        return {"version": SUMMARY_VERSION, "nEvents": int(self.nEvents), "hists": hists, "arrays": arrays,
                "files": {name: list(texts) for name, texts in self.files.items()}}

    @classmethod
    def from_payload(cls, payload: Any, spec: SummarySpec) -> "Summary":
        """Validate a report against the phase's spec; raise SummaryError naming the first problem found."""
        if not isinstance(payload, Mapping):
            raise SummaryError(f"summary must be a dict, not {type(payload).__name__}")
        if payload.get("version") != SUMMARY_VERSION:
            raise SummaryError(f"summary version {payload.get('version')!r} is not {SUMMARY_VERSION}")
        unknown = set(payload) - {"version", "nEvents", "hists", "arrays", "files"}
        if unknown:
            raise SummaryError(f"summary has unknown fields {sorted(unknown)}")
        nEvents = payload.get("nEvents")
        if not isinstance(nEvents, int) or isinstance(nEvents, bool) or not 0 <= nEvents <= MAX_VALUE:
            raise SummaryError(f"summary nEvents must be a non-negative integer up to 2^53, not {shown(nEvents)}")
        hists = _hists_from_payload(payload.get("hists"), spec)
        arrays = _arrays_from_payload(payload.get("arrays"), spec)
        files = _files_from_payload(payload.get("files", {}), spec)
        return cls(hists, arrays, nEvents, files)

    @staticmethod
    def merge(summaries: Sequence["Summary"], spec: SummarySpec) -> "Summary":
        """Add histograms and concatenate arrays in the given (worker) order: deterministic."""
        merged = spec.empty()
        for summary in summaries:
            for name in spec.hists:
                merged.hists[name] += summary.hists[name]
            merged.nEvents += summary.nEvents
        for name in spec.arrays:
            parts = [summary.arrays[name] for summary in summaries]
            merged.arrays[name] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        for name in spec.files:
            merged.files[name] = [text for summary in summaries for text in summary.files[name]]
        return merged


def _same_names(raw: Any, expected: Any, field: str, what: str) -> None:
    if not isinstance(raw, Mapping):
        raise SummaryError(f"summary '{field}' must be a dict")
    if set(raw) != set(expected):
        missing, extra = sorted(set(expected) - set(raw)), sorted(set(raw) - set(expected))
        raise SummaryError(f"summary {what} do not match the phase: missing {missing}, unexpected {extra}")


def _hists_from_payload(raw: Any, spec: SummarySpec) -> dict[str, bh.Histogram]:
    _same_names(raw, spec.hists, "hists", "histograms")
    hists = {}
    for name, hspec in spec.hists.items():
        entry = raw[name]
        if not isinstance(entry, Mapping):
            raise SummaryError(f"histogram {name!r} must be a dict")
        if entry.get("bins") != hspec.bins or not _close(entry.get("low"), hspec.low) or not _close(
            entry.get("high"), hspec.high
        ):
            raise SummaryError(
                f"histogram {name!r} binning ({entry.get('bins')}, {entry.get('low')}, {entry.get('high')}) "
                f"is not the phase's ({hspec.bins}, {hspec.low}, {hspec.high})"
            )
        counts = _numbers(entry.get("counts"), f"histogram {name!r} counts")
        if counts.size != hspec.bins + 2:
            raise SummaryError(f"histogram {name!r} has {counts.size} counts, expected {hspec.bins + 2} (with flow)")
        if np.any(counts < 0):
            raise SummaryError(f"histogram {name!r} has negative counts")
        hist = hspec.histogram()
        hist.view(flow=True)[...] = counts
        hists[name] = hist
    return hists


def _arrays_from_payload(raw: Any, spec: SummarySpec) -> dict[str, np.ndarray]:
    _same_names(raw, spec.arrays, "arrays", "arrays")
    arrays = {}
    for name in spec.arrays:
        values = _numbers(raw[name], f"array {name!r}")
        if values.size > spec.maxArrayLength:
            raise SummaryError(f"array {name!r} has {values.size} entries, more than {spec.maxArrayLength}")
        arrays[name] = values.astype(np.float32)
    lengths = {arr.size for arr in arrays.values()}
    if len(lengths) > 1:
        raise SummaryError(f"summary arrays have different lengths {sorted(lengths)}")
    return arrays


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


def _numbers(raw: Any, what: str) -> np.ndarray:
    if not isinstance(raw, (list, tuple)):
        raise SummaryError(f"{what} must be a list of numbers")
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
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value - expected) <= 1e-9 * max(
        1.0, abs(expected)
    )
