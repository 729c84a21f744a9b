"""The state machine over (stage, phase, step), driven by a detector whose response is known exactly."""
import pytest

from ILCDIRAC.CalibrationSystem.Utilities.phases import Measurement, PhaseContext
from ILCDIRAC.CalibrationSystem.Utilities.procedure import FAILED, FINISHED, RUNNING, ProcedureState, advance, start

CTX = PhaseContext(
    energies={"gamma": 10.0, "kaon": 50.0, "muon": 10.0, "zuds": 200.0},
    digitisationAccuracy=0.02,
    pandoraPFAAccuracy=0.005,
    ecalBarrelCosThetaRange=(0.0, 0.643),
    ecalEndcapCosThetaRange=(0.766, 0.94),
    hcalBarrelCosThetaRange=(0.15, 0.485),
    hcalEndcapCosThetaRange=(0.72, 0.94),
    nHcalLayers=44,
    nEcalThinLayers=40,
    nEcalThickLayers=0,
    ecalResponseCorrectionForThickLayers=1.0,
    hcalThicknessRatio=1.0,
)
TRUE_BARREL, TRUE_ENDCAP_FACTOR = 40.0, 1.05
START = {"CalibrECAL": [34.0, 34.0], "ECALEndcapCorrectionFactor": 1.0, "CalibrHCALBarrel": 45.0, "CalibrHCALEndcap": 46.0}
TRUE_HCAL = {"CalibrHCALBarrel": 50.0, "CalibrHCALEndcap": 48.0}
T_K0L = 50.0 - 0.497672


def measure(state):
    """A detector that responds exactly proportionally to its digitisation constants."""
    c = state.constants
    out = {}
    for key in state.active:
        if key.endswith(".0"):
            barrel = c["CalibrECAL"][0]
            endcap = barrel * c["ECALEndcapCorrectionFactor"]
            out[key] = Measurement({"barrelMean": 10.0 * barrel / TRUE_BARREL,
                                    "endcapMean": 10.0 * endcap / (TRUE_BARREL * TRUE_ENDCAP_FACTOR)})
        else:
            out[key] = Measurement({f"{r}Mean": T_K0L * c[f"CalibrHCAL{r.capitalize()}"] / TRUE_HCAL[f"CalibrHCAL{r.capitalize()}"]
                                    for r in ("barrel", "endcap")})
    return out


def run(strategy, sequence=("1.0", "1.1"), maxIterations=30):
    state = start(list(sequence), START, strategy, maxIterations)
    outcomes = []
    while state.status == RUNNING:
        state, outcome = advance(state, measure(state), CTX)
        outcomes.append(outcome)
    return state, outcomes


@pytest.mark.parametrize("strategy, steps", [("legacy", 4), ("fast", 1)])
def test_digitisation_phases_converge_to_the_truth(strategy, steps):
    state, outcomes = run(strategy)
    assert state.status == FINISHED and state.active == []
    assert len(outcomes) == steps
    assert [o.step for o in outcomes] == list(range(1, steps + 1))
    assert state.constants["CalibrECAL"][0] == pytest.approx(TRUE_BARREL, rel=1e-9)
    assert state.constants["ECALEndcapCorrectionFactor"] == pytest.approx(TRUE_ENDCAP_FACTOR, rel=1e-9)
    assert state.constants["CalibrHCALEndcap"] == pytest.approx(48.0, rel=1e-9)
    # the history keeps what each step ran with and what it produced
    assert outcomes[0].constantsBefore["CalibrECAL"] == [34.0, 34.0]
    assert outcomes[-1].constantsAfter == state.constants


def test_legacy_applies_the_update_even_on_the_passing_step_and_advances_in_order():
    state, outcomes = run("legacy")
    assert [o.active for o in outcomes] == [["1.0"], ["1.0"], ["1.1"], ["1.1"]]
    assert [o.completed for o in outcomes] == [[], ["1.0"], [], ["1.1"]]


def test_state_round_trips_through_json_shape():
    state = start(["1.0"], START, "legacy", 30)
    assert ProcedureState.from_dict(state.to_dict()) == state


def test_a_phase_that_never_converges_fails_with_the_reason():
    state = start(["1.0"], START, "legacy", 3)
    while state.status == RUNNING:
        state, _ = advance(state, {"1.0": Measurement({"barrelMean": 12.0, "endcapMean": 12.0})}, CTX)
    assert state.status == FAILED
    assert "1.0 (ECalDigitisation) did not converge in 3 iterations" in state.reason
    assert state.iterations == {"1.0": 3}


def test_an_estimator_failure_fails_the_calibration():
    state = start(["1.0"], START, "legacy", 30)
    state, outcome = advance(state, {"1.0": Measurement({}, ok=False, reason="histogram is empty")}, CTX)
    assert state.status == FAILED and "histogram is empty" in state.reason
    assert outcome.constantsAfter == outcome.constantsBefore


def test_bad_sequences_and_calls_are_refused():
    with pytest.raises(ValueError, match="empty"):
        start([], START, "legacy", 30)
    with pytest.raises(ValueError, match="twice"):
        start(["1.0", "1.0"], START, "legacy", 30)
    with pytest.raises(ValueError, match="unknown strategy"):
        start(["1.0"], START, "quick", 30)
    state = start(["1.0"], START, "legacy", 30)
    with pytest.raises(ValueError, match="no measurement"):
        advance(state, {}, CTX)
