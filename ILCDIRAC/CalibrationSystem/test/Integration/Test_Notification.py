"""The owner is mailed once when a calibration finishes or fails, never twice.

A real service on MariaDB; the agent's cycle runs in this process as the host (its DIRAC
start-up skipped) against that service; the Registry (with the owners' Email) is the test bed's
configuration. Only the mail transport is replaced: DIRAC's NotificationClient, by a recorder of
exactly what would have been sent (and which can refuse, as a down mail server does).
"""
from __future__ import annotations

import pytest
from DIRAC import gLogger

from ILCDIRAC.CalibrationSystem.Agent import CalibrationAgent as agent_module
from ILCDIRAC.CalibrationSystem.Agent.CalibrationAgent import CalibrationAgent
from ILCDIRAC.CalibrationSystem.Client.Submission import collect_input_files
from ILCDIRAC.CalibrationSystem.localdirac.scenario import Scenario
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import (
    FAST_WORKERS,
    require_mariadb,
)
from ILCDIRAC.CalibrationSystem.test.Integration.Test_Commands import (
    SETTINGS,
    TRUTH,
    create_idle,
)
from ILCDIRAC.CalibrationSystem.Utilities.settings import load_settings

ALICE = "alice@example.org"
REGISTRY = f"Registry\n{{\n  Users\n  {{\n    alice\n    {{\n      Email = {ALICE}\n    }}\n  }}\n}}\n"
SENDER = "calibration@example.org"


class Mailer:
    """NotificationClient without a mail server: records sendMail calls; refuses while ``down``."""

    sent: list[tuple] = []
    down = 0

    def sendMail(self, addresses, subject, body, fromAddress=None, localAttempt=True, html=False):
        if Mailer.down:
            Mailer.down -= 1
            return {"OK": False, "Message": "Connection refused by the mail server"}
        Mailer.sent.append((addresses, subject, body, fromAddress))
        return {"OK": True, "Value": "sent"}


@pytest.fixture(scope="module")
def bed():
    require_mariadb()
    with Testbed(service_options=FAST_WORKERS, extra_cfg=REGISTRY) as testbed:
        testbed.start_service()
        yield testbed


@pytest.fixture
def mails(monkeypatch):
    Mailer.sent, Mailer.down = [], 0
    monkeypatch.setattr(agent_module, "NotificationClient", Mailer)
    return Mailer


def agent(bed) -> CalibrationAgent:
    """A fresh agent (as after a restart): nothing but the service remembers what it did."""
    instance = object.__new__(CalibrationAgent)
    instance.client = bed.rpc("host")
    instance.log = gLogger.getSubLogger("CalibrationAgent")
    instance.stallTimeout, instance.deleteAfterDays, instance.localDir = 14400.0, 30.0, bed.local_dir
    instance.mailFrom = SENDER
    return instance


def mails_for(mailer, calibrationID):
    return [m for m in mailer.sent if m[1].startswith(f"Calibration {calibrationID} ")]


def test_a_failed_calibration_is_mailed_once_with_its_reason_also_after_a_restart(bed, mails, tmp_path):
    calibrationID = create_idle(bed, tmp_path)
    reason = "too many workers failed: 3 of 4 (maxFailedWorkerFraction 0.5)"
    assert bed.rpc("host").failCalibration(calibrationID, reason)["OK"]
    mails.down = 1  # the first attempt meets a down mail server: released, tried next cycle
    first = agent(bed)
    first.execute()
    assert mails_for(mails, calibrationID) == []
    first.execute()
    agent(bed).execute()  # a restarted agent
    bed.restart_service()
    agent(bed).execute()  # and a restarted service
    sent = mails_for(mails, calibrationID)
    assert len(sent) == 1
    address, subject, body, sender = sent[0]
    assert (address, subject, sender) == (ALICE, f"Calibration {calibrationID} failed", SENDER)
    assert f"your calibration {calibrationID} failed at step 1." in body
    assert f"Reason: {reason}\n" in body
    assert f"dirac-clic-calibration-status {calibrationID}\n" in body


def test_a_finished_calibration_is_mailed_after_delivery_saying_where_the_results_are(bed, mails, tmp_path):
    scenario = Scenario(bed, tmp_path, TRUTH, {"gamma": (2, 100)}, {**SETTINGS, "numberOfJobs": 2})
    calibrationID = scenario.submit()
    status = scenario.wait(calibrationID, timeout=300)
    assert status["status"] == "finished", scenario.logs(calibrationID)
    agent(bed).execute()  # delivers the results (below the agent's LocalBackendDir)
    agent(bed).execute()  # then tells the owner where they went
    agent(bed).execute()
    sent = mails_for(mails, calibrationID)
    assert len(sent) == 1, sent
    address, subject, body, _ = sent[0]
    assert (address, subject) == (ALICE, f"Calibration {calibrationID} finished")
    folder = bed.local_dir / "results" / f"calibration_{calibrationID}"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert f"Results: copied {len(files)} files to {folder}.\n" in body
    assert f"finished after {status['step']} steps." in body
    assert f"dirac-clic-calibration-results {calibrationID}\n" in body


def test_no_mail_when_switched_off_killed_or_without_an_address(bed, mails, tmp_path):
    quiet = Scenario(bed, tmp_path / "quiet", TRUTH, {"gamma": (2, 100)}, {**SETTINGS, "notifyByMail": False})
    path = quiet.prepare()
    resolved = load_settings(path).to_dict()
    off = bed.rpc("alice").createCalibration(resolved, collect_input_files(resolved, path.parent))["Value"]
    killed, bobs = create_idle(bed, tmp_path / "killed"), create_idle(bed, tmp_path / "bob", user="bob")
    host = bed.rpc("host")
    assert host.failCalibration(off, "failed, but the owner asked for no mail")["OK"]
    assert bed.rpc("alice").killCalibration(killed)["OK"]
    assert host.failCalibration(bobs, "bob has no Email in the Registry")["OK"]
    agent(bed).execute()
    agent(bed).execute()
    assert [m for i in (off, killed, bobs) for m in mails_for(mails, i)] == []
    # bob's mail was due and is settled (no address): not looked up again every cycle
    assert host.claimNotification(bobs)["Value"] is False
    assert host.claimNotification(off)["Value"] is True  # never claimed: switched off


def test_only_an_ended_calibration_can_be_claimed(bed, tmp_path):
    running = create_idle(bed, tmp_path)
    refused = bed.rpc("host").claimNotification(running)
    assert not refused["OK"] and f"calibration {running} is still running" in refused["Message"]
