"""Statistical power up front (the dry run's estimate) and at the end (constants marked where
their uncertainty exceeds the accuracy asked for)."""
import math

import pytest
import yaml

from ILCDIRAC.CalibrationSystem.Client.Status import format_constants
from ILCDIRAC.CalibrationSystem.Client.Submission import power_report
from ILCDIRAC.CalibrationSystem.logic.results import exceeding_accuracy
from ILCDIRAC.CalibrationSystem.Utilities.power import expected_power
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict


def settings(events=1000, files=4, **changes):
    """CLD settings with ``files`` files of ``events`` events per sample (no file is read)."""
    values = {"detectorModel": "CLD", "steeringFile": "steering.xml", "backend": "local", "numberOfJobs": files,
              "fractionOfFinishedJobsNeededToStartNextStep": 1.0, "digitisationAccuracy": 0.02,
              "pandoraPFAAccuracy": 0.005}
    for sample in ("gamma", "kaon", "muon", "zuds"):
        values[f"{sample}Files"] = [f"/ilc/user/x/{sample}_{i}.slcio" for i in range(files)]
        values[f"{sample}EventsPerFile"] = events
    values.update(changes)
    return settings_from_dict(values).to_dict()


def by_constant(estimates):
    return {e.constant: e for e in estimates}


def test_every_fitted_constant_is_estimated_once_per_phase_in_sequence_order():
    estimates = expected_power(settings())
    assert [e.phase for e in estimates] == ["1.0", "1.0", "1.1", "1.1", "1.2", "1.3", "1.4", "1.4"]
    assert {e.constant: e.sample for e in estimates} == {
        "CalibrECAL": "gamma", "ECALEndcapCorrectionFactor": "gamma", "CalibrHCALBarrel": "kaon",
        "CalibrHCALEndcap": "kaon", "CalibrHCALOther": "kaon", "ECalToEMGeVCalibration": "gamma",
        "ECalToHadGeVCalibrationBarrel": "kaon", "HCalToHadGeVCalibration": "kaon"}
    assert all(e.events == 4000 for e in estimates)
    assert by_constant(estimates)["CalibrECAL"].accuracy == 0.02
    assert by_constant(estimates)["ECalToHadGeVCalibrationBarrel"].setting == "pandoraPFAAccuracy"


def test_precision_follows_the_events_the_windows_and_the_energy():
    base = by_constant(expected_power(settings()))
    four = by_constant(expected_power(settings(events=4000)))
    for name, estimate in base.items():
        assert four[name].relative == pytest.approx(estimate.relative / 2, rel=1e-12), name
    # only the results of the first 75 % of the workers are used in a step
    partial = by_constant(expected_power(settings(fractionOfFinishedJobsNeededToStartNextStep=0.75)))
    assert partial["CalibrECAL"].relative == pytest.approx(base["CalibrECAL"].relative / math.sqrt(0.75))
    # a barrel window half as wide holds half the photons
    narrow = by_constant(expected_power(settings(ecalBarrelCosThetaRange=[0.0, 0.3215])))
    assert narrow["CalibrECAL"].relative == pytest.approx(base["CalibrECAL"].relative * math.sqrt(2))
    # resolution ~ 1 / sqrt(E): 40 GeV photons are twice as precise
    hot = by_constant(expected_power(settings(gammaEnergy=40.0)))
    assert hot["ECalToEMGeVCalibration"].relative == pytest.approx(base["ECalToEMGeVCalibration"].relative / 2)


def test_a_sample_too_small_for_the_accuracy_is_named_with_the_events_it_needs():
    estimates = by_constant(expected_power(settings()))
    ecal = estimates["ECalToHadGeVCalibrationBarrel"]
    assert not ecal.sufficient and ecal.relative > 0.005
    assert ecal.eventsNeeded == math.ceil(4000 * (ecal.relative / 0.005) ** 2)
    assert estimates["CalibrECAL"].sufficient
    enough = by_constant(expected_power(settings(events=ecal.eventsNeeded // 4 + 1)))
    assert enough["ECalToHadGeVCalibrationBarrel"].sufficient
    report = power_report(settings())
    assert f"The kaon sample is too small for the requested accuracy: 4000 events, about {ecal.eventsNeeded} needed." in report
    assert "gamma sample is too small" not in report
    # comments only: the dry run's output still loads as the resolved settings
    assert yaml.safe_load(report) is None and all(line.startswith("#") for line in report.splitlines())


def test_a_phase_sequence_without_estimates_says_so():
    report = power_report(settings(phaseSequence=["1.0", "2.5"]))
    assert "CalibrECAL" in report and "PhotonTraining" not in report
    assert "too small" not in report
    assert "(no phase of this sequence has an estimate)" in power_report(settings(phaseSequence=["2.5"]))


def test_constants_whose_uncertainty_exceeds_their_accuracy_are_marked():
    resolved = settings()
    constants = {"CalibrECAL": [40.0, 40.0], "ECalToHadGeVCalibrationBarrel": 1.2, "HCalToHadGeVCalibration": 1.1,
                 "ECalToMipCalibration": 160.0}
    uncertainties = {"CalibrECAL": 0.79, "ECalToHadGeVCalibrationBarrel": 0.012, "HCalToHadGeVCalibration": 0.0054}
    exceeding = exceeding_accuracy(constants, uncertainties, resolved)
    assert set(exceeding) == {"ECalToHadGeVCalibrationBarrel"}  # 1.98 % < 2 %, 0.49 % < 0.5 %: not marked
    entry = exceeding["ECalToHadGeVCalibrationBarrel"]
    assert entry["relative"] == pytest.approx(0.01) and entry["accuracy"] == 0.005
    assert (entry["setting"], entry["samples"]) == ("pandoraPFAAccuracy", ["kaon"])
    assert entry["eventsFactor"] == pytest.approx(4.0)
    printed = format_constants(constants, uncertainties, exceeding).splitlines()
    assert printed[1].split() == ["ECalToHadGeVCalibrationBarrel", "1.2", "+-", "0.012", "!"]
    assert printed[0].split()[-1] == "0.79" and printed[3].split() == ["HCalToHadGeVCalibration", "1.1", "+-", "0.0054"]
    assert printed[-1] == ("  ! ECalToHadGeVCalibrationBarrel: uncertainty 1 % exceeds the requested pandoraPFAAccuracy "
                           "0.5 %; about 4 times the kaon events would reach it")
