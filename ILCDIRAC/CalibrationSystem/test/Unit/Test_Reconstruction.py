"""The user's reconstruction files and what the calibration makes of them, on the fixture folders
that stand for CLDConfig, CLICPerformance and ILDConfig: which files travel, the checks, the files
of one worker run read back as Marlin reads them, and the ready-to-run result set."""
import difflib
import re
from pathlib import Path

import pytest

from ILCDIRAC.CalibrationSystem.Utilities import reconstruction
from ILCDIRAC.CalibrationSystem.Utilities.pandora_settings import histogram_files
from ILCDIRAC.CalibrationSystem.Utilities.paths import PathError, relative_path
from ILCDIRAC.CalibrationSystem.Utilities.reconstruction import Run, collect, plan, result_files, run_files
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict
from ILCDIRAC.CalibrationSystem.Utilities.steering import STEERING_FILE, FolderFiles, SteeringError, read_steering
from ILCDIRAC.CalibrationSystem.Utilities.validation import CalibrationError, check_input_files

FOLDER = Path(__file__).resolve().parents[1] / "data" / "configurations"
CLD = FOLDER / "CLDLike" / "CLDReconstruction.xml"
CLIC = FOLDER / "CLICLike" / "clicReconstruction.xml"
ILD = FOLDER / "ILDLike" / "MarlinStdReco.xml"
ILD_CONSTANTS = {"DetectorModel": "ILD_l5_o1_v02"}
SAMPLES = {f"{s}Files": [f"{s}.slcio"] for s in ("gamma", "kaon", "muon", "zuds")}


def settings(model: str, steeringFile: Path, **extra) -> dict:
    return settings_from_dict({"detectorModel": model, "steeringFile": str(steeringFile), "backend": "local",
                               "numberOfJobs": 1, **SAMPLES, **extra}).to_dict()


def files_of(steeringFile: Path, resolved: dict) -> dict[str, str]:
    return collect(FolderFiles(steeringFile.parent), resolved, top=steeringFile.name)


def effective(files: dict, resolved: dict, top: str = STEERING_FILE):
    return read_steering(files, top, resolved["steeringConstants"])


def constants(resolved: dict, factor: float = 1.1) -> dict:
    """The model's starting constants, moved so that every written value is new."""
    return {k: [factor * x for x in v] if isinstance(v, list) else factor * v
            for k, v in resolved["startingConstants"].items()}


# ------------------------------------------------------------------------------------ which files travel
def test_cld_like_the_files_its_steering_names_travel_in_their_folders():
    resolved = settings("CLD", CLD)
    files = files_of(CLD, resolved)
    assert sorted(files) == ["CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml",
                             "PandoraSettingsCLD/PandoraLikelihoodData9EBin.xml",
                             "PandoraSettingsCLD/PandoraSettingsDefault.xml", "steering.xml"]
    assert files[STEERING_FILE] == CLD.read_text()
    found = plan(files, resolved)
    assert (found.pandora, found.pfoAnalysis, found.pfoAction) == ("MyDDMarlinPandora_10ns", "MyPfoAnalysis", "add")
    # without a training phase the training settings stay at home
    assert "CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml" not in files_of(
        CLD, settings("CLD", CLD, phaseSequence=["1.0", "1.3"]))


def test_ild_like_the_included_files_travel_and_the_training_settings_are_found_beside_the_pandora_settings():
    resolved = settings("ILD", ILD, steeringConstants=ILD_CONSTANTS)
    files = files_of(ILD, resolved)
    assert sorted(files) == ["Calibration/Calibration_ILD_l5_o1_v02.xml", "CaloDigi/AHcalDigi.xml", "CaloDigi/MuonDigi.xml",
                             "CaloDigi/SiWEcalDigi.xml", "Config/ParametersUnknownGeV.xml",
                             "PandoraSettings/PandoraLikelihoodData9EBin.xml", "PandoraSettings/PandoraSettingsDefault.xml",
                             "PandoraSettings/PandoraSettingsPhotonTraining.xml", "ParticleFlow/PandoraPFAStandard.xml",
                             "steering.xml"]
    found = plan(files, resolved)
    assert (found.pandora, found.pfoAnalysis, found.pfoAction) == ("MyDDMarlinPandora", "MyPfoAnalysis", "use")
    assert found.trainingSettings == "PandoraSettings/PandoraSettingsPhotonTraining.xml"


def test_clic_like_needs_nothing_but_its_own_files():
    resolved = settings("CLIC_o3_v14", CLIC)
    files = files_of(CLIC, resolved)
    assert sorted(files) == ["CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml",
                             "PandoraSettings/PandoraLikelihoodData9EBin.xml",
                             "PandoraSettings/PandoraSettingsDefault.xml", "steering.xml"]
    assert plan(files, resolved).pfoAction == "add"


def in_folder(tmp_path: Path, source: Path, edits: dict[str, tuple[str, str]] = (), drop=()) -> Path:
    """A copy of a fixture folder with some files edited or removed."""
    import shutil

    target = tmp_path / source.parent.name
    shutil.copytree(source.parent, target)
    for name, (old, new) in dict(edits).items():
        text = (target / name).read_text()
        assert old in text, (name, old)
        (target / name).write_text(text.replace(old, new, 1))
    for name in drop:
        (target / name).unlink()
    return target / source.name


@pytest.mark.parametrize(
    "edits, drop, extra, message",
    [
        (
            {},
            ["PandoraSettingsCLD/PandoraSettingsDefault.xml"],
            {},
            "the Pandora settings (PandoraSettingsXmlFile of MyDDMarlinPandora_10ns) "
            "PandoraSettingsCLD/PandoraSettingsDefault.xml not found",
        ),
        (
            {},
            ["PandoraSettingsCLD/PandoraLikelihoodData9EBin.xml"],
            {},
            "the photon likelihood file of PandoraSettingsCLD/PandoraSettingsDefault.xml "
            "PandoraSettingsCLD/PandoraLikelihoodData9EBin.xml not found",
        ),
        (
            {},
            ["CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml"],
            {},
            "photon training needs Pandora settings that make PDF histograms: none found as "
            "CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml, PandoraSettingsCLD/PandoraSettingsPhotonTraining.xml, "
            "PandoraSettingsPhotonTraining.xml; name them with the setting pandoraSettingsTrainingFile",
        ),
        (
            {
                "CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml": (
                    "<ShouldMakePdfHistograms>true",
                    "<ShouldMakePdfHistograms>false",
                )
            },
            [],
            {},
            "trains no photon likelihood",
        ),
        ({"PandoraSettingsCLD/PandoraSettingsDefault.xml": ("<HistogramFile>", "<!--HistogramFile>")}, [], {}, "is not well-formed XML"),
        (
            {"CLDReconstruction.xml": ("PandoraSettingsCLD/PandoraSettingsDefault.xml", "/opt/PandoraSettingsDefault.xml")},
            [],
            {},
            "PandoraSettingsXmlFile of MyDDMarlinPandora_10ns '/opt/PandoraSettingsDefault.xml' is an absolute path",
        ),
        (
            {},
            [],
            {"pandoraSettingsFile": "PandoraSettingsCLD/Other.xml"},
            "the Pandora settings (pandoraSettingsFile) PandoraSettingsCLD/Other.xml not found",
        ),
        ({}, [], {"steeringConstants": {"DetectorModel": "x"}}, "steeringConstants ['DetectorModel'] are not defined"),
        (
            {
                "CLDReconstruction.xml": (
                    '<processor name="MyDDCaloDigi_${CalorimeterIntegrationTimeWindow}ns"/>',
                    '<processor name="MyDDCaloDigi_10ns"/><processor name="MyDDCaloDigi_400ns"/>',
                )
            },
            [],
            {"DDCaloDigiName": "Nope"},
            "'Nope' is not defined, and 2 DDCaloDigi processors are run (MyDDCaloDigi_10ns, MyDDCaloDigi_400ns): it is "
            "ambiguous which one to calibrate; name it with the setting DDCaloDigiName",
        ),
        (
            {"CLDReconstruction.xml": ('<processor name="MyDDMarlinPandora_${CalorimeterIntegrationTimeWindow}ns"/>', "")},
            [],
            {},
            "no DDPandoraPFANewProcessor processor is run: 'MyDDMarlinPandora_10ns' is defined but not run by <execute>",
        ),
    ],
)
def test_what_cannot_work_is_refused_with_the_file_and_the_reason(tmp_path, edits, drop, extra, message):
    steeringFile = in_folder(tmp_path, CLD, edits, drop)
    with pytest.raises(SteeringError) as refused:
        files_of(steeringFile, settings("CLD", steeringFile, **extra))
    assert message in str(refused.value)


def test_a_pfoanalysis_before_pandora_or_two_of_them_are_refused(tmp_path):
    before = in_folder(
        tmp_path / "a",
        ILD,
        {"MarlinStdReco.xml": ('<group name="EcalDigi" />', '<processor name="MyPfoAnalysis" /><group name="EcalDigi" />')},
    )
    before.parent.joinpath("MarlinStdReco.xml").write_text(before.read_text().replace(
        '    <processor name="MyPfoAnalysis" />\n  </execute>', "  </execute>"))
    with pytest.raises(SteeringError, match="PfoAnalysis 'MyPfoAnalysis' runs before the Pandora processor 'MyDDMarlinPandora'"):
        files_of(before, settings("ILD", before, steeringConstants=ILD_CONSTANTS))
    two = in_folder(
        tmp_path / "b",
        ILD,
        {"MarlinStdReco.xml": ('<processor name="MyPfoAnalysis" />', '<processor name="MyPfoAnalysis" /><processor name="Second" />')},
    )
    two.write_text(two.read_text().replace("</marlin>", '<processor name="Second" type="PfoAnalysis"/></marlin>'))
    with pytest.raises(SteeringError, match="2 PfoAnalysis processors are run"):
        files_of(two, settings("ILD", two, steeringConstants=ILD_CONSTANTS, PfoAnalysisName="Other"))


# ------------------------------------------------------------------------------------ one worker run
RUN = Run(inputFiles=("a.slcio", "b.slcio"), maxRecordNumber=45, skipNEvents=15, rootFile="step1_gamma.root")


def test_cld_like_run_carries_the_constants_as_effective_values_and_adds_a_pfoanalysis():
    resolved = settings("CLD", CLD)
    files = files_of(CLD, resolved)
    values = constants(resolved)
    out = run_files(files, resolved, values, RUN)
    parsed = effective(out, resolved)
    digi, pandora = parsed.processors["MyDDCaloDigi_10ns"], parsed.processors["MyDDMarlinPandora_10ns"]
    for name, value in values.items():
        where = digi if name in ("CalibrECAL", "ECALEndcapCorrectionFactor", "CalibrHCALBarrel", "CalibrHCALEndcap",
                                 "CalibrHCALOther") else pandora
        assert [float(t) for t in where.tokens(name)][: len(value) if isinstance(value, list) else 1] == pytest.approx(
            value if isinstance(value, list) else [value]), name
    assert pandora.tokens("MaxClusterEnergyToApplySoftComp")[0] == "0", "software compensation off: own value first"
    assert digi.value("ECALLayers") == "41 100", "no thick layers: the user's layer groups stay"
    assert (parsed.global_value("LCIOInputFiles"), parsed.global_value("MaxRecordNumber"), parsed.global_value("SkipNEvents")) == (
        "a.slcio b.slcio", "45", "15")
    pfo = parsed.processors["MyPfoAnalysis"]
    assert [e.name for e in parsed.execute].index("MyPfoAnalysis") == [e.name for e in parsed.execute].index(
        "MyDDMarlinPandora_10ns") + 1
    assert pfo.values() == {
        "PfoCollection": "PandoraPFOs", "MCParticleCollection": "MCParticle", "ECalCollections": "ECALBarrel ECALEndcap ECALOther",
        "HCalCollections": "HCALBarrel HCALEndcap HCALOther", "MuonCollections": "MUON",
        "ECalCollectionsSimCaloHit": "ECalBarrelCollection ECalEndcapCollection ECalPlugCollection",
        "ECalBarrelCollectionsSimCaloHit": "ECalBarrelCollection", "ECalEndCapCollectionsSimCaloHit": "ECalEndcapCollection",
        "ECalOtherCollectionsSimCaloHit": "ECalPlugCollection", "HCalBarrelCollectionsSimCaloHit": "HCalBarrelCollection",
        "HCalEndCapCollectionsSimCaloHit": "HCalEndcapCollection", "HCalOtherCollectionsSimCaloHit": "HCalRingCollection",
        "MuonCollectionsSimCaloHit": "YokeBarrelCollection YokeEndcapCollection",
        "CollectCalibrationDetails": "1", "NBinsMuonCaloHitEnergyHist": "500", "XUpperValueMuonCaloHitEnergyHist": "0.002",
        "RootFile": "step1_gamma.root"}
    # the processors that do not run keep every value
    user = read_steering(FolderFiles(CLD.parent), CLD.name)
    for name in ("MyDDCaloDigi_400ns", "MyDDMarlinPandora_400ns"):
        assert parsed.processors[name].values() == user.processors[name].values(), name
    assert {k: v for k, v in out.items() if k != STEERING_FILE} == {k: v for k, v in files.items() if k != STEERING_FILE}


def test_thick_ecal_layers_are_written_to_the_digitiser_that_runs_only():
    resolved = settings("FCCee_01_v04_ecal20_10", CLD)
    parsed = effective(run_files(files_of(CLD, resolved), resolved, constants(resolved), RUN), resolved)
    assert parsed.processors["MyDDCaloDigi_10ns"].value("ECALLayers") == "21 31"
    assert parsed.processors["MyDDCaloDigi_400ns"].value("ECALLayers") == "41 100"


def test_ild_like_run_gives_realistic_calo_reco_the_constants_in_gev_per_mip_and_forces_its_pfoanalysis():
    resolved = settings("ILD", ILD, steeringConstants=ILD_CONSTANTS)
    files = files_of(ILD, resolved)
    values = constants(resolved, 1.2)
    parsed = effective(run_files(files, resolved, values, RUN), resolved)
    p = parsed.processors
    ecal, corr = values["CalibrECAL"], values["ECALEndcapCorrectionFactor"]
    factors = lambda name: [float(t) for t in p[name].tokens("calibration_factorsMipGev")]  # noqa: E731
    assert factors("MyEcalBarrelReco") == pytest.approx([c * 0.0001575 for c in ecal])
    assert factors("MyEcalEndcapReco") == pytest.approx([c * corr * 0.0001575 for c in ecal])
    assert factors("MyEcalRingReco") == pytest.approx([c * corr * 0.0001575 for c in ecal])
    assert factors("MyHcalBarrelReco") == pytest.approx([values["CalibrHCALBarrel"] * 0.0004925])
    assert factors("MyHcalEndcapReco") == pytest.approx([values["CalibrHCALEndcap"] * 0.0004725])
    assert factors("MyHcalRingReco") == pytest.approx([values["CalibrHCALOther"] * 0.0004875])
    for name in ("ECalToMipCalibration", "HCalToEMGeVCalibration", "HCalToHadGeVCalibration"):
        assert float(p["MyDDMarlinPandora"].value(name)) == pytest.approx(values[name]), name
    assert {k: p["MyPfoAnalysis"].value(k) for k in ("CollectCalibrationDetails", "NBinsMuonCaloHitEnergyHist",
                                                       "XUpperValueMuonCaloHitEnergyHist", "RootFile")} == {
        "CollectCalibrationDetails": "1", "NBinsMuonCaloHitEnergyHist": "500",
        "XUpperValueMuonCaloHitEnergyHist": "0.002", "RootFile": "step1_gamma.root"}
    assert p["MyPfoAnalysis"].value("ECalCollectionsSimCaloHit").split() == [
        "ECalBarrelSiHitsEven", "ECalBarrelSiHitsOdd", "ECalEndcapSiHitsEven", "ECalEndcapSiHitsOdd", "EcalEndcapRingCollection"]
    assert parsed.constants["DetectorModel"].value == "ILD_l5_o1_v02"


def test_training_and_stage_3_runs_point_the_pandora_settings_and_leave_the_users_likelihood_alone():
    resolved = settings("CLD", CLD)
    files = files_of(CLD, resolved)
    training = run_files(files, resolved, constants(resolved), Run(("z.slcio",), 6, 0, "step3_zuds.root",
                                                                   trainingOutput="step3_zuds_training.xml"))
    parsed = effective(training, resolved)
    assert parsed.processors["MyDDMarlinPandora_10ns"].value("PandoraSettingsXmlFile") == \
        "CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml"
    assert histogram_files(training["CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml"]) == ["step3_zuds_training.xml"]
    assert training["PandoraSettingsCLD/PandoraLikelihoodData9EBin.xml"] == files["PandoraSettingsCLD/PandoraLikelihoodData9EBin.xml"]

    path = reconstruction.trained_likelihood_path(files, resolved, 7)
    assert path == "PandoraSettingsCLD/PandoraLikelihoodData9EBin_calibration7.xml"
    later = run_files(files, resolved, constants(resolved), Run(("g.slcio",), 6, 0, "step4_gamma.root",
                                                                likelihood=(path, "<trained/>")))
    assert later[path] == "<trained/>"
    assert histogram_files(later["PandoraSettingsCLD/PandoraSettingsDefault.xml"]) == [path]
    assert effective(later, resolved).processors["MyDDMarlinPandora_10ns"].value("PandoraSettingsXmlFile") == \
        "PandoraSettingsCLD/PandoraSettingsDefault.xml"


# ------------------------------------------------------------------------------------ the result set
def test_the_result_set_is_the_users_layout_that_differs_only_in_constants_and_the_trained_likelihood():
    resolved = settings("CLD", CLD)
    files = files_of(CLD, resolved)
    values = constants(resolved)
    trained = "PandoraSettingsCLD/PandoraLikelihoodData9EBin_calibration7.xml"
    out = result_files(files, resolved, values, (trained, "<trained/>"))
    assert sorted(out) == [trained, "PandoraSettingsCLD/PandoraSettingsDefault.xml", STEERING_FILE]
    assert out[trained] == "<trained/>"
    assert histogram_files(out["PandoraSettingsCLD/PandoraSettingsDefault.xml"]) == [trained]
    changed = [line for line in difflib.unified_diff(files[STEERING_FILE].splitlines(), out[STEERING_FILE].splitlines(),
                                                     lineterm="", n=0) if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    names = [re.search(r'name="(\w+)"', line).group(1) for line in changed]
    assert set(names) == set(values), changed
    # each constant's line is changed in place, except the one the group set: it gets its own line
    assert [line for line in changed if "MaxHCalHitHadronicEnergy" in line] == [
        f'+      <parameter name="MaxHCalHitHadronicEnergy">{values["MaxHCalHitHadronicEnergy"]!r}</parameter>']
    assert len(changed) == 2 * len(values) - 1
    parsed = effective(out, resolved)
    assert parsed.processors["MyDDMarlinPandora_10ns"].value("MaxClusterEnergyToApplySoftComp") == "200.", "the user's own"
    assert "MyPfoAnalysis" not in parsed.processors and parsed.global_value("MaxRecordNumber") == "-1"
    # untrained: the user's likelihood comes along
    assert sorted(result_files(files, resolved, values)) == [
        "PandoraSettingsCLD/PandoraLikelihoodData9EBin.xml", "PandoraSettingsCLD/PandoraSettingsDefault.xml", STEERING_FILE]


def test_ild_result_constants_land_in_its_calibration_file():
    resolved = settings("ILD", ILD, steeringConstants=ILD_CONSTANTS)
    files = files_of(ILD, resolved)
    out = result_files(files, resolved, constants(resolved, 1.2))
    assert out["ParticleFlow/PandoraPFAStandard.xml"] == files["ParticleFlow/PandoraPFAStandard.xml"]
    assert out["CaloDigi/SiWEcalDigi.xml"] == files["CaloDigi/SiWEcalDigi.xml"]
    calibration = read_steering(out, STEERING_FILE).constants
    assert float(calibration["PandoraEcalToMip"].value) == pytest.approx(1.2 * 153.846)
    assert calibration["DetectorModel"].value == "ILD_l5_o1_v02", "runs as delivered, without --constant"
    assert calibration["PfoOutputFile"].value == "StandardReco_PfoAnalysis.root"


# ------------------------------------------------------------------------------------ names of input files
def test_input_file_names_are_normalised_relative_paths_outside_the_calibrations_own_names():
    resolved = settings("CLD", CLD)
    files = files_of(CLD, resolved)
    for bad, reason in [("../x.xml", "contains '..'"), ("/etc/x.xml", "absolute path"), ("a//b.xml", "not normalised"),
                        ("step3_x.xml", "kept for the calibration's own files"), ("result_x.xml", "kept for"),
                        ("constants.json", "kept for"), ("a/" * 9 + "x.xml", "deeper than 8"), ("x" * 201, "longer than 200")]:
        with pytest.raises(CalibrationError) as refused:
            check_input_files({**files, bad: ""}, resolved)
        assert reason in str(refused.value), bad
    assert check_input_files(files, resolved) == files
    with pytest.raises(PathError, match="control characters"):
        relative_path("a\nb")
