"""The DIRAC grid backend builds real iLCDirac user jobs; only the WMS (the grid) is replaced.

The jobs go through the real ``UserJob`` and ``DiracILC`` (proxy group check, software check
against the CS, JDL generation); the WMS client that would send the JDL to the grid records it
instead, and the tests assert on exactly that JDL.
"""
import os
import tarfile

import pytest
from DIRAC import S_OK

from ILCDIRAC.CalibrationSystem.Client.Backends import BUNDLE_NAME, DiracBackend, job_group, job_name
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed

RELEASE = "ILCSoft-2019-07-09_gcc62"
PLATFORM = "x86_64-el9-gcc13-opt"
CS = f"""
Resources
{{
  Computing
  {{
    OSCompatibility
    {{
      x86_64-slc5-gcc43-opt = x86_64-slc5-gcc43-opt
      {PLATFORM} = {PLATFORM}
    }}
  }}
}}
Operations
{{
  Defaults
  {{
    AvailableTarBalls
    {{
      {PLATFORM}
      {{
        marlin
        {{
          {RELEASE}
          {{
            CVMFSPath = /cvmfs/clicdp.cern.ch/iLCSoft/builds/2019-07-09/x86_64-slc6-gcc62-opt
            CVMFSEnvScript = /cvmfs/clicdp.cern.ch/iLCSoft/builds/2019-07-09/x86_64-slc6-gcc62-opt/init_ilcsoft.sh
          }}
        }}
      }}
    }}
  }}
}}
"""


class RecordingWMS:
    """Stands in for the grid's WMS: records every JDL it is asked to submit."""

    submitted: list[str] = []
    workflows: list[str] = []

    def __init__(self, *args, **kwargs):
        pass

    def submitJob(self, jdl, jobDescriptionObject=None):
        RecordingWMS.submitted.append(jdl)
        RecordingWMS.workflows.append(jobDescriptionObject.getvalue() if jobDescriptionObject else "")
        return S_OK(1000 + len(RecordingWMS.submitted))


@pytest.fixture(scope="module")
def grid_user(tmp_path_factory):
    """alice with an ilc_user proxy (iLCDirac refuses to submit user jobs with other groups)."""
    from DIRAC.Core.Security.X509Chain import X509Chain

    with Testbed(database="sqlite", extra_cfg=CS) as testbed:
        identity = testbed.identity("alice")
        proxy = tmp_path_factory.mktemp("proxy") / "ilc_user.pem"
        chain = X509Chain()
        chain.loadChainFromFile(str(identity.cert))
        chain.loadKeyFromFile(str(identity.key))
        assert chain.generateProxyToFile(str(proxy), 3600, diracGroup="ilc_user")["OK"]
        previous = os.environ.get("X509_USER_PROXY")
        os.environ["X509_USER_PROXY"] = str(proxy)
        with testbed.activated():
            yield testbed
        if previous is None:
            os.environ.pop("X509_USER_PROXY")
        else:
            os.environ["X509_USER_PROXY"] = previous


def settings(**overrides):
    values = {"cpuTime": 7200, "platform": PLATFORM, "marlinVersion": RELEASE, "geometryTarball": None}
    values.update(overrides)
    return values


def jdl_value(jdl: str, key: str) -> str:
    line = next(line for line in jdl.splitlines() if line.strip().startswith(f"{key} ="))
    return line.split("=", 1)[1].strip().rstrip(";")


def test_submission_sends_one_user_job_per_worker_with_the_talks_names(grid_user, monkeypatch, tmp_path):
    import DIRAC.Interfaces.API.Dirac as diracModule

    monkeypatch.setattr(diracModule, "WMSClient", RecordingWMS)
    RecordingWMS.submitted, RecordingWMS.workflows = [], []
    backend = DiracBackend(settings(), sandboxFolder=tmp_path)
    jobs = backend.submit(42, [0, 1, 2])
    assert jobs == {0: "1001", 1: "1002", 2: "1003"}
    assert len(RecordingWMS.submitted) == 3
    for workerID, jdl in enumerate(RecordingWMS.submitted):
        assert jdl_value(jdl, "JobName") == job_name(42, workerID) == f"PandoraCaloCalibration_calid_42_workerid_{workerID}"
        assert jdl_value(jdl, "JobGroup") == job_group(42) == "PandoraCaloCalibration_calid_42"
        assert jdl_value(jdl, "CPUTime") == "7200"
        assert jdl_value(jdl, "Platform") == PLATFORM
        assert jdl_value(jdl, "SoftwarePackages") == f"marlin.{RELEASE}"
        assert "calibration_worker.py" in jdl and BUNDLE_NAME in jdl
        assert "*.log" in jdl
        # the workflow the job wrapper executes runs the launcher for this worker
        workflow = RecordingWMS.workflows[workerID]
        assert f"--calibration 42 --worker {workerID}" in workflow and "calibration_worker.py" in workflow


def test_the_worker_program_travels_in_the_sandbox(grid_user, tmp_path):
    backend = DiracBackend(settings(geometryTarball="LFN:/ilc/user/o/someone/FCCee_01_v04_ecal20_10.tgz"),
                           sandboxFolder=tmp_path)
    sandbox = backend.sandbox()
    assert sandbox[0].endswith("Client/calibration_worker.py")
    assert sandbox[2] == "LFN:/ilc/user/o/someone/FCCee_01_v04_ecal20_10.tgz"
    with tarfile.open(sandbox[1]) as bundle:
        names = bundle.getnames()
    assert "calibration_code/ILCDIRAC/CalibrationSystem/Client/Worker.py" in names
    assert "calibration_code/ILCDIRAC/CalibrationSystem/Utilities/phases/ecal_digitisation.py" in names
    assert not any("/test/" in name or "/localdirac/" in name or "__pycache__" in name for name in names)
    # DIRAC's JobWrapper unpacks sandbox tarballs into the job directory, the launcher's first
    # import path: nothing in the bundle may shadow the pilot's ILCDIRAC package there
    assert all(name.startswith("calibration_code/ILCDIRAC/CalibrationSystem") for name in names)
    assert "calibration_code/ILCDIRAC/__init__.py" not in names


def test_an_unknown_release_is_refused_before_anything_is_sent(grid_user, monkeypatch, tmp_path):
    import DIRAC.Interfaces.API.Dirac as diracModule

    from ILCDIRAC.CalibrationSystem.Client.Backends import BackendError

    monkeypatch.setattr(diracModule, "WMSClient", RecordingWMS)
    RecordingWMS.submitted = []
    backend = DiracBackend(settings(marlinVersion="ILCSoft-1999-01-01"), sandboxFolder=tmp_path)
    with pytest.raises(BackendError, match="ILCSoft-1999-01-01"):
        backend.submit(42, [0])
    assert RecordingWMS.submitted == []


class RecordingMonitoring:
    """Stands in for the grid's job monitoring: DIRAC job states as the WMS would report them."""

    states = {}
    asked: list = []

    def __init__(self, *args, **kwargs):
        pass

    def getJobsStatus(self, jobIDs):
        RecordingMonitoring.asked.append(list(jobIDs))
        return S_OK({j: {"Status": RecordingMonitoring.states[j]} for j in jobIDs if j in RecordingMonitoring.states})


class RecordingKiller:
    killed: list = []

    def __init__(self, *args, **kwargs):
        pass

    def killJob(self, jobIDs):
        RecordingKiller.killed.append(list(jobIDs))
        return S_OK(jobIDs)


def test_the_agent_sees_dirac_job_states_and_kills_through_the_wms(grid_user, monkeypatch, tmp_path):
    import DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient as monitoring
    import DIRAC.WorkloadManagementSystem.Client.WMSClient as wms

    monkeypatch.setattr(monitoring, "JobMonitoringClient", RecordingMonitoring)
    monkeypatch.setattr(wms, "WMSClient", RecordingKiller)
    RecordingMonitoring.states = {11: "Waiting", 12: "Running", 13: "Done", 14: "Failed", 15: "Stalled", 16: "Killed"}
    RecordingMonitoring.asked, RecordingKiller.killed = [], []
    backend = DiracBackend(settings(), sandboxFolder=tmp_path)
    states = backend.states(42, {w: str(11 + w) for w in range(7)})
    assert states == {"11": "running", "12": "running", "13": "done", "14": "failed", "15": "failed",
                      "16": "failed", "17": "unknown"}
    assert RecordingMonitoring.asked == [[11, 12, 13, 14, 15, 16, 17]]
    backend.kill(42, {1: "12", 4: "15"})
    assert RecordingKiller.killed == [[12, 15]]
