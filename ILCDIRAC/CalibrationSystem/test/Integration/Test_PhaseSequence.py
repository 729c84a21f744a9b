"""The phase sequence is data: start/stop stage and phase and a user's own sequence are honoured
by both strategies (in-process: service logic, real workers, the emulator)."""
import pytest

from ILCDIRAC.CalibrationSystem.localdirac.configurations import CONFIGURATIONS


def phases_run(outcome):
    return [key for step in outcome.steps for key in step["Phases"]]


@pytest.mark.parametrize("strategy", ["legacy", "fast"])
def test_start_and_stop_cut_the_default_sequence(tmp_path, strategy):
    configuration = CONFIGURATIONS[1]
    outcome = configuration.calibrate(tmp_path, strategy, startStage=1, startPhase=3, stopStage=1, stopPhase=4)
    assert outcome.status == "finished", outcome.reason
    assert set(phases_run(outcome)) == {"1.3", "1.4"}
    start = outcome.steps[0]["Constants"]
    # only the EM and hadronic scales were calibrated; digitisation and MIP constants untouched
    for name in ("CalibrECAL", "CalibrHCALBarrel", "ECalToMipCalibration", "CalibrHCALOther"):
        assert outcome.constants[name] == start[name]
    for name in ("ECalToEMGeVCalibration", "HCalToHadGeVCalibration"):
        assert outcome.constants[name] != start[name]


@pytest.mark.parametrize("strategy", ["legacy", "fast"])
def test_a_users_own_sequence_runs_exactly_those_phases_in_order(tmp_path, strategy):
    configuration = CONFIGURATIONS[1]
    outcome = configuration.calibrate(tmp_path, strategy, phaseSequence=["1.1", "1.0"])
    assert outcome.status == "finished", outcome.reason
    run = phases_run(outcome)
    assert set(run) == {"1.0", "1.1"}
    if strategy == "legacy":
        assert run.index("1.1") < run.index("1.0")  # the user's order, one phase at a time
    assert outcome.constants["ECalToEMGeVCalibration"] == outcome.steps[0]["Constants"]["ECalToEMGeVCalibration"]
