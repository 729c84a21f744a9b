"""Issue 2's proof: phase 1.0 (ECAL digitisation) end to end on real parts.

A real DISET service over TLS with a MariaDB database, the real submit command run as a user,
four local worker processes running the emulator through the reconstruction contract, the
threshold at 0.75. The calibration must converge to the emulator's true constants, and the
database must hold every step with the constants it ran with.
"""
import itertools

import pytest

from ILCDIRAC.CalibrationSystem.localdirac.scenario import Scenario, shifted_truth

TRUTH_FACTORS = {"CalibrECAL": 1.15, "ECALEndcapCorrectionFactor": 0.96}


@pytest.fixture(scope="module")
def calibration(testbed, tmp_path_factory):
    truth = shifted_truth("FCCee_o1_v04", TRUTH_FACTORS)
    scenario = Scenario(
        testbed,
        tmp_path_factory.mktemp("photons"),
        truth,
        samples={"gamma": (4, 600)},
        settings={
            "numberOfJobs": 4,
            "fractionOfFinishedJobsNeededToStartNextStep": 0.75,
            "phaseSequence": ["1.0"],
            "strategy": "legacy",
        },
    )
    calibrationID = scenario.submit()
    status = scenario.wait(calibrationID, timeout=300)
    return scenario, calibrationID, status, truth


def test_ecal_digitisation_converges_to_the_truth(calibration):
    scenario, calibrationID, status, truth = calibration
    assert status["status"] == "finished", scenario.logs(calibrationID)
    accuracy = 0.05  # digitisationAccuracy default
    final = status["constants"]
    trueBarrel = truth.trueConstants.CalibrECAL[0]
    trueEndcap = truth.trueConstants.ECALEndcapCorrectionFactor
    assert abs(final["CalibrECAL"][0] / trueBarrel - 1) < accuracy
    assert abs(final["ECALEndcapCorrectionFactor"] / trueEndcap - 1) < accuracy
    # the start was 15 % (barrel) away: the calibration really moved the constants
    start = scenario.history(calibrationID)[0]["constants"]
    assert abs(start["CalibrECAL"][0] / trueBarrel - 1) > 0.1


def test_every_step_is_in_the_database_with_its_constants(calibration, testbed):
    scenario, calibrationID, status, truth = calibration
    from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB

    steps = CalibrationDB(testbed.db_url).getSteps(calibrationID)
    assert [s["Step"] for s in steps] == list(range(1, len(steps) + 1))
    assert len(steps) >= 2  # legacy: a start outside tolerance needs an update and a confirmation
    assert all(s["Status"] == "closed" and s["NResults"] >= 3 for s in steps)
    for before, after in itertools.pairwise(steps):
        # each step ran with exactly the constants the previous step's update produced
        assert after["Constants"] == before["Outcome"]["constantsAfter"]
    last = steps[-1]["Outcome"]
    assert last["status"] == "finished" and last["completed"] == ["1.0"]
    assert last["constantsAfter"] == status["constants"]
    measured = steps[0]["Outcome"]["measurements"]["1.0"]["values"]
    # the first step measured the miscalibration: ~15 % too much barrel energy
    assert measured["barrelMean"] == pytest.approx(10.0 * 1.0 / 1.15, rel=0.03)


def test_workers_ended_with_the_calibration(calibration, testbed):
    scenario, calibrationID, status, truth = calibration
    from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB

    scenario.wait_for_workers(calibrationID, {"finished"}, timeout=60)
    workers = CalibrationDB(testbed.db_url).getWorkers(calibrationID)
    assert {w["ApplicationStatus"] for w in workers} == {f"PandoraCalib_{calibrationID}: Calibration is finished."}
    assert all(w["JobID"].startswith("local:") for w in workers)
    # the status command shows the same per worker, as the DIRAC job monitor would
    shown = scenario.run_command("dirac-clic-calibration-status", str(calibrationID))
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "Calibration is finished." in line]
    assert len(rows) == 4 and all(w["JobID"] in shown.stdout for w in workers)
