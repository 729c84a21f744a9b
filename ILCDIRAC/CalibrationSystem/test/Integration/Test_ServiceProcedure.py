"""Issue 3's proof (b): the complete three-stage procedure through the real service, with a
steering folder shaped like CLDConfig's (issue 7).

CLD (true constants 13-20 % away from the model's starting constants) is calibrated by the real
DISET service over TLS with four local worker processes running the emulator as a command, and
again in-process (``inprocess.run_calibration``: the service logic on SQLite, the same Worker
code, the emulator called in-process) on the same sample files with the same settings. With the
threshold at 1.0 every step merges all four reports in worker order, so both paths are the same
computation on the same events: the final constants must be identical, not merely close, and
the number of passes equal. The steering submitted is the CLD-like fixture folder (licence
comment, ${...} processor names, groups, two digitisers, no PfoAnalysis, Pandora files in
folders), whose running processors have the emulator's own steering's effective values: it must
end exactly where the emulator's own steering ends. The finished calibration must have stored
its deliverables, and ``dirac-clic-calibration-results`` must hand over a ready-to-run folder:
run as delivered, its photons come out at the requested EM scale.
"""
import difflib
import json
import re
import time
from pathlib import Path

import pytest
import uproot
import yaml

from ILCDIRAC.CalibrationSystem.localdirac.configurations import ACCURACY, CONFIGURATIONS, SAMPLES
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import STEERING, run_calibration
from ILCDIRAC.CalibrationSystem.localdirac.scenario import Scenario
from ILCDIRAC.CalibrationSystem.Utilities.carriers import DIGI_CONSTANTS
from ILCDIRAC.CalibrationSystem.Utilities.pandora_settings import histogram_files
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict
from ILCDIRAC.CalibrationSystem.Utilities.steering import FolderFiles, read_steering
from ILCDIRAC.CalibrationSystem.Utilities.steering_editor import SteeringEditor
from marlin_emulator.run import run as emulate

CLD = next(c for c in CONFIGURATIONS if c.name == "CLD")
CLD_LIKE = Path(__file__).resolve().parents[1] / "data" / "configurations" / "CLDLike" / "CLDReconstruction.xml"
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
    scenario = Scenario(testbed, tmp_path_factory.mktemp("cld"), CLD.truth(), SAMPLES, settings, steering=CLD_LIKE)
    calibrationID = scenario.submit()
    # the same sample files and settings, driven in-process while the service's workers run
    submitted = yaml.safe_load((scenario.folder / "settings.yaml").read_text())
    inprocess = run_calibration(submitted, tmp_path_factory.mktemp("cld_inprocess"), steering=CLD_LIKE)
    status = scenario.wait(calibrationID, timeout=300)
    return scenario, calibrationID, status, inprocess, submitted


def result_files(calibrationID: int) -> list[str]:
    trained = f"result_PandoraSettingsCLD/PandoraLikelihoodData9EBin_calibration{calibrationID}.xml"
    return sorted([trained, "result_PandoraSettingsCLD/PandoraSettingsDefault.xml", "result_constants.json",
                   "result_convergence.png", "result_constants.png", "result_workers.png", "result_history.json",
                   "result_steering.xml"])


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


def test_the_cld_like_folder_ends_where_the_emulators_own_steering_ends(both, tmp_path):
    _, _, status, inprocess, submitted = both
    today = run_calibration(submitted, tmp_path, steering=STEERING)
    assert today.status == "finished", today.reason
    assert inprocess.constants == today.constants and inprocess.passes == today.passes


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
    assert summary["files"] == result_files(calibrationID)
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
    user = CLD_LIKE.read_text()
    constants = status["constants"]
    parsed = read_steering({"steering.xml": result})
    for name, value in constants.items():
        processor = parsed.processors[DIGI if name in DIGI_CONSTANTS else PANDORA]
        written = [float(v) for v in processor.tokens(name)][: len(value) if isinstance(value, list) else 1]
        assert written == pytest.approx(value if isinstance(value, list) else [value], rel=1e-9), name
    # the calibration ran with software compensation off; the user's own (group) value still rules
    assert parsed.processors[PANDORA].tokens("MaxClusterEnergyToApplySoftComp") == ["200."]
    # nothing else changed: every changed line is one of the calibrated constants (the 400 ns
    # processors carry the same names but must keep the user's values), no PfoAnalysis is added
    changed = [line for line in difflib.unified_diff(user.splitlines(), result.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed and all(re.search(r'name="(\w+)"', line).group(1) in constants for line in changed), changed
    original = read_steering(FolderFiles(CLD_LIKE.parent), CLD_LIKE.name)
    for name in ("MyDDCaloDigi_400ns", "MyDDMarlinPandora_400ns", "MyDDSimpleMuonDigi"):
        assert parsed.processors[name].values() == original.processors[name].values(), name
    assert set(parsed.processors) == set(original.processors)
    assert submitted["steeringFile"] == str(CLD_LIKE)


def test_the_results_command_downloads_a_ready_to_run_folder_and_prints_the_constants(both, tmp_path):
    scenario, calibrationID, status, inprocess, _ = both
    target = tmp_path / "results"
    done = scenario.run_command("dirac-clic-calibration-results", str(calibrationID), "--dir", str(target))
    assert done.returncode == 0, done.stderr
    trained = f"PandoraSettingsCLD/PandoraLikelihoodData9EBin_calibration{calibrationID}.xml"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == sorted(
        ["constants.json", "convergence.png", "constants.png", "workers.png", "history.json", "steering.xml",
         "PandoraSettingsCLD/PandoraSettingsDefault.xml", trained])
    constants = json.loads((target / "constants.json").read_text())
    assert constants["constants"] == status["constants"]
    assert constants["calibrationID"] == calibrationID
    history = json.loads((target / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, inprocess.passes + 1))
    for plot in ("convergence.png", "constants.png", "workers.png"):
        assert (target / plot).read_bytes().startswith(PNG_MAGIC), plot
    # --plots: only the three plots, the same files
    plots = tmp_path / "plots"
    done = scenario.run_command("dirac-clic-calibration-results", str(calibrationID), "--plots", "--dir", str(plots))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in plots.iterdir()) == ["constants.png", "convergence.png", "workers.png"]
    assert all((plots / p.name).read_bytes() == (target / p.name).read_bytes() for p in plots.iterdir())
    assert done.stdout.splitlines()[-1] == f"Plots in {plots}/: constants.png, convergence.png, workers.png"
    stored = scenario.testbed.rpc("alice").getCalibrationFile(calibrationID, "result_steering.xml")["Value"]
    assert (target / "steering.xml").read_text() == stored["content"]
    # the Pandora settings point at the likelihood stage 2 trained: the one stage 3 ran with
    assert histogram_files((target / "PandoraSettingsCLD/PandoraSettingsDefault.xml").read_text()) == [trained]
    training = next(h["step"] for h in history if "2.5" in h["phases"])
    merged = scenario.testbed.rpc("alice").getCalibrationFile(calibrationID, f"step{training}_PandoraLikelihoodData.xml")
    assert merged["OK"] and (target / trained).read_text() == merged["Value"]["content"]
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
    assert blocked.stderr.splitlines() == [f"ERROR: cannot write {tmp_path / 'taken' / trained}: Not a directory"]


def test_the_delivered_folder_run_as_delivered_gives_the_requested_em_scale(both, tmp_path):
    """Photons of the calibration's own sample, reconstructed with the delivered folder (plus what
    a physicist adds to look at them: input files and a PfoAnalysis) land at the EM scale the
    calibration was asked for."""
    scenario, calibrationID, status, _, submitted = both
    target = tmp_path / "results"
    assert scenario.run_command("dirac-clic-calibration-results", str(calibrationID), "--dir", str(target)).returncode == 0
    editor = SteeringEditor(read_steering(FolderFiles(target), "steering.xml"))
    editor.set_globals({"LCIOInputFiles": submitted["gammaFiles"], "MaxRecordNumber": 0, "SkipNEvents": 0})
    editor.add_processor("MyPfoAnalysis", "PfoAnalysis", {"RootFile": "photons.root", "CollectCalibrationDetails": 1},
                         after=PANDORA)
    (target / "photons.xml").write_text(editor.texts()["steering.xml"])
    emulate("photons.xml", target)
    phase = phase_for("3.3")
    ctx = PhaseContext.from_settings(settings_from_dict(submitted).to_dict())
    with uproot.open(target / "photons.root") as rootFile:
        tree = {b: rootFile["PfoAnalysisTree"][b].array(library="np") for b in phase.branches["gamma"]}
    measured = phase.measure(phase.reduce({"gamma": tree}, ctx), ctx)
    assert measured.ok, measured.reason
    assert abs(measured.values["emMean"] / 10.0 - 1) < ACCURACY["pandoraPFAAccuracy"], measured.values


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


def transitions(testbed, calibrationID: int) -> list[str]:
    """The service log's transitions of one calibration, its steps and workers, in order."""
    logged = re.findall(r"Calibration transition (.+)", testbed.service_log.read_text())
    return [line for line in logged if re.search(rf"\bcalibration {calibrationID}\b", line)]


def worker_transitions(lines: list[str], worker: int) -> list[str]:
    return [line.split(": ", 1)[1] for line in lines if line.startswith(f"worker {worker} of ")]


def test_the_service_logged_every_transition_with_its_ids(both, testbed):
    scenario, calibrationID, _, _, _ = both
    # the workers learn the end at their next poll; the log line follows the commit
    scenario.wait_for_workers(calibrationID, {"finished"}, timeout=120)
    deadline = time.monotonic() + 30
    while not all(worker_transitions(transitions(testbed, calibrationID), w)[-1].endswith("-> finished")
                  for w in range(4)) and time.monotonic() < deadline:
        time.sleep(0.2)
    mine = transitions(testbed, calibrationID)
    steps = len(scenario.history(calibrationID))
    assert [line for line in mine if line.startswith("step ")] == [
        f"step {n} of calibration {calibrationID}: {change}"
        for n in range(1, steps + 1) for change in ("open -> closing", "closing -> closed")]
    assert [line for line in mine if line.startswith("calibration ")] == [
        f"calibration {calibrationID} step {steps}: running -> finished"]
    for worker in range(4):
        theirs = worker_transitions(mine, worker)
        assert theirs[0].startswith("created -> ") and theirs[-1].endswith("-> finished"), theirs
        assert {"running -> waiting", "waiting -> running"} <= set(theirs), theirs
