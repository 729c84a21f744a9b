"""What a worker gets once: only the user's input files, and nothing for an ended calibration."""
import pytest

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import CALLER, STEERING, input_files
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict


@pytest.fixture
def calibration(tmp_path):
    db = CalibrationDB(f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}")
    settings = settings_from_dict({"detectorModel": "CLD", "backend": "local", "numberOfJobs": 2,
                                   "steeringFile": str(STEERING), "phaseSequence": ["1.0"],
                                   "gammaFiles": ["a.slcio", "b.slcio"], "gammaEventsPerFile": 10}).to_dict()
    calibrationID = logic.create_calibration(db, CALLER, settings, input_files(settings))
    return db, calibrationID, settings


def test_setup_carries_the_input_files_but_not_artifacts_or_results(calibration):
    db, calibrationID, settings = calibration
    db.putFile(calibrationID, "step9_PandoraLikelihoodData.xml", b"<likelihood/>")
    db.putFile(calibrationID, "result_convergence.png", b"\x89PNG\r\n\x1a\n\x00binary")
    db.putFile(calibrationID, "result_PandoraSettings/PandoraSettingsDefault.xml", b"<pandora/>")
    setup = logic.worker_setup(db, CALLER, calibrationID, 1, {"minimum": 1})
    assert setup["files"] == input_files(settings)
    assert set(setup["files"]) == {"steering.xml", "PandoraSettings/PandoraSettingsDefault.xml",
                                   "PandoraSettings/PandoraLikelihoodData9EBin.xml"}, "no training settings: 1.0 only"
    assert setup["samples"]["gamma"] == {"files": ["b.slcio"], "skip": 0, "events": 10}
    assert setup["polling"] == {"minimum": 1}


def test_an_ended_calibration_gives_no_setup(calibration):
    db, calibrationID, _ = calibration
    db.setCalibrationStatus(calibrationID, "killed", "killed by physicist")
    with pytest.raises(logic.CalibrationError, match="is killed: no work for a worker"):
        logic.worker_setup(db, CALLER, calibrationID, 0, {})
