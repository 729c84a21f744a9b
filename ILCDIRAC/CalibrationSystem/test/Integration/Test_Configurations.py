"""Issue 7: calibrating with the configurations physicists actually have.

The fixture folders (``test/data/configurations``) stand for CLDConfig, CLICPerformance and
ILDConfig. Each passes ``--dry-run`` and is accepted by the real service on the test bed; what
the service refuses, ``--dry-run`` refuses with the same reason. Each is then calibrated
in-process through all three stages with the emulator as Marlin, and every reconstruction run is
read back, as it starts, with Marlin's semantics: its steering (and the files it includes)
carries that step's constants as effective values, its PfoAnalysis collects what the estimators
read, and its Pandora settings point at the right likelihood without touching the user's.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ILCDIRAC.CalibrationSystem.Client.Submission import collect_input_files
from ILCDIRAC.CalibrationSystem.localdirac.configurations import Configuration
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import EmulatorRunner, run_calibration
from ILCDIRAC.CalibrationSystem.localdirac.scenario import BIN
from ILCDIRAC.CalibrationSystem.Utilities.pandora_settings import histogram_files
from ILCDIRAC.CalibrationSystem.Utilities.phases import phase_for
from ILCDIRAC.CalibrationSystem.Utilities.settings import load_settings
from ILCDIRAC.CalibrationSystem.Utilities.steering import STEERING_FILE, FolderFiles, read_steering

FOLDER = Path(__file__).resolve().parents[1] / "data" / "configurations"
ILD_CONSTANTS = {"DetectorModel": "ILD_l5_o1_v02"}
#: name -> (steering file, detector model, extra settings, files that travel)
CONFIGURATIONS = {
    "CLD": (FOLDER / "CLDLike" / "CLDReconstruction.xml", "FCCee_o1_v04", {},
            ["CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml", "PandoraSettingsCLD/PandoraLikelihoodData9EBin.xml",
             "PandoraSettingsCLD/PandoraSettingsDefault.xml", STEERING_FILE]),
    "CLIC": (FOLDER / "CLICLike" / "clicReconstruction.xml", "CLIC_o3_v14", {},
             ["CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml", "PandoraSettings/PandoraLikelihoodData9EBin.xml",
              "PandoraSettings/PandoraSettingsDefault.xml", STEERING_FILE]),
    "ILD": (FOLDER / "ILDLike" / "MarlinStdReco.xml", "ILD_l5_o1_v02", {"steeringConstants": ILD_CONSTANTS},
            ["Calibration/Calibration_ILD_l5_o1_v02.xml", "CaloDigi/AHcalDigi.xml", "CaloDigi/MuonDigi.xml",
             "CaloDigi/SiWEcalDigi.xml", "Config/ParametersUnknownGeV.xml", "PandoraSettings/PandoraLikelihoodData9EBin.xml",
             "PandoraSettings/PandoraSettingsDefault.xml", "PandoraSettings/PandoraSettingsPhotonTraining.xml",
             "ParticleFlow/PandoraPFAStandard.xml", STEERING_FILE]),
}


def settings_file(folder: Path, steeringFile: Path, model: str, **extra) -> Path:
    """A settings file a physicist would write for this steering folder (samples by name only)."""
    folder.mkdir(parents=True, exist_ok=True)
    values = {"detectorModel": model, "steeringFile": str(steeringFile), "backend": "local", "numberOfJobs": 2,
              "marlinExecutable": str(BIN / "marlin-emulator"), **extra}
    for sample in ("gamma", "kaon", "muon", "zuds"):
        values[f"{sample}Files"] = [f"{sample}_{i}.slcio" for i in range(2)]
        values[f"{sample}EventsPerFile"] = 100
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def dry_run(testbed, settings: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dirac-clic-calibration-submit"), "--dry-run", str(settings)], cwd=settings.parent,
                          env=testbed.env("alice"), capture_output=True, text=True, timeout=120)


def calibrations(testbed) -> list[int]:
    return sorted(c["calibrationID"] for c in testbed.rpc("alice").getCalibrationStatus([])["Value"])


# ------------------------------------------------------------------------------------ submission
@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_each_configuration_passes_the_dry_run_and_is_accepted_by_the_service(testbed, tmp_path, name):
    steeringFile, model, extra, travelling = CONFIGURATIONS[name]
    settings = settings_file(tmp_path, steeringFile, model, **extra)
    done = dry_run(testbed, settings)
    assert done.returncode == 0, done.stderr
    assert f"# files that travel: {', '.join(travelling)}" in done.stdout.splitlines()

    resolved = load_settings(settings).to_dict()
    files = collect_input_files(resolved, tmp_path)
    assert sorted(files) == travelling
    rpc = testbed.rpc("alice")
    created = rpc.createCalibration(resolved, files)
    assert created["OK"], created["Message"]
    for path, text in files.items():
        stored = rpc.getCalibrationFile(created["Value"], path)
        assert stored["OK"] and stored["Value"]["content"] == text, path
    assert rpc.killCalibration(created["Value"])["OK"]


def raw_files(steeringFile: Path) -> dict[str, str]:
    """Every file below the steering file's folder, sent as is (the top one as steering.xml):
    what a client that skipped the checks would send."""
    folder = steeringFile.parent
    files = {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*.xml"))}
    files[STEERING_FILE] = files.pop(steeringFile.name)
    return files


def broken(tmp_path: Path, name: str, edits: dict[str, tuple[str, str]], drop: tuple[str, ...] = ()) -> Path:
    steeringFile = CONFIGURATIONS[name][0]
    target = tmp_path / steeringFile.parent.name
    shutil.copytree(steeringFile.parent, target)
    for path, (old, new) in edits.items():
        text = (target / path).read_text() if (target / path).exists() else ""
        assert old in text, (path, old)
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_text(text.replace(old, new, 1) if old else new)
    for path in drop:
        (target / path).unlink()
    return target / steeringFile.name


BROKEN = {
    "nested include": (
        "CLD",
        {
            "CLDReconstruction.xml": ("</marlin>", '<include ref="extra/Extra.xml"/></marlin>'),
            "extra/Extra.xml": ("", '<include ref="more.xml"/>'),
        },
        (),
        {},
        "extra/Extra.xml, line 1: nested includes are not allowed",
    ),
    "no detector model": (
        "ILD",
        {},
        (),
        {"steeringConstants": None},
        "included file Calibration/Calibration_None_Please_specify_one.xml not found",
    ),
    "missing Pandora settings": (
        "CLIC",
        {},
        ("PandoraSettings/PandoraSettingsDefault.xml",),
        {},
        "PandoraSettings/PandoraSettingsDefault.xml not found",
    ),
    "two digitisers run": (
        "CLD",
        {
            "CLDReconstruction.xml": (
                '<processor name="MyDDSimpleMuonDigi"/>',
                '<processor name="MyDDSimpleMuonDigi"/><processor name="MyDDCaloDigi_400ns"/>',
            )
        },
        (),
        {"DDCaloDigiName": "MyCaloDigi"},
        "2 DDCaloDigi processors are run",
    ),
    "undefined constant": (
        "ILD",
        {"CaloDigi/AHcalDigi.xml": ("${HcalRingMip}", "${HcalRingMIP}")},
        (),
        {},
        "CaloDigi/AHcalDigi.xml, line 51 (parameter calibration_mip): constant ${HcalRingMIP} is not defined",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_what_the_service_refuses_the_dry_run_refuses_with_the_same_reason(testbed, tmp_path, case):
    name, edits, drop, extra, reason = BROKEN[case]
    steeringFile = broken(tmp_path, name, edits, drop)
    model, defaults = CONFIGURATIONS[name][1], CONFIGURATIONS[name][2]
    settings = settings_file(tmp_path / "settings", steeringFile, model, **{**defaults, **extra})
    done = dry_run(testbed, settings)
    assert done.returncode == 1 and reason in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("ERROR: ")

    before = calibrations(testbed)
    refused = testbed.rpc("alice").createCalibration(load_settings(settings).to_dict(), raw_files(steeringFile))
    assert not refused["OK"] and reason in refused["Message"], refused
    assert calibrations(testbed) == before


# ------------------------------------------------------------------------------------ every step
class ReadingRunner(EmulatorRunner):
    """The emulator as Marlin, after reading each run's files as Marlin will read them."""

    def __init__(self, steeringConstants):
        super().__init__()
        self.steeringConstants, self.runs = steeringConstants, {}

    def __call__(self, command, workDir, logFile):
        name = command[-1]
        parsed = read_steering(FolderFiles(workDir), name, self.steeringConstants)
        pandora = parsed.processors[parsed.running("DDPandoraPFANewProcessor")[0]]
        settingsFile = pandora.value("PandoraSettingsXmlFile")
        likelihoods = histogram_files((workDir / settingsFile).read_text())
        self.runs.setdefault((workDir.name, name), (parsed, settingsFile, {f: (workDir / f).read_text() if (
            workDir / f).exists() else None for f in likelihoods}))
        return super().__call__(command, workDir, logFile)


def settings_files(outcome) -> list[str]:
    """The files the calibration carries (stored with it)."""
    return outcome.db.listFiles(outcome.calibrationID)


def digitisation(parsed, model: str, constants: dict) -> dict[str, list[float]]:
    """What the running digitisation processors received, and what they should have, by hand:
    DDCaloDigi takes each constant as it is; ILD's RealisticCaloReco takes constant x the MIP
    energy of its RealisticCaloDigi (ILD_l5_o1_v02: 0.1575 MeV in the ECAL, 0.4925/0.4725/0.4875
    MeV in the HCAL barrel/endcap/ring)."""
    p = parsed.processors
    if model != "ILD_l5_o1_v02":
        digi = p[parsed.running("DDCaloDigi")[0]]
        names = ("CalibrECAL", "ECALEndcapCorrectionFactor", "CalibrHCALBarrel", "CalibrHCALEndcap", "CalibrHCALOther")
        got = {n: [float(t) for t in digi.tokens(n)] for n in names}
        expected = {n: constants[n] if isinstance(constants[n], list) else [constants[n]] for n in names}
        return got, expected
    ecal, corr = constants["CalibrECAL"], constants["ECALEndcapCorrectionFactor"]
    got = {n: [float(t) for t in p[n].tokens("calibration_factorsMipGev")] for n in (
        "MyEcalBarrelReco", "MyEcalEndcapReco", "MyEcalRingReco", "MyHcalBarrelReco", "MyHcalEndcapReco", "MyHcalRingReco")}
    expected = {"MyEcalBarrelReco": [c * 1.575e-4 for c in ecal], "MyEcalEndcapReco": [c * corr * 1.575e-4 for c in ecal],
                "MyEcalRingReco": [c * corr * 1.575e-4 for c in ecal],
                "MyHcalBarrelReco": [constants["CalibrHCALBarrel"] * 4.925e-4],
                "MyHcalEndcapReco": [constants["CalibrHCALEndcap"] * 4.725e-4],
                "MyHcalRingReco": [constants["CalibrHCALOther"] * 4.875e-4]}
    return got, expected


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_every_run_of_a_whole_calibration_carries_its_steps_constants(tmp_path, name):
    steeringFile, model, extra, _ = CONFIGURATIONS[name]
    configuration = Configuration(name, model)
    truth = configuration.truth()
    runner = ReadingRunner(extra.get("steeringConstants", {}))
    outcome = run_calibration(configuration.settings_for(tmp_path, "fast", truth, **extra), tmp_path / "run",
                              steering=steeringFile, runner=runner)
    assert outcome.status == "finished", outcome.reason
    steps = {s["Step"]: s for s in outcome.steps}
    user = read_steering(FolderFiles(steeringFile.parent), steeringFile.name, extra.get("steeringConstants", {}))
    userPandora = user.processors[user.running("DDPandoraPFANewProcessor")[0]]
    trained = None
    assert len(runner.runs) == sum(4 * len({x for p in s["Phases"] for x in phase_for(p).samples}) for s in outcome.steps)
    for (_worker, run), (parsed, settingsFile, likelihoods) in sorted(runner.runs.items()):
        step, sample = int(run.split("_")[0].removeprefix("step")), run.split("_")[1].removesuffix(".xml")
        constants = steps[step]["Constants"]
        got, expected = digitisation(parsed, model, constants)
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-12), (run, key)
        pandora = parsed.processors[parsed.running("DDPandoraPFANewProcessor")[0]]
        for key in ("ECalToMipCalibration", "HCalToMipCalibration", "MuonToMipCalibration", "ECalToEMGeVCalibration",
                    "HCalToEMGeVCalibration", "ECalToHadGeVCalibrationBarrel", "ECalToHadGeVCalibrationEndCap",
                    "HCalToHadGeVCalibration"):
            assert float(pandora.tokens(key)[0]) == pytest.approx(constants[key], rel=1e-12), (run, key)
        assert pandora.tokens("MaxClusterEnergyToApplySoftComp")[0] == "0", run
        pfo = parsed.processors[parsed.running("PfoAnalysis")[0]]
        assert [pfo.value(k) for k in ("CollectCalibrationDetails", "NBinsMuonCaloHitEnergyHist",
                                       "XUpperValueMuonCaloHitEnergyHist", "RootFile")] == ["1", "500", "0.002",
                                                                                           run.replace(".xml", ".root")]
        order = [e.name for e in parsed.execute]
        assert order.index(pfo.name) > order.index(pandora.name)
        assert len(parsed.global_value("LCIOInputFiles").split()) >= 1
        training = [k for k in steps[step]["Phases"] if phase_for(k).pandoraSettings == "training"]
        if training and sample in phase_for(training[0]).samples:
            assert settingsFile.endswith("/PandoraSettingsPhotonTraining.xml") and settingsFile in settings_files(outcome)
            assert list(likelihoods) == [run.replace(".xml", "_PandoraLikelihoodDataPhotonTraining.xml")]
        elif steps[step]["Inputs"]:
            assert settingsFile == userPandora.value("PandoraSettingsXmlFile")
            (path, text), = likelihoods.items()
            assert path.endswith(f"_calibration{outcome.calibrationID}.xml")
            stored = outcome.db.getFile(outcome.calibrationID, steps[step]["Inputs"]["PandoraLikelihoodData.xml"]).decode()
            assert text == stored
            trained = path
        else:
            assert settingsFile == userPandora.value("PandoraSettingsXmlFile")
            assert all(text == (steeringFile.parent / f).read_text() for f, text in likelihoods.items()), run
    assert trained is not None, "stage 3 ran with the trained likelihood"
    # the user's own likelihood was never overwritten, not even where training names it
    for worker in (tmp_path / "run").glob("worker_*"):
        for original in histogram_files((steeringFile.parent / userPandora.value("PandoraSettingsXmlFile")).read_text()):
            assert (worker / original).read_text() == (steeringFile.parent / original).read_text()
    result = {n.removeprefix("result_") for n in outcome.db.listFiles(outcome.calibrationID) if n.startswith("result_")}
    assert trained in result and STEERING_FILE in result
