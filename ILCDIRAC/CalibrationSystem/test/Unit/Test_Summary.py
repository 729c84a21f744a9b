"""Worker summaries: exact sparse transport, strict validation, deterministic merge, bootstrap."""
import json
import math

import numpy as np
import pytest

from ILCDIRAC.CalibrationSystem.Utilities.summary import Axis, HistSpec, Summary, SummaryError, SummarySpec

CELLS = dict(bins=30, low=0.0, high=15.0, y=Axis(10, 0.0, 1.0, flow=False))
SPEC = SummarySpec(hists={
    "e": HistSpec(20, 0.0, 10.0),
    "n": HistSpec(**CELLS),
    "sumX": HistSpec(**CELLS, sumOf=("n", 0)),
    "sumY": HistSpec(**CELLS, sumOf=("n", 1)),
})


def events(seed, n=100):
    rng = np.random.default_rng(seed)
    return rng.normal(5, 3, n), rng.gamma(4.0, 1.5, n), rng.uniform(0, 1, n)


def make(seed, n=100):
    e, x, y = events(seed, n)
    summary = SPEC.empty()
    summary.hists["e"].fill(e)
    summary.hists["n"].fill(x, y)
    summary.hists["sumX"].fill(x, y, weight=x)
    summary.hists["sumY"].fill(x, y, weight=y)
    summary.nEvents = n
    return summary


def test_payload_round_trip_is_exact_sparse_and_json_safe():
    summary = make(1)
    payload = json.loads(json.dumps(summary.to_payload()))
    back = Summary.from_payload(payload, SPEC)
    for name in SPEC.hists:
        np.testing.assert_array_equal(back.hists[name].values(flow=True), summary.hists[name].values(flow=True))
    assert back.nEvents == 100
    # only filled bins travel: never more entries than events, and never more than the bins
    assert len(payload["hists"]["n"]["index"]) == np.count_nonzero(summary.hists["n"].values(flow=True)) <= 100
    assert payload["hists"]["n"]["axes"] == [[30, 0.0, 15.0, True], [10, 0.0, 1.0, False]]
    # flow bins travel too: values outside [0, 10) are not silently lost
    assert back.hists["e"].values(flow=True)[0] > 0 and back.hists["e"].values(flow=True)[-1] > 0


def test_merging_reports_equals_filling_all_events_at_once():
    payloads = [make(seed).to_payload() for seed in range(3)]
    merged = Summary.merge_payloads(payloads, SPEC)
    e, x, y = (np.concatenate(parts) for parts in zip(*(events(seed) for seed in range(3)), strict=True))
    np.testing.assert_array_equal(merged.hists["e"].values(flow=True), np.histogram(e, bins=[-np.inf, *np.linspace(0, 10, 21), np.inf])[0])
    xEdges = [-np.inf, *np.linspace(0, 15, 31), np.inf]
    counts, _, _ = np.histogram2d(x, y, bins=[xEdges, np.linspace(0, 1, 11)])
    sumX, _, _ = np.histogram2d(x, y, bins=[xEdges, np.linspace(0, 1, 11)], weights=x)
    np.testing.assert_array_equal(merged.hists["n"].values(flow=True), counts)
    np.testing.assert_allclose(merged.hists["sumX"].values(flow=True), sumX, rtol=1e-12)
    assert merged.nEvents == 300


def test_files_are_merged_in_worker_order():
    spec = SummarySpec(files={"text": lambda text: None})
    payloads = []
    for word in ("first", "second"):
        summary = spec.empty()
        summary.files["text"] = [word]
        payloads.append(summary.to_payload())
    assert Summary.merge_payloads(payloads, spec).files["text"] == ["first", "second"]


def sum_bin(payload, name):
    """Position in the payload of the first filled bin of a sum histogram."""
    return payload["hists"][name]["index"][0]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p.update(version=1), "version"),
        (lambda p: p["hists"].pop("e"), "missing ['e']"),
        (lambda p: p["hists"]["e"]["axes"][0].__setitem__(0, 10), "binning"),
        (lambda p: p["hists"]["n"]["axes"][1].__setitem__(3, True), "binning"),
        (lambda p: p["hists"]["e"]["index"].pop(), "indices for"),
        (lambda p: p["hists"]["e"]["index"].__setitem__(0, 10_000), "increasing whole bin numbers"),
        (lambda p: p["hists"]["e"]["index"].reverse(), "increasing whole bin numbers"),
        (lambda p: p["hists"]["e"]["values"].__setitem__(3, -1), "negative"),
        (lambda p: p["hists"]["e"]["values"].__setitem__(3, "7"), "numbers"),
        (lambda p: p["hists"]["e"]["values"].__setitem__(3, float("nan")), "NaN"),
        (lambda p: p["hists"]["e"].update(index=list(range(30)), values=[1] * 30), "more than the 22 bins"),
        (lambda p: p["hists"]["sumX"]["values"].__setitem__(0, p["hists"]["sumX"]["values"][0] + 40.0), "outside the bin"),
        (lambda p: p["hists"]["sumY"]["values"].__setitem__(0, 1e6), "outside the bin"),
        (lambda p: p["hists"]["n"].update(index=p["hists"]["n"]["index"][1:], values=p["hists"]["n"]["values"][1:]),
         "counted nothing"),
        (lambda p: p["hists"]["e"].update(extra=1), "must be a dict of"),
        (lambda p: p.update(nEvents=-1), "nEvents"),
        (lambda p: p.update(extra=1), "unknown fields"),
    ],
)
def test_malformed_reports_are_rejected_with_the_reason(mutate, message):
    payload = make(2).to_payload()
    Summary.from_payload(payload, SPEC)  # the unmodified report is fine
    mutate(payload)
    with pytest.raises(SummaryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Summary.from_payload(payload, SPEC)


def test_a_sum_histogram_needs_its_count_histogram():
    with pytest.raises(ValueError, match="count histogram 'missing'"):
        SummarySpec(hists={"s": HistSpec(5, 0.0, 1.0, sumOf=("missing", 0))})
    with pytest.raises(ValueError, match="sums axis 1"):
        SummarySpec(hists={"n": HistSpec(5, 0.0, 1.0), "s": HistSpec(5, 0.0, 1.0, sumOf=("n", 1))})


def test_bootstrap_replicas_redraw_counts_and_keep_the_bin_means():
    summary = make(3, n=2000)
    counts = summary.hists["n"].values(flow=True)
    means = np.divide(summary.hists["sumX"].values(flow=True), counts, out=np.zeros_like(counts), where=counts > 0)
    rng = np.random.default_rng(7)
    replicas = [summary.resampled(SPEC, rng) for _ in range(400)]
    drawn = np.array([r.hists["n"].values(flow=True) for r in replicas])
    filled = counts > 0
    # Poisson: mean and variance both the observed count, bin by bin (pooled over the bins)
    assert drawn.mean(axis=0)[filled].sum() == pytest.approx(counts.sum(), rel=0.01)
    assert drawn.var(axis=0, ddof=1)[filled].sum() == pytest.approx(counts.sum(), rel=0.05)
    assert np.all(drawn[:, ~filled] == 0)
    for replica in replicas[:20]:
        n = replica.hists["n"].values(flow=True)
        kept = n > 0
        np.testing.assert_allclose(replica.hists["sumX"].values(flow=True)[kept] / n[kept], means[kept], rtol=1e-12)
        assert np.all(replica.hists["sumY"].values(flow=True)[~kept] == 0)
    total = np.array([r.hists["e"].values(flow=True).sum() for r in replicas])
    assert total.std(ddof=1) == pytest.approx(math.sqrt(2000), rel=0.15)
