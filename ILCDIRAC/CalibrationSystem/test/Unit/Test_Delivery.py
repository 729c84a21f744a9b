"""The agent delivers a finished calibration's results: to the owner's grid user folder as the
owner, or (single-user installations) below its own LocalBackendDir, never where a user points it.
It delivers one folder holding the reconstruction set in the user's layout (sub-folders included)
and the result files, under the names the results command gives them (without the service's
``result_`` prefix).

Local folders are real folders. For LFNs only DIRAC's ``DataManager`` is replaced (the storage
element is the grid): it records each putAndRegister call with the bytes it was handed; the
owner's proxy (``executeWithUserProxy``, which needs the grid's ProxyManager) is replaced by a
recorder of the identity it would have taken. The service is a small client object answering the
agent's four delivery calls with S_OK dicts. The Registry is a CS loaded from text.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from DIRAC import gConfig, gLogger
from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData
from DIRAC.DataManagementSystem.Client import DataManager as data_manager_module
from diraccfg import CFG

from ILCDIRAC.CalibrationSystem.Agent import CalibrationAgent as agent_module
from ILCDIRAC.CalibrationSystem.Agent.CalibrationAgent import AgentError, CalibrationAgent, copy_local, upload
from ILCDIRAC.CalibrationSystem.Utilities.paths import PathError

ID = 42
CONSTANTS = json.dumps({"calibrationID": ID, "constants": {"CalibrECAL": [37.1, 37.1]}}, indent=1)
STEERING = '<?xml version="1.0"?>\n<marlin><global/></marlin>\n'
#: A PNG signature followed by bytes that are not UTF-8: only a byte-exact transport keeps them.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3 + os.urandom(64)
SETTINGS = b"<pandora><HistogramFile>PandoraSettings/PandoraLikelihoodData9EBin_calibration42.xml</HistogramFile></pandora>"
RESULTS = {"result_constants.json": CONSTANTS.encode(), "result_steering.xml": STEERING.encode(),
           "result_convergence.png": PNG, "result_PandoraSettings/PandoraSettingsDefault.xml": SETTINGS}
#: The delivered folder: the user's layout, as the results command writes it too.
DELIVERED = {name.removeprefix("result_"): content for name, content in RESULTS.items()}
SE = "CERN-DST-EOS"


class ResultsService:
    """The Calibration service as the agent's delivery sees it (finished calibration ``ID``)."""

    def __init__(self, files=RESULTS):
        self.files, self.calls = files, []

    def finalizeCalibration(self, calibrationID):
        self.calls.append(("finalizeCalibration", calibrationID))
        return {"OK": True, "Value": []}

    def getCalibrationResults(self, calibrationID):
        self.calls.append(("getCalibrationResults", calibrationID))
        return {"OK": True, "Value": {"constants": {}, "files": sorted(self.files)}}

    def getCalibrationFile(self, calibrationID, name):
        self.calls.append(("getCalibrationFile", calibrationID, name))
        content = self.files[name]
        try:
            return {"OK": True, "Value": {"encoding": "utf-8", "content": content.decode()}}
        except UnicodeDecodeError:
            return {"OK": True, "Value": {"encoding": "base64", "content": base64.b64encode(content).decode()}}

    def markDelivered(self, calibrationID, report):
        self.calls.append(("markDelivered", calibrationID, report))
        return {"OK": True, "Value": None}


class RecordingDataManager:
    """DataManager with the storage element replaced: records (lfn, local file, SE, bytes, options)."""

    uploads: list[tuple] = []
    failFor: dict[str, dict] = {}

    def putAndRegister(self, lfn, fileName, diracSE, **options):
        RecordingDataManager.uploads.append((lfn, fileName, diracSE, Path(fileName).read_bytes(), options))
        answer = self.failFor.get(Path(lfn).name)
        return answer if answer is not None else {"OK": True, "Value": {"Successful": {lfn: {"put": 0.1}}, "Failed": {}}}


@pytest.fixture
def grid(monkeypatch):
    RecordingDataManager.uploads, RecordingDataManager.failFor = [], {}
    monkeypatch.setattr(data_manager_module, "DataManager", RecordingDataManager)
    return RecordingDataManager


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The agent's temporary download folders go here, so a test can see they are cleaned up."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def result_folder(tmp_path) -> Path:
    folder = tmp_path / "results"
    for name, content in DELIVERED.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


REGISTRY = """
Registry
{
  Groups
  {
    ilc_user
    {
      VO = ilc
    }
    novo_user
    {
    }
  }
}
"""


@pytest.fixture(autouse=True)
def registry():
    """A CS with the Registry groups (and their VOs) the agent looks the owner's folder up in."""
    cfg = CFG()
    cfg.loadFromBuffer(REGISTRY)
    gConfig.loadCFG(cfg)
    yield
    gConfigurationData.localCFG = CFG()
    gConfigurationData.remoteCFG = CFG()
    gConfigurationData.mergedCFG = CFG()
    gConfigurationData.generateNewVersion()


@pytest.fixture
def proxies(monkeypatch):
    """executeWithUserProxy without the grid's ProxyManager: records whose proxy each call would use."""
    used = []

    def execute(function):
        def call(*args, proxyUserDN, proxyUserGroup, **kwargs):
            used.append((proxyUserDN, proxyUserGroup))
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(agent_module, "executeWithUserProxy", execute)
    return used


def agent_with(service, localDir=None) -> CalibrationAgent:
    """The agent without its DIRAC start-up; deliver() needs its client, log and LocalBackendDir."""
    agent = object.__new__(CalibrationAgent)
    agent.client = service
    agent.log = gLogger.getSubLogger("CalibrationAgent")
    agent.localDir = localDir
    return agent


def calibration(backend="local", **settings):
    return {"calibrationID": ID, "backend": backend, "owner": "alice", "ownerDN": "/CN=alice",
            "ownerGroup": "ilc_user", "status": "finished", "deliveryTime": None, "settings": settings}


# ------------------------------------------------------------------------------------ local copy
def test_copy_local_puts_every_file_under_calibration_id_and_says_how_many_and_where(tmp_path):
    root = tmp_path / "results"
    report = copy_local(result_folder(tmp_path), root, ID)

    assert report == f"copied 4 files to {root / 'calibration_42'}"
    assert folder_files(root / "calibration_42") == DELIVERED
    (root / "calibration_42" / "constants.json").write_text("stale")
    assert copy_local(result_folder(tmp_path / "again"), root, ID) == report, "a retried delivery overwrites"
    assert (root / "calibration_42" / "constants.json").read_text() == CONSTANTS


def test_copy_local_follows_no_planted_link(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.txt"
    victim.write_text("keep me")
    # the calibration's folder is a link
    root = tmp_path / "delivered"
    root.mkdir()
    (root / "calibration_42").symlink_to(elsewhere)
    with pytest.raises(PathError, match="symbolic link"):
        copy_local(result_folder(tmp_path), root, ID)
    # a result file is a link
    (root / "calibration_42").unlink()
    (root / "calibration_42").mkdir()
    (root / "calibration_42" / "constants.json").symlink_to(victim)
    with pytest.raises(PathError, match="symbolic link"):
        copy_local(result_folder(tmp_path / "again"), root, ID)
    # a folder of the user's layout is a link
    (root / "calibration_42" / "constants.json").unlink()
    shutil.rmtree(root / "calibration_42" / "PandoraSettings")
    (root / "calibration_42" / "PandoraSettings").symlink_to(elsewhere)
    with pytest.raises(PathError, match="symbolic link"):
        copy_local(result_folder(tmp_path / "third"), root, ID)
    assert victim.read_text() == "keep me" and sorted(p.name for p in elsewhere.iterdir()) == ["victim.txt"]


# ------------------------------------------------------------------------------------ where to
@pytest.mark.parametrize("owner, group, outputPath, outputSE, problem", [
    ("alice", "ilc_user", "/ilc/user/a/alice/calib", SE, None),
    ("alice", "ilc_user", "LFN:/ilc/user/a/alice", SE, None),
    ("alice", "ilc_user", "/ilc/user/b/bob/calib", SE, "outputPath /ilc/user/b/bob/calib is not in alice's grid user folder"),
    ("alice", "ilc_user", "/ilc/user/a/alice2", SE, "outputPath /ilc/user/a/alice2 is not in alice's grid user folder"),
    ("alice", "ilc_user", "/ilc/user/a/alice/../../b/bob", SE, "outputPath contains '..'"),
    ("alice", "ilc_user", "/etc", SE, "outputPath /etc is not in alice's grid user folder"),
    ("alice", "novo_user", "/ilc/user/a/alice/calib", SE, "outputPath /ilc/user/a/alice/calib is not in alice's grid user folder"),
    ("alice", "ilc_user", "/ilc/user/a/alice/calib", None, "outputPath /ilc/user/a/alice/calib is an LFN folder but no outputSE is set"),
])
def test_results_go_only_into_the_owners_grid_user_folder(owner, group, outputPath, outputSE, problem):
    entry = {**calibration("dirac", outputPath=outputPath, outputSE=outputSE), "owner": owner, "ownerGroup": group}
    assert CalibrationAgent.output_problem(entry, outputPath) == problem


# ------------------------------------------------------------------------------------ upload
def test_upload_puts_and_registers_every_file_under_calibration_id(tmp_path, grid):
    folder = result_folder(tmp_path)
    report = upload(folder, "/ilc/user/a/alice/calib", SE, ID)

    base = "/ilc/user/a/alice/calib/calibration_42"
    assert [(lfn, Path(local), se, data, options) for lfn, local, se, data, options in grid.uploads] == [
        (f"{base}/{name}", folder / name, SE, DELIVERED[name], {"overwrite": True}) for name in sorted(DELIVERED)
    ]
    assert report == f"uploaded 4 files to {base} on {SE}"


@pytest.mark.parametrize("answer, reason", [
    ({"OK": False, "Message": "The storage element is not currently valid."}, "The storage element is not currently valid."),
    ({"OK": True, "Value": {"Successful": {}, "Failed": {"/ilc/c/calibration_42/convergence.png": "No space left"}}},
     "No space left"),
])
def test_a_failed_upload_names_the_file_and_the_storage_element(tmp_path, grid, answer, reason):
    grid.failFor = {"convergence.png": answer}
    with pytest.raises(AgentError) as failure:
        upload(result_folder(tmp_path), "/ilc/c", SE, ID)
    message = str(failure.value)
    assert "convergence.png" in message and SE in message and reason in message
    assert "/ilc/c/calibration_42/convergence.png" in message
    assert [Path(u[0]).name for u in grid.uploads] == ["PandoraSettingsDefault.xml", "constants.json", "convergence.png"]


# ------------------------------------------------------------------------------------ deliver
def test_deliver_a_local_calibration_below_the_agents_own_folder(tmp_path, scratch, proxies):
    service = ResultsService()
    agent_with(service, localDir=tmp_path / "agent").deliver(calibration(outputPath=None, outputSE=None))

    target = tmp_path / "agent" / "results" / "calibration_42"
    assert folder_files(target) == DELIVERED
    assert service.calls[0] == ("finalizeCalibration", ID)
    assert sorted(c[2] for c in service.calls if c[0] == "getCalibrationFile") == sorted(RESULTS)
    assert service.calls[-1] == ("markDelivered", ID, f"copied 4 files to {target}")
    assert list(scratch.iterdir()) == [], "the download folder is removed"
    assert proxies == []


def test_deliver_to_an_lfn_uploads_the_decoded_files_as_the_owner(tmp_path, grid, scratch, proxies):
    service = ResultsService()
    for backend in ("local", "dirac"):
        grid.uploads.clear()
        agent_with(service, localDir=tmp_path).deliver(calibration(backend, outputPath="/ilc/user/a/alice/calib",
                                                                   outputSE=SE))
        base = "/ilc/user/a/alice/calib/calibration_42"
        assert [(lfn, se, data) for lfn, _, se, data, _ in grid.uploads] == [
            (f"{base}/{name}", SE, DELIVERED[name]) for name in sorted(DELIVERED)]
        assert service.calls[-1] == ("markDelivered", ID, f"uploaded 4 files to {base} on {SE}")
    assert proxies == [("/CN=alice", "ilc_user")] * 2, "grid uploads always use the owner's proxy"
    assert list(scratch.iterdir()) == [] and not (tmp_path / "results").exists()


def test_an_output_path_outside_the_owners_folder_is_never_written(tmp_path, grid, scratch, proxies):
    service = ResultsService()
    agent_with(service, localDir=tmp_path).deliver(calibration(outputPath="/ilc/user/b/bob", outputSE=SE))

    assert service.calls == [("finalizeCalibration", ID), ("markDelivered", ID,
                             "outputPath /ilc/user/b/bob is not in alice's grid user folder: results stay with the service")]
    assert grid.uploads == [] and proxies == [] and list(tmp_path.iterdir()) == [scratch]


def test_a_failed_delivery_is_not_marked_and_leaves_no_download_behind(tmp_path, grid, scratch, proxies):
    grid.failFor = {"steering.xml": {"OK": False, "Message": "Write access not permitted for this credential."}}
    service = ResultsService()
    with pytest.raises(AgentError, match="steering.xml.*CERN-DST-EOS.*Write access not permitted"):
        agent_with(service).deliver(calibration(outputPath="LFN:/ilc/user/a/alice/calib", outputSE=SE))
    assert not [c for c in service.calls if c[0] == "markDelivered"]
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("backend", ["local", "dirac"])
def test_without_output_path_the_results_stay_with_the_service(grid, scratch, backend):
    service = ResultsService()
    agent_with(service).deliver(calibration(backend, outputPath=None, outputSE=SE))

    assert service.calls == [("finalizeCalibration", ID),
                             ("markDelivered", ID, "no outputPath set: results stay with the service")]
    assert grid.uploads == []


def test_a_grid_output_path_without_storage_element_is_marked_with_the_reason(grid, scratch):
    service = ResultsService()
    agent_with(service).deliver(calibration("dirac", outputPath="/ilc/user/a/alice/calib", outputSE=None))

    assert service.calls == [("finalizeCalibration", ID), ("markDelivered", ID,
                             "outputPath /ilc/user/a/alice/calib is an LFN folder but no outputSE is set: "
                             "results stay with the service")]
    assert grid.uploads == [] and list(scratch.iterdir()) == []
