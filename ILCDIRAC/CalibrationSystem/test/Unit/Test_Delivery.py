"""The agent delivers a finished calibration's results to the owner's outputPath: one folder
holding the reconstruction set in the user's layout (sub-folders included) and the result files,
under the names the results command gives them (without the service's ``result_`` prefix).

Local folders are real folders. For LFNs only DIRAC's ``DataManager`` is replaced (the storage
element is the grid): it records each putAndRegister call with the bytes it was handed. The
service is a small client object answering the agent's four delivery calls with S_OK dicts.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path

import pytest
from DIRAC import gLogger
from DIRAC.DataManagementSystem.Client import DataManager as data_manager_module

from ILCDIRAC.CalibrationSystem.Agent.CalibrationAgent import (
    AgentError,
    CalibrationAgent,
    copy_local,
    to_storage_element,
    upload,
)

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


def agent_with(service) -> CalibrationAgent:
    """The agent without its DIRAC start-up (no CS here); deliver() needs its client and log."""
    agent = object.__new__(CalibrationAgent)
    agent.client = service
    agent.log = gLogger.getSubLogger("CalibrationAgent")
    return agent


def calibration(backend="local", **settings):
    return {"calibrationID": ID, "backend": backend, "owner": "alice", "ownerDN": "/CN=alice",
            "ownerGroup": "ilc_user", "status": "finished", "deliveryTime": None, "settings": settings}


# ------------------------------------------------------------------------------------ local copy
def test_copy_local_puts_every_file_under_calibration_id_and_says_how_many_and_where(tmp_path):
    target = tmp_path / "out" / "deep"
    report = copy_local(result_folder(tmp_path), target, ID)

    assert report == f"copied 4 files to {target / 'calibration_42'}"
    assert folder_files(target / "calibration_42") == DELIVERED
    (target / "calibration_42" / "constants.json").write_text("stale")
    assert copy_local(result_folder(tmp_path / "again"), target, ID) == report, "a retried delivery overwrites"
    assert (target / "calibration_42" / "constants.json").read_text() == CONSTANTS


# ------------------------------------------------------------------------------------ where to
@pytest.mark.parametrize("backend, settings, expected", [
    ("dirac", {"outputPath": "/ilc/user/a/alice/calib", "outputSE": SE}, True),
    ("dirac", {"outputPath": "/ilc/user/a/alice/calib", "outputSE": None}, True),
    ("dirac", {"outputPath": "LFN:/ilc/user/a/alice/calib", "outputSE": SE}, True),
    ("local", {"outputPath": "LFN:/ilc/user/a/alice/calib", "outputSE": SE}, True),
    ("local", {"outputPath": "/home/alice/calib", "outputSE": SE}, False),
    ("local", {"outputPath": "/home/alice/calib", "outputSE": None}, False),
    ("local", {"outputPath": "results"}, False),
])
def test_lfn_or_local_folder(backend, settings, expected):
    assert to_storage_element(backend, settings) is expected


# ------------------------------------------------------------------------------------ upload
def test_upload_puts_and_registers_every_file_under_calibration_id(tmp_path, grid):
    folder = result_folder(tmp_path)
    report = upload(folder, "LFN:/ilc/user/a/alice/calib/", SE, ID)

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
def test_deliver_to_a_local_folder(tmp_path, scratch):
    service = ResultsService()
    agent_with(service).deliver(calibration(outputPath=str(tmp_path / "mine"), outputSE=None))

    target = tmp_path / "mine" / "calibration_42"
    assert folder_files(target) == DELIVERED
    assert service.calls[0] == ("finalizeCalibration", ID)
    assert sorted(c[2] for c in service.calls if c[0] == "getCalibrationFile") == sorted(RESULTS)
    assert service.calls[-1] == ("markDelivered", ID, f"copied 4 files to {target}")
    assert list(scratch.iterdir()) == [], "the download folder is removed"


def test_deliver_to_an_lfn_uploads_the_decoded_files(tmp_path, grid, scratch):
    service = ResultsService()
    agent_with(service).deliver(calibration(outputPath="LFN:/ilc/user/a/alice/calib", outputSE=SE))

    base = "/ilc/user/a/alice/calib/calibration_42"
    assert [(lfn, se, data) for lfn, _, se, data, _ in grid.uploads] == [
        (f"{base}/{name}", SE, DELIVERED[name]) for name in sorted(DELIVERED)]
    assert service.calls[-1] == ("markDelivered", ID, f"uploaded 4 files to {base} on {SE}")
    assert list(scratch.iterdir()) == []


def test_a_failed_delivery_is_not_marked_and_leaves_no_download_behind(tmp_path, grid, scratch):
    grid.failFor = {"steering.xml": {"OK": False, "Message": "Write access not permitted for this credential."}}
    service = ResultsService()
    with pytest.raises(AgentError, match="steering.xml.*CERN-DST-EOS.*Write access not permitted"):
        agent_with(service).deliver(calibration(outputPath="LFN:/ilc/user/a/alice/calib", outputSE=SE))
    assert not [c for c in service.calls if c[0] == "markDelivered"]
    assert list(scratch.iterdir()) == []


def test_without_output_path_the_results_stay_with_the_service(grid, scratch):
    service = ResultsService()
    agent_with(service).deliver(calibration(outputPath=None, outputSE=SE))

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
