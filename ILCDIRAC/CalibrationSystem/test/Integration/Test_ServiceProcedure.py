"""Issue 3's proof (b): the complete three-stage procedure through the real service.

CLD (true constants 13-20 % away from the model's starting constants) is calibrated by the real
DISET service over TLS with four local worker processes running the emulator as a command, and
again in-process (``inprocess.run_calibration``: the service logic on SQLite, the same Worker
code, the emulator called in-process) on the same sample files with the same settings. With the
threshold at 1.0 every step merges all four reports in worker order, so both paths are the same
computation on the same events: the final constants must be identical, not merely close, and
the number of passes equal. The finished calibration must have stored its deliverables, and
``dirac-clic-calibration-results`` must hand them to the user.
"""
import difflib
import json
import re

import pytest
import yaml

from ILCDIRAC.CalibrationSystem.test.configurations import ACCURACY, CONFIGURATIONS, SAMPLES
from ILCDIRAC.CalibrationSystem.test.inprocess import STEERING, run_calibration
from ILCDIRAC.CalibrationSystem.test.scenario import Scenario
from ILCDIRAC.CalibrationSystem.Utilities import steering

CLD = next(c for c in CONFIGURATIONS if c.name == "CLD")
RESULT_FILES = ["result_constants.json", "result_convergence.png", "result_history.json", "result_steering.xml"]
DIGI, PANDORA = "MyDDCaloDigi_10ns", "MyDDMarlinPandora_10ns"
#: The constants whose estimators fit the merged reports; each must carry an uncertainty.
FITTED = ("CalibrECAL", "CalibrHCALBarrel", "CalibrHCALEndcap", "ECalToEMGeVCalibration", "HCalToHadGeVCalibration",
          "ECalToHadGeVCalibrationBarrel")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def both(testbed, tmp_path_factory):
    """(scenario, calibration ID, service status, in-process outcome, settings) of the two runs."""
    settings = {
        "numberOfJobs": 4,
        "strategy": "fast",
        "fractionOfFinishedJobsNeededToStartNextStep": 1.0,
        **ACCURACY,
        **CLD.settings,
    }
    scenario = Scenario(testbed, tmp_path_factory.mktemp("cld"), CLD.truth(), SAMPLES, settings)
    calibrationID = scenario.submit()
    # the same sample files and settings, driven in-process while the service's workers run
    submitted = yaml.safe_load((scenario.folder / "settings.yaml").read_text())
    inprocess = run_calibration(submitted, tmp_path_factory.mktemp("cld_inprocess"))
    status = scenario.wait(calibrationID, timeout=150)
    return scenario, calibrationID, status, inprocess, submitted


def test_the_service_and_the_in_process_run_end_identically(both):
    scenario, calibrationID, status, inprocess, _ = both
    assert status["status"] == "finished", scenario.logs(calibrationID)
    assert inprocess.status == "finished", inprocess.reason
    assert status["constants"] == inprocess.constants
    history = scenario.history(calibrationID)
    assert len(history) == inprocess.passes
    assert [h["phases"] for h in history] == [s["Phases"] for s in inprocess.steps]
    assert all(h["results"] == 4 for h in history)  # every worker's report was used, every step
    # all three stages ran: stage 1 (digitisation, MIP, EM, hadronic), stage 2 (photon training)
    assert {p.split(".")[0] for h in history for p in h["phases"]} == {"1", "2", "3"}


def test_the_calibration_moved_every_fitted_constant(both):
    scenario, calibrationID, status, inprocess, _ = both
    start = scenario.history(calibrationID)[0]["constants"]
    for name in FITTED:
        initial, final = _first(start[name]), _first(status["constants"][name])
        assert abs(initial / final - 1) > 2 * ACCURACY["digitisationAccuracy"], name


def test_the_results_carry_uncertainties_and_the_result_files(both, testbed):
    scenario, calibrationID, status, inprocess, _ = both
    result = testbed.rpc("alice").getCalibrationResults(calibrationID)
    assert result["OK"], result["Message"]
    summary = result["Value"]
    assert summary["files"] == RESULT_FILES
    assert summary["constants"] == status["constants"]
    assert summary["steps"] == inprocess.passes
    assert summary["detectorModel"] == CLD.model
    for name in FITTED:
        assert 0 < summary["uncertainties"][name] < 0.05 * _first(summary["constants"][name]), name
    # marked: exactly the constants whose uncertainty exceeds their phase's accuracy
    relative = {name: u / abs(_first(summary["constants"][name])) for name, u in summary["uncertainties"].items()}
    accuracy = {name: ACCURACY["pandoraPFAAccuracy" if "GeV" in name else "digitisationAccuracy"] for name in relative}
    assert set(summary["exceedingAccuracy"]) == {name for name in relative if relative[name] > accuracy[name]}
    assert not set(summary["exceedingAccuracy"]) & set(FITTED)  # 4000 events reach these


def test_the_result_steering_is_the_users_file_with_the_final_constants(both, testbed):
    scenario, calibrationID, status, _, submitted = both
    stored = testbed.rpc("alice").getCalibrationFile(calibrationID, "result_steering.xml")
    assert stored["OK"], stored["Message"]
    result = stored["Value"]["content"]
    user = STEERING.read_text()
    constants = status["constants"]
    for name, value in constants.items():
        processor = DIGI if name in steering.DIGI_CONSTANTS else PANDORA
        written = [float(v) for v in steering.read_parameters(result, processor)[name].split()]
        assert written == pytest.approx(value if isinstance(value, list) else [value], rel=1e-9), name
    # the calibration ran with software compensation off; the user's own value comes back
    assert steering.read_parameters(user, PANDORA)["MaxClusterEnergyToApplySoftComp"] == "200."
    assert steering.read_parameters(result, PANDORA)["MaxClusterEnergyToApplySoftComp"] == "200."
    # nothing else changed: every changed line is one of the calibrated constants (the 400 ns
    # processors carry the same names but must keep the user's values)
    changed = [line for line in difflib.unified_diff(user.splitlines(), result.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    names = set(constants) | {steering.ECAL_LAYERS}
    assert changed and all(re.search(r'name="(\w+)"', line).group(1) in names for line in changed), changed
    assert steering.read_parameters(result, "MyDDCaloDigi_400ns") == steering.read_parameters(user, "MyDDCaloDigi_400ns")
    assert steering.read_parameters(result, "MyDDMarlinPandora_400ns") == steering.read_parameters(
        user, "MyDDMarlinPandora_400ns"
    )
    assert submitted["steeringFile"] == str(STEERING)


def test_the_results_command_downloads_the_files_and_prints_the_constants(both, tmp_path):
    scenario, calibrationID, status, inprocess, _ = both
    target = tmp_path / "results"
    done = scenario.run_command("dirac-clic-calibration-results", str(calibrationID), "--dir", str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == ["constants.json", "convergence.png", "history.json",
                                                        "steering.xml"]
    constants = json.loads((target / "constants.json").read_text())
    assert constants["constants"] == status["constants"]
    assert constants["calibrationID"] == calibrationID
    history = json.loads((target / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, inprocess.passes + 1))
    assert (target / "convergence.png").read_bytes().startswith(PNG_MAGIC)
    stored = scenario.testbed.rpc("alice").getCalibrationFile(calibrationID, "result_steering.xml")["Value"]
    assert (target / "steering.xml").read_text() == stored["content"]
    printed = _printed_constants(done.stdout)
    assert set(printed) == set(status["constants"])
    for name, value in status["constants"].items():
        assert printed[name][0] == pytest.approx(value if isinstance(value, list) else [value], rel=1e-5), name
    for name in FITTED:
        assert printed[name][1] == f"{constants['uncertainties'][name]:.2g}", name
    assert f"Calibration {calibrationID} ({CLD.model}, {inprocess.passes} steps)" in done.stdout

    # a folder that cannot be made is one line, not a traceback
    (tmp_path / "taken").write_text("a file, not a folder")
    blocked = scenario.run_command("dirac-clic-calibration-results", str(calibrationID), "--dir", str(tmp_path / "taken"))
    assert (blocked.returncode, blocked.stdout) == (1, "")
    assert blocked.stderr.splitlines() == [f"ERROR: cannot write {tmp_path / 'taken' / 'constants.json'}: File exists"]


def test_status_and_results_mark_constants_less_precise_than_asked(testbed, tmp_path_factory):
    """600 K0L cannot give the hadronic scales to 0.5 %: the finished calibration says so through
    the service, in the status and the results commands, for exactly the constants concerned."""
    settings = {"numberOfJobs": 2, "strategy": "fast", "phaseSequence": ["1.4"], "pandoraPFAAccuracy": 0.005,
                "fractionOfFinishedJobsNeededToStartNextStep": 1.0, **CLD.settings}
    scenario = Scenario(testbed, tmp_path_factory.mktemp("imprecise"), CLD.truth(), {"kaon": (2, 300)}, settings)
    calibrationID = scenario.submit()
    status = scenario.wait(calibrationID, timeout=120)
    assert status["status"] == "finished", scenario.logs(calibrationID)
    rows = json.loads(scenario.run_command("dirac-clic-calibration-status", "--json", str(calibrationID)).stdout)
    marked = rows[0]["exceedingAccuracy"]
    relative = {name: u / abs(_first(rows[0]["constants"][name])) for name, u in rows[0]["uncertainties"].items()}
    assert set(marked) == {name for name, r in relative.items() if r > 0.005}
    assert "ECalToHadGeVCalibrationBarrel" in marked
    for name, entry in marked.items():
        assert entry["relative"] == pytest.approx(relative[name]) and entry["accuracy"] == 0.005
    shown = scenario.run_command("dirac-clic-calibration-status", str(calibrationID))
    results = scenario.run_command("dirac-clic-calibration-results", str(calibrationID), "--dir",
                                   str(scenario.folder / "results"))
    assert shown.returncode == 0 and results.returncode == 0, shown.stderr + results.stderr
    for output in (shown.stdout, results.stdout):
        flagged = {line.split()[0] for line in output.splitlines() if line.endswith("  !")}
        assert flagged == set(marked), output
        for name in marked:
            assert f"  ! {name}: uncertainty " in output and "pandoraPFAAccuracy 0.5 %" in output
    stored = json.loads((scenario.folder / "results" / "constants.json").read_text())
    assert set(stored["exceedingAccuracy"]) == set(marked)


def _first(value):
    return value[0] if isinstance(value, list) else value


def _printed_constants(stdout: str) -> dict[str, tuple[list[float], str | None]]:
    """name -> (values, uncertainty) from the command's '  name  v1, v2  +- err' lines."""
    printed = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"\s+(\w+)\s+([-+0-9.eE, ]+?)(?:\s+\+- (\S+))?(?:\s+!)?", line)
        if match:
            values = [float(v) for v in match.group(2).split(",")]
            printed[match.group(1)] = (values, match.group(3))
    return printed
