"""The service facade on a real SQLite CalibrationDB: what every RPC answers for a wrong number or
type of arguments, a refusal of the logic and an internal error, and who counts as an
administrator. The DISET handler and the in-process driver both answer through it."""
import errno
import re

import pytest
from sqlalchemy import text

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import CALLER, STEERING, input_files
from ILCDIRAC.CalibrationSystem.logic.service import AGENT_RPCS, RPC_TYPES, CalibrationService
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict


@pytest.fixture
def service(tmp_path):
    return CalibrationService(CalibrationDB(f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}"),
                              adminProperties=frozenset({"JobAdministrator"}),
                              localBackendUsers=frozenset({CALLER.username}))


@pytest.fixture
def calibrationID(service):
    settings = settings_from_dict({"detectorModel": "CLD", "backend": "local", "numberOfJobs": 2,
                                   "steeringFile": str(STEERING), "phaseSequence": ["1.0"],
                                   "gammaFiles": ["a.slcio", "b.slcio"], "gammaEventsPerFile": 10}).to_dict()
    created = service.createCalibration(CALLER, settings, input_files(settings))
    assert created["OK"], created
    return created["Value"]


def refusal(result, message):
    assert not result["OK"] and result["Errno"] == errno.EINVAL, result
    assert result["Message"] == message
    return result


def test_every_rpc_refuses_a_wrong_number_of_arguments_before_anything_runs(service):
    for name, types in RPC_TYPES.items():
        refusal(getattr(service, name)(CALLER, *([0] * (len(types) + 1))),
                f"{name} takes {len(types)} arguments, not {len(types) + 1}")


def test_an_argument_of_the_wrong_type_is_refused_with_its_position(service, calibrationID):
    refusal(service.submitResult(CALLER, calibrationID, 1, 0, "my report"),
            "submitResult: argument 3 must be a dict, not a str")
    refusal(service.getStepParameters(CALLER, str(calibrationID), 0, 0), "getStepParameters: argument 0 must be a int, not a str")


def test_the_logic_s_refusal_keeps_its_message_and_an_answer_is_s_ok(service, calibrationID):
    refusal(service.getStepParameters(CALLER, calibrationID, 7, 0),
            f"worker ID 7 is not one of the 2 workers of calibration {calibrationID}")
    answer = service.getStepParameters(CALLER, calibrationID, 1, 0)
    assert answer["OK"] and answer["Value"]["action"] == "run" and answer["Value"]["step"] == 1


def test_an_internal_error_answers_only_an_error_id(service, calibrationID):
    with service.db.engine.begin() as conn:
        conn.execute(text("DROP TABLE Workers"))
    answer = service.getCalibrationStatus(CALLER, [calibrationID])
    assert not answer["OK"] and answer.get("Errno") != errno.EINVAL, "not a refusal: a worker may retry"
    assert re.fullmatch(r"internal error [0-9a-f]{12} in getCalibrationStatus: the details are in the service log",
                        answer["Message"]), answer["Message"]


def test_administrators_are_the_admin_property_holders_and_trusted_hosts(service):
    def caller(properties, username="someone"):
        return service.caller({"DN": f"/CN={username}", "username": username, "group": "g",
                               "properties": properties}, "/ilc/user/s/someone")

    assert [caller(p).isAdmin for p in (["NormalUser"], ["JobAdministrator"], ["TrustedHost"])] == [False, True, True]
    assert caller(["NormalUser"]).userHome == "/ilc/user/s/someone"
    assert (caller([], CALLER.username).localBackend, caller([]).localBackend) == (True, False)


def test_the_agent_rpcs_are_the_supervision_methods():
    assert AGENT_RPCS == {"closeReadySteps", "getAgentWork", "setWorkerStates", "failCalibration",
                          "finalizeCalibration", "markDelivered", "removeCalibrationData", "claimNotification",
                          "releaseNotification"}
