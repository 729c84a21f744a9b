"""Worker summaries: exact transport, strict validation, deterministic merge."""
import json

import numpy as np
import pytest

from ILCDIRAC.CalibrationSystem.Utilities.summary import HistSpec, Summary, SummaryError, SummarySpec

SPEC = SummarySpec(hists={"e": HistSpec(20, 0.0, 10.0)}, arrays=("x", "y"))


def make(seed, n=100):
    rng = np.random.default_rng(seed)
    summary = SPEC.empty()
    summary.hists["e"].fill(rng.normal(5, 3, n))
    summary.arrays["x"] = rng.normal(size=n).astype(np.float32)
    summary.arrays["y"] = rng.normal(size=n).astype(np.float32)
    summary.nEvents = n
    return summary


def test_payload_round_trip_is_exact_and_json_safe():
    summary = make(1)
    payload = json.loads(json.dumps(summary.to_payload()))
    back = Summary.from_payload(payload, SPEC)
    np.testing.assert_array_equal(back.hists["e"].values(flow=True), summary.hists["e"].values(flow=True))
    np.testing.assert_array_equal(back.arrays["x"], summary.arrays["x"])
    assert back.nEvents == 100
    # flow bins travel too: values outside [0, 10) are not silently lost
    assert back.hists["e"].values(flow=True)[0] > 0 and back.hists["e"].values(flow=True)[-1] > 0


def test_merge_adds_histograms_and_concatenates_arrays_in_order():
    parts = [make(seed) for seed in range(3)]
    merged = Summary.merge(parts, SPEC)
    np.testing.assert_array_equal(merged.hists["e"].values(), sum(p.hists["e"].values() for p in parts))
    np.testing.assert_array_equal(merged.arrays["y"], np.concatenate([p.arrays["y"] for p in parts]))
    assert merged.nEvents == 300


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p.update(version=7), "version"),
        (lambda p: p["hists"].pop("e"), "missing ['e']"),
        (lambda p: p["hists"]["e"].update(bins=10), "binning"),
        (lambda p: p["hists"]["e"]["counts"].pop(), "expected 22"),
        (lambda p: p["hists"]["e"]["counts"].__setitem__(3, -1), "negative"),
        (lambda p: p["hists"]["e"]["counts"].__setitem__(3, "7"), "numbers"),
        (lambda p: p["arrays"]["x"].append(1.0), "different lengths"),
        (lambda p: p["arrays"]["x"].__setitem__(0, float("nan")), "NaN"),
        (lambda p: p.update(nEvents=-1), "nEvents"),
        (lambda p: p.update(extra=1), "unknown fields"),
    ],
)
def test_malformed_reports_are_rejected_with_the_reason(mutate, message):
    payload = make(2).to_payload()
    mutate(payload)
    with pytest.raises(SummaryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Summary.from_payload(payload, SPEC)
