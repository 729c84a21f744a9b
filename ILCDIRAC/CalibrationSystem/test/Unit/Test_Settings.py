"""Settings: both formats, resolution from the detector model, and complete problem reports."""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from ILCDIRAC.CalibrationSystem.Utilities import settings_doc, settings_schema
from ILCDIRAC.CalibrationSystem.Utilities.detectors import load_detector_model
from ILCDIRAC.CalibrationSystem.Utilities.settings import (
    DEFAULT_PHASE_SEQUENCE,
    DERIVED_KEYS,
    KEYS,
    MAX_LIST_FILE_BYTES,
    MAX_PROBLEMS,
    MAX_SETTINGS_BYTES,
    Settings,
    SettingsError,
    detect_format,
    load_settings,
    parse_settings,
    settings_from_dict,
)

DATA = Path(__file__).resolve().parents[1] / "data"
TALK = DATA / "talk_settings.txt"
DOCS = Path(__file__).resolve().parents[4] / "docs" / "SETTINGS.md"
GAMMA = [f"/ilc/user/x/gamma_{i}.slcio" for i in range(4)]
KAON = [f"/ilc/user/x/kaon_{i}.slcio" for i in range(4)]
MUON = [f"/ilc/user/x/muon_{i}.slcio" for i in range(4)]
ZUDS = [f"/ilc/user/x/zuds_{i}.slcio" for i in range(4)]


def minimal(**changes):
    """A complete settings dict for CLD that needs no files; ``changes`` override or (None) remove keys."""
    d = {"detectorModel": "CLD", "steeringFile": "steering.xml", "backend": "local",
         "gammaFiles": GAMMA, "kaonFiles": KAON, "muonFiles": MUON, "zudsFiles": ZUDS}
    for key, value in changes.items():
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value
    return d


def problems_of(d=None, **kwargs):
    with pytest.raises(SettingsError) as info:
        settings_from_dict(d if d is not None else minimal(**kwargs))
    return info.value.problems


def problem_for(problems, key):
    found = [p for p in problems if p.startswith(f"{key}:")]
    assert found, f"no problem for {key} in {problems}"
    return found[0]


# ------------------------------------------------------------------------------------ the talk's file
def test_the_talks_settings_file_loads():
    s = load_settings(TALK)
    assert (s.numberOfJobs, s.fractionOfFinishedJobsNeededToStartNextStep) == (100, 0.9)
    assert (s.digitisationAccuracy, s.pandoraPFAAccuracy) == (0.02, 0.005)
    assert s.disableSoftwareCompensation is True
    assert s.detectorModel == s.geometryTarball == "FCCee_01_v04_ecal20_10.tgz"
    assert s.detectorModelName == "FCCee_01_v04_ecal20_10"
    assert (s.nEcalThinLayers, s.nEcalThickLayers, s.ecalResponseCorrectionForThickLayers) == (20, 10, 2.0)
    assert s.ecalBarrelCosThetaRange == (0.0, 0.643) and s.hcalEndcapCosThetaRange == (0.72, 0.94)
    assert (s.DDCaloDigiName, s.DDPandoraPFANewProcessorName) == ("MyDDCaloDigi_10ns", "MyDDMarlinPandora_10ns")
    assert s.marlinVersion == "ILCSOft-2019-07-09_gcc62"
    assert (s.outputPath, s.outputSE) == ("/ilc/user/o/oviazlo/fccee_calib", "CERN-DST-EOS")  # normal LFN form
    assert s.steeringFile == str(DATA / "fcceeReconstruction_noSWC.xml")
    # from the model: not in the talk's file
    assert (s.nHcalLayers, s.PfoAnalysisName) == (44, "MyPfoAnalysis")
    # list files expanded, comment lines skipped
    assert s.gammaFiles == tuple(f"/ilc/user/o/oviazlo/FCCee_01_v04_ecal20_10/gamma/10gev_gamma_{i}.slcio"
                                 for i in range(1, 6))
    assert len(s.zudsFiles) == 5
    assert s.startingConstants["CalibrECAL"] == (37.5227197175, 2 * 37.5227197175)
    assert s.phases() == [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    assert s.samples() == ["gamma", "kaon", "muon", "zuds"]
    # defaults of keys the talk does not have
    assert (s.gammaEnergy, s.kaonEnergy, s.muonEnergy, s.zudsEnergy) == (10.0, 50.0, 10.0, 200.0)
    assert (s.maxIterationsPerPhase, s.backend, s.strategy, s.cpuTime) == (30, "dirac", "fast", 172800)


def test_the_talks_file_is_a_verbatim_copy_of_the_last_slide():
    text = TALK.read_text()
    assert text.startswith("*** Calibration parameters ***\nnumberOfJobs                               100\n")
    assert "detectorModel                               FCCee_01_v04_ecal20_10.tgz\n" in text
    assert text.count("***") == 10


def test_yaml_and_legacy_forms_give_the_same_settings():
    legacy, yaml_ = load_settings(TALK), load_settings(DATA / "talk_settings.yaml")
    assert legacy.to_dict() == yaml_.to_dict()
    assert legacy == yaml_


def test_format_detection():
    assert detect_format(TALK.read_text()) == "legacy"
    assert detect_format((DATA / "talk_settings.yaml").read_text()) == "yaml"
    assert detect_format("numberOfJobs 100\ndetectorModel CLD\n") == "legacy"
    assert detect_format("# comment\nnumberOfJobs: 100\n") == "yaml"
    legacy = parse_settings(TALK.read_text(), base_dir=DATA)
    assert legacy == load_settings(TALK)


def test_to_dict_is_complete_json_safe_and_round_trips():
    s = load_settings(TALK)
    d = s.to_dict()
    assert set(d) == set(KEYS) | set(DERIVED_KEYS)
    assert json.loads(json.dumps(d)) == d
    assert d["startingConstants"]["CalibrECAL"] == [37.5227197175, 75.045439435]
    again = settings_from_dict(d)
    assert again == s and again.to_dict() == d
    assert parse_settings(s.resolved_text(), fmt="yaml") == s


def test_settings_are_frozen():
    s = settings_from_dict(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.numberOfJobs = 3
    with pytest.raises(TypeError):
        s.startingConstants["CalibrECAL"] = (1.0, 1.0)


# ------------------------------------------------------------------------------------ resolution
def test_defaults_and_model_values_fill_in():
    s = settings_from_dict(minimal())
    cld = load_detector_model("CLD")
    assert s.detectorModelName == "FCCee_o1_v04" and s.geometryTarball is None
    assert (s.DDCaloDigiName, s.DDPandoraPFANewProcessorName) == ("MyDDCaloDigi_10ns", "MyDDMarlinPandora_10ns")
    assert (s.nEcalThinLayers, s.nEcalThickLayers, s.ecalResponseCorrectionForThickLayers) == (40, 0, 1.0)
    assert s.hcalBarrelCosThetaRange == cld.hcalBarrelCosThetaRange
    assert dict(s.startingConstants) == dict(cld.startingConstants)
    assert s.phaseSequence == DEFAULT_PHASE_SEQUENCE
    assert (s.digitisationAccuracy, s.pandoraPFAAccuracy, s.numberOfJobs) == (0.05, 0.025, 100)
    assert (s.gammaEventsPerFile, s.maxFailedWorkerFraction, s.maxResubmissionsPerWorker) == (1000, 0.5, 3)
    # the steering's own Pandora settings; the training settings found beside it
    assert (s.pandoraSettingsFile, s.pandoraSettingsTrainingFile, dict(s.steeringConstants)) == (None, None, {})
    assert (s.marlinExecutable, s.platform, s.marlinVersion) == ("Marlin", "x86_64-el9-gcc13-opt", None)


def test_steering_constants_are_text_as_marlin_takes_them():
    s = settings_from_dict(minimal(steeringConstants={"DetectorModel": "ILD_l5_o1_v02", "CMSEnergy": 250}))
    assert dict(s.steeringConstants) == {"DetectorModel": "ILD_l5_o1_v02", "CMSEnergy": "250"}
    assert s.to_dict()["steeringConstants"] == {"DetectorModel": "ILD_l5_o1_v02", "CMSEnergy": "250"}


def test_user_values_override_model_values():
    s = settings_from_dict(minimal(
        nHcalLayers=40, DDCaloDigiName="MyCaloDigi", ecalBarrelCosThetaRange=[0.1, 0.6], hcalMipThreshold=0.4,
        startingConstants={"CalibrHCALBarrel": 50, "ECalToMipCalibration": 170.0},
    ))
    assert (s.nHcalLayers, s.DDCaloDigiName, s.ecalBarrelCosThetaRange, s.hcalMipThreshold) == (
        40, "MyCaloDigi", (0.1, 0.6), 0.4)
    cld = load_detector_model("CLD").startingConstants
    assert s.startingConstants["CalibrHCALBarrel"] == 50.0
    assert s.startingConstants["ECalToMipCalibration"] == 170.0
    assert s.startingConstants["CalibrHCALEndcap"] == cld["CalibrHCALEndcap"]
    assert s.DDPandoraPFANewProcessorName == "MyDDMarlinPandora_10ns"


def test_thick_layers_and_a_single_calibrecal_value():
    s = settings_from_dict(minimal(nEcalThinLayers=30, nEcalThickLayers=10,
                                   ecalResponseCorrectionForThickLayers=2.4, startingConstants={"CalibrECAL": 40}))
    assert s.startingConstants["CalibrECAL"] == (40.0, 96.0)
    s = settings_from_dict(minimal(startingConstants={"CalibrECAL": [40, 80]}))
    assert s.startingConstants["CalibrECAL"] == (40.0, 80.0)


@pytest.mark.parametrize(
    "name", ["FCCee_01_v04_ecal20_10.tgz", "/ilc/user/o/oviazlo/geo/FCCee_01_v04_ecal20_10.tar.gz"]
)
def test_tarball_model_names(name):
    s = settings_from_dict(minimal(detectorModel=name))
    assert s.detectorModel == s.geometryTarball == name
    assert s.detectorModelName == "FCCee_01_v04_ecal20_10"
    assert (s.nEcalThinLayers, s.nEcalThickLayers, s.ecalResponseCorrectionForThickLayers) == (20, 10, 2.0)
    assert s.model().name == "FCCee_01_v04_ecal20_10"
    d = s.to_dict()
    assert settings_from_dict(d) == s
    d["geometryTarball"] = "other.tgz"
    assert "derived from detectorModel" in problem_for(problems_of(d), "geometryTarball")


def test_phase_sequence_and_start_stop_cut():
    s = settings_from_dict(minimal(startStage=3))
    assert s.phaseSequence == ("3.0", "3.1", "3.2", "3.3", "3.4")
    s = settings_from_dict(minimal(startStage=1, startPhase=3, stopStage=2, stopPhase=5, zudsFiles=ZUDS))
    assert s.phaseSequence == ("1.3", "1.4", "2.5")
    s = settings_from_dict(minimal(phaseSequence=["1.0", "1.3", "1.5", "3.3"], stopStage=1, stopPhase=4))
    assert s.phases() == [(1, 0), (1, 3)]
    s = settings_from_dict(minimal(phaseSequence=[1.0, 1.1, 2.5]))  # unquoted YAML numbers
    assert s.phaseSequence == ("1.0", "1.1", "2.5")
    assert settings_from_dict(s.to_dict()) == s


def test_samples_are_only_needed_by_the_phases_that_run():
    s = settings_from_dict(minimal(stopStage=1, zudsFiles=None))
    assert s.zudsFiles == () and s.samples() == ["gamma", "kaon", "muon"]
    s = settings_from_dict(minimal(phaseSequence=["1.0", "1.3"], kaonFiles=None, muonFiles=None, zudsFiles=None))
    assert s.samples() == ["gamma"]


def test_file_lists_from_text_files_next_to_the_settings_file(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "gamma.txt").write_text("# photons\n\n/a/g1.slcio\n  /a/g2.slcio  \n")
    (tmp_path / "steer.xml").write_text("<marlin/>")
    (tmp_path / "s.yaml").write_text(
        "detectorModel: CLD\nsteeringFile: steer.xml\nbackend: local\nstopStage: 1\nphaseSequence: ['1.0']\n"
        "gammaFiles: lists/gamma.txt\nkaonFiles: /single/kaon.slcio\n")
    s = load_settings(tmp_path / "s.yaml")
    assert s.gammaFiles == ("/a/g1.slcio", "/a/g2.slcio")
    assert s.kaonFiles == ("/single/kaon.slcio",)
    assert s.steeringFile == str(tmp_path / "steer.xml")


# ------------------------------------------------------------------------------------ problems
def test_every_problem_is_reported_at_once_naming_its_key():
    d = minimal(
        numberOfJobs=-1, fractionOfFinishedJobsNeededToStartNextStep=1.5, digitisationAccuracy=0.7,
        pandoraPFAAccuracy=0, ecalBarrelCosThetaRange=[0.7, 0.2], hcalEndcapCosThetaRange=[0.8, 1.2],
        numberOfJob=100, backend="grid", strategy="quick", gammaEnergy=-10, kaonEventsPerFile=0,
        maxFailedWorkerFraction=0, cpuTime=0, maxIterationsPerPhase=0, disableSoftwareCompensation="maybe",
        muonEnergy="ten", platform="", phaseSequence=["1.0", "1.7", "0.1", "x"],
    )
    problems = problems_of(d)
    for key in ("numberOfJobs", "fractionOfFinishedJobsNeededToStartNextStep", "digitisationAccuracy",
                "pandoraPFAAccuracy", "ecalBarrelCosThetaRange", "hcalEndcapCosThetaRange", "numberOfJob", "backend",
                "strategy", "gammaEnergy", "kaonEventsPerFile", "maxFailedWorkerFraction", "cpuTime",
                "maxIterationsPerPhase", "disableSoftwareCompensation", "muonEnergy", "platform", "phaseSequence"):
        problem_for(problems, key)
    assert len(problems) == 18
    with pytest.raises(SettingsError) as info:
        settings_from_dict(d)
    assert str(info.value).splitlines() == problems
    assert isinstance(info.value, ValueError)
    assert "did you mean 'numberOfJobs'" in problem_for(problems, "numberOfJob")
    assert "did you mean 'dirac'" not in problem_for(problems, "backend")
    assert "[1.7, 0.1" not in problem_for(problems, "phaseSequence")
    assert "'1.7', '0.1', 'x'" in problem_for(problems, "phaseSequence")


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("numberOfJobs", "many", "must be an integer"),
        ("numberOfJobs", True, "must be an integer"),
        ("numberOfJobs", 10.5, "must be an integer"),
        ("gammaEnergy", float("nan"), "must be a finite number"),
        ("ecalEndcapCosThetaRange", 0.5, "two numbers"),
        ("ecalEndcapCosThetaRange", [0.5, 0.6, 0.7], "two numbers"),
        ("ecalBarrelCosThetaRange", [0.5, 0.5], "increasing"),
        ("ecalBarrelCosThetaRange", [0.0, 0.8], "overlaps ecalEndcapCosThetaRange"),
        ("marlinExecutable", 3, "quote it"),
        ("ecalFirstLayerNumber", 2, "must be 0 or 1"),
        ("gammaFiles", 12, "must be a list of files"),
        ("gammaFiles", ["/a.slcio", "/a.slcio"], "more than once"),
        ("gammaFiles", ["/a.slcio", ""], "non-empty strings"),
        ("gammaFiles", "gamma.txt", "only read when loading a settings file"),
        ("phaseSequence", [], "non-empty list"),
        ("phaseSequence", ["1.0", "1.0"], "more than once"),
        ("startingConstants", [1, 2], "must be a mapping"),
        ("steeringConstants", ["DetectorModel"], "must be a mapping of constant name -> value"),
        ("steeringConstants", {"DetectorModel": None}, "values text or numbers"),
        ("steeringConstants", {"${X}": "1"}, "constant names must be"),
        ("steeringConstants", {f"C{i}": "1" for i in range(101)}, "more than 100"),
        ("steeringConstants", {"DetectorModel": "x" * 1001}, "at most 1000 characters"),
    ],
)
def test_wrong_types_and_ranges(key, value, fragment):
    assert fragment in problem_for(problems_of(**{key: value}), key)


def test_did_you_mean_for_keys_models_and_constants():
    problems = problems_of(minimal(digitizationAccuracy=0.02, numberofjobs=3, detectorModel="FCCee_o1_v4",
                                   startingConstants={"CalibHCALBarrel": 1.0, "MaxClusterEnergyToApplySoftComp": 0,
                                                      "HCalToHadGeVCalibration": -1}))
    assert "did you mean 'digitisationAccuracy'" in problem_for(problems, "digitizationAccuracy")
    assert "did you mean 'numberOfJobs'" in problem_for(problems, "numberofjobs")
    assert "did you mean 'FCCee_o1_v04'" in problem_for(problems, "detectorModel")
    assert "did you mean 'CalibrHCALBarrel'" in problem_for(problems, "startingConstants.CalibHCALBarrel")
    assert "steering file" in problem_for(problems, "startingConstants.MaxClusterEnergyToApplySoftComp")
    assert "positive" in problem_for(problems, "startingConstants.HCalToHadGeVCalibration")
    # an unknown model does not cascade into "missing" model values
    assert not any(p.startswith(("DDCaloDigiName", "nHcalLayers", "ecalBarrel")) for p in problems)


def test_required_keys():
    problems = problems_of({"backend": "dirac"})
    assert "required" in problem_for(problems, "detectorModel")
    assert "required" in problem_for(problems, "steeringFile")
    problems = problems_of(minimal(backend="dirac"))
    assert "dirac backend" in problem_for(problems, "marlinVersion")
    assert settings_from_dict(minimal(backend="dirac", marlinVersion="key4hep-2024-04-12")).backend == "dirac"


def test_inconsistent_layer_counts():
    problem = problem_for(problems_of(nEcalThinLayers=30), "nEcalThinLayers/nEcalThickLayers")
    assert "30 thin + 0 thick = 30 layers" in problem and "has 40 ECAL layers" in problem
    problem = problem_for(problems_of(nEcalThinLayers=30, nEcalThickLayers=10), "ecalResponseCorrectionForThickLayers")
    assert "required with nEcalThickLayers = 10" in problem
    s = settings_from_dict(minimal(detectorModel="FCCee_01_v04_ecal20_10", nEcalThinLayers=25, nEcalThickLayers=5))
    assert (s.nEcalThinLayers, s.nEcalThickLayers, s.ecalResponseCorrectionForThickLayers) == (25, 5, 2.0)
    assert "has 30 ECAL layers" in problem_for(problems_of(detectorModel="FCCee_01_v04_ecal20_10",
                                                           nEcalThickLayers=20), "nEcalThinLayers/nEcalThickLayers")


def test_missing_sample_lists_for_the_phases_in_the_sequence():
    problems = problems_of(phaseSequence=["1.0", "1.2", "2.5"], gammaFiles=None, kaonFiles=None, muonFiles=None,
                           zudsFiles=None)
    assert "phases 1.0 reconstruct the gamma sample" in problem_for(problems, "gammaFiles")
    assert "phases 1.2 reconstruct the kaon sample" in problem_for(problems, "kaonFiles")
    assert "1.2" in problem_for(problems, "muonFiles")
    assert "2.5" in problem_for(problems, "zudsFiles")
    assert len(problems) == 4


def test_an_empty_phase_cut_is_a_problem():
    problem = problem_for(problems_of(startStage=3, stopStage=2), "startStage/startPhase/stopStage/stopPhase")
    assert "leaves nothing" in problem


def test_missing_files_next_to_the_settings_file(tmp_path):
    shutil.copy(TALK, tmp_path / "talk.txt")
    (tmp_path / "fccee_10gev_mu_FCCee_01_v04_ecal20_10.txt").write_text("# nothing yet\n")
    problems = _load_problems(tmp_path / "talk.txt")
    for key in ("gammaFiles", "kaonFiles", "zudsFiles"):
        assert "not found (looked for" in problem_for(problems, key) and str(tmp_path) in problem_for(problems, key)
    assert "lists no files" in problem_for(problems, "muonFiles")
    assert "fcceeReconstruction_noSWC.xml' not found" in problem_for(problems, "steeringFile")
    assert len(problems) == 5


def test_legacy_format_details(tmp_path):
    text = ("*** Calibration parameters ***\n# a comment\nnumberOfJobs 10\nnumberOfJobs 20\nstopStage\n"
            "*** Detector model ***\ndetectorModel CLD\nsteeringFile 'steer.xml'\nmarlinVersion 1.10\n"
            "disableSoftwareCompensation false\nphaseSequence ['1.0', '1.3']\ngammaFiles ['/a.slcio', '/b.slcio']\n"
            "startingConstants {'CalibrECAL': [38, 38]}\noutputSE None\n")
    problems = _parse_problems(text, tmp_path)
    assert "given twice (line 4)" in problem_for(problems, "numberOfJobs")
    assert "no value given (line 5)" in problem_for(problems, "stopStage")
    assert "steer.xml' not found" in problem_for(problems, "steeringFile")
    assert len(problems) == 3
    (tmp_path / "steer.xml").write_text("<marlin/>")
    s = parse_settings(text.replace("numberOfJobs 20\nstopStage\n", ""), base_dir=tmp_path)
    assert s.marlinVersion == "1.10" and s.disableSoftwareCompensation is False and s.numberOfJobs == 10
    assert s.gammaFiles == ("/a.slcio", "/b.slcio") and s.phaseSequence == ("1.0", "1.3")
    assert s.startingConstants["CalibrECAL"] == (38.0, 38.0) and s.outputSE is None


def test_yaml_details(tmp_path):
    (tmp_path / "steer.xml").write_text("<marlin/>")
    common = "detectorModel: CLD\nsteeringFile: steer.xml\nbackend: local\nphaseSequence: ['1.0']\ngammaFiles: [/a]\n"
    s = parse_settings(common + "digitisationAccuracy: 1e-2\nmarlinVersion: '2.0'\n", fmt="yaml", base_dir=tmp_path)
    assert s.digitisationAccuracy == 0.01 and s.marlinVersion == "2.0"
    problems = _parse_problems("detectorModel: [CLD\n", tmp_path, fmt="yaml")
    assert len(problems) == 1 and "not valid YAML (line 2" in problems[0]
    assert "must be a mapping" in _parse_problems("- a\n- b\n", tmp_path, fmt="yaml")[0]
    with pytest.raises(ValueError, match="unknown settings format"):
        parse_settings(common, fmt="toml")


def test_unreadable_settings_file(tmp_path):
    problems = _load_problems(tmp_path / "missing.yaml")
    assert len(problems) == 1 and "cannot read settings file" in problems[0]


def test_every_key_is_documented():
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    assert documented == set(KEYS) | set(DERIVED_KEYS)


@pytest.mark.parametrize("header", sorted(settings_doc.TABLES))
def test_the_documented_tables_are_generated(header):
    """docs/SETTINGS.md's key and model tables are made from settings_schema and the model files;
    this fails until they are regenerated (python -m ILCDIRAC.CalibrationSystem.Utilities.settings_doc
    docs/SETTINGS.md)."""
    assert settings_doc.documented_table(DOCS.read_text(), header) == settings_doc.TABLES[header]()


def test_the_defaults_are_the_schema_defaults():
    """A key left out resolves to its schema default (model values and the mappings aside)."""
    given = minimal()
    resolved = settings_from_dict(given).to_dict()
    plain = [f for f in settings_schema.FIELDS if f.name not in given and f.kind not in ("constants", "strmap", "derived")
             and f.default is not settings_schema.MODEL and f.default is not settings_schema.REQUIRED]
    assert len(plain) > 20
    for field in plain:
        expected = list(field.default) if isinstance(field.default, tuple) else field.default
        assert resolved[field.name] == expected, field.name


def test_dataclass_fields_are_the_keys():
    assert [f.name for f in dataclasses.fields(Settings)] == [*KEYS, *DERIVED_KEYS]


#: The type a Settings attribute has for each kind of schema field.
RESOLVED_TYPES = {"int": "int", "float": "float", "bool": "bool", "str": "str", "optstr": "str | None",
                  "choice": "str", "lfn": "str | None", "range": "tuple[float, float]", "files": "tuple[str, ...]",
                  "phases": "tuple[str, ...]", "constants": "Mapping[str, Any]", "strmap": "Mapping[str, str]"}


def test_dataclass_types_follow_the_schema():
    derived = {"detectorModelName": "str", "geometryTarball": "str | None"}
    for attribute in dataclasses.fields(Settings):
        kind = settings_schema.BY_NAME[attribute.name].kind
        assert attribute.type == derived.get(attribute.name) or attribute.type == RESOLVED_TYPES.get(kind), attribute.name


def _load_problems(path):
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    return info.value.problems


def _parse_problems(text, base, fmt=None):
    with pytest.raises(SettingsError) as info:
        parse_settings(text, fmt=fmt, base_dir=base)
    return info.value.problems


def test_results_go_to_an_lfn_folder_with_a_storage_element_for_every_backend(tmp_path):
    (tmp_path / "steering.xml").write_text("<marlin/>")
    base = "detectorModel: CLD\nsteeringFile: steering.xml\ngammaFiles: [a.slcio]\nphaseSequence: ['1.0']\n"
    with pytest.raises(SettingsError, match="outputSE: required with an outputPath"):
        parse_settings(base + "backend: dirac\nmarlinVersion: v1\noutputPath: /ilc/user/a/out\n", fmt="yaml",
                       base_dir=tmp_path)
    # a local folder is not an LFN: the agent never writes where a user points it
    for folder, fragment in (("results", "must be an absolute LFN"), ("/ilc/user/a/alice/../bob", "contains '..'"),
                             ("LFN:relative/x", "must be an absolute LFN"), ("/", "names no folder")):
        problems = _parse_problems(base + f"backend: local\noutputPath: {folder}\noutputSE: SE\n", tmp_path, "yaml")
        assert fragment in problem_for(problems, "outputPath"), (folder, problems)
    # written any way, an LFN is kept in one normal form, so it is compared with the owner's folder as such
    local = parse_settings(base + "backend: local\noutputPath: LFN:/ilc//user/./a/alice/calib/\noutputSE: SE\n",
                           fmt="yaml", base_dir=tmp_path)
    assert local.outputPath == "/ilc/user/a/alice/calib"


@pytest.mark.parametrize("name, fragment", [
    ("../../etc/shadow", "contains '..'"),
    ("LFN:/../../x", "contains '..'"),
    ("LFN:relative.slcio", "must be an absolute LFN"),
    ("/ilc/prod/../../../etc/passwd", "contains '..'"),
    ("gamma\n.slcio", "control characters"),
    ("x" * 300 + ".slcio", "longer than 255 bytes"),
    ("/a/" * 2000, "more than 4096"),
])
def test_sample_file_names_never_climb_out(name, fragment):
    problems = problems_of(minimal(gammaFiles=[name]))
    assert fragment in problem_for(problems, "gammaFiles"), problems
    assert len(problem_for(problems, "gammaFiles")) < 400, "the refusal repeats only a short piece of the name"


def test_sample_file_names_are_kept_in_normal_form():
    files = ["LFN:/ilc//prod/./gamma_1.slcio", "/data/gamma_2.slcio", "samples/./gamma_3.slcio", "root://eos.cern.ch//a/b.slcio"]
    assert list(settings_from_dict(minimal(gammaFiles=files)).gammaFiles) == [
        "LFN:/ilc/prod/gamma_1.slcio", "/data/gamma_2.slcio", "samples/gamma_3.slcio", "root://eos.cern.ch//a/b.slcio"]


def test_a_yaml_alias_bomb_is_refused_in_one_line_at_once(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    levels += ["gammaFiles: *a11"]  # 10^12 sample files once expanded
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")
    problems = _load_problems(path)
    assert len(problems) == 1
    assert problems[0].startswith("the settings file is refused: it holds more than 100000 values once its "
                                  "aliases are expanded (line "), problems
    # the same file without the .yaml suffix is still recognised as YAML
    path.rename(tmp_path / "bomb.txt")
    assert _load_problems(tmp_path / "bomb.txt") == problems


def test_recursive_aliases_and_deep_nesting_are_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [1, *a]\n")
    assert _load_problems(path) == ["the settings file is refused: it has an alias inside the node it refers to "
                                    "(a recursive alias) (line 1, column 11)"]
    path.write_text("a: " + "[" * 60 + "]" * 60 + "\n")
    assert _load_problems(path)[0].startswith("the settings file is refused: it nests deeper than 50 levels")


def test_a_few_ordinary_aliases_are_fine(tmp_path):
    (tmp_path / "steering.xml").write_text("<marlin/>")
    path = tmp_path / "aliases.yaml"
    path.write_text("detectorModel: CLD\nsteeringFile: steering.xml\nbackend: local\nphaseSequence: ['1.0', '1.1']\n"
                    "gammaFiles: &same [/d/a.slcio, /d/b.slcio]\nkaonFiles: *same\n")
    settings = load_settings(path)
    assert settings.gammaFiles == settings.kaonFiles == ("/d/a.slcio", "/d/b.slcio")


def test_settings_and_list_files_are_read_only_up_to_their_size_limit(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "w") as out:
        out.write("detectorModel: CLD\ngammaFiles:\n")
        while out.tell() <= MAX_SETTINGS_BYTES:
            out.write("  - /ilc/prod/gamma/gamma_0000000000000000.slcio\n")
    assert _load_problems(big) == [f"cannot read settings file {big}: larger than the limit of 1024 KiB"]
    # a file that never ends is read only up to the limit too
    assert _load_problems(Path("/dev/zero")) == ["cannot read settings file /dev/zero: larger than the limit of 1024 KiB"]
    listing = tmp_path / "gamma.txt"
    listing.write_bytes(b"/a.slcio\n" * (MAX_LIST_FILE_BYTES // 9 + 1))
    (tmp_path / "steering.xml").write_text("<marlin/>")
    problems = _parse_problems("detectorModel: CLD\nsteeringFile: steering.xml\ngammaFiles: gamma.txt\n", tmp_path, "yaml")
    assert problem_for(problems, "gammaFiles") == f"gammaFiles: list file {listing} is refused: larger than the limit of 8192 KiB"


def test_a_huge_broken_file_lists_a_bounded_number_of_problems(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("".join(f"unknownKey{i}: {i}\n" for i in range(5000)))
    problems = _load_problems(path)
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1].endswith("more problems")


@pytest.mark.parametrize("key, value, fragment", [
    ("numberOfJobs", 2**40, "must be at most 2147483647 in size"),
    ("stopStage", 100, "must be in [0, 99]"),
    ("phaseSequence", ["100.0"], "unknown phases"),
    ("phaseSequence", ["1" * 5000 + ".0"], "unknown phases"),
    ("marlinVersion", "v1 ]; Executable = \"/bin/sh\"", "must be one word"),
    ("platform", "x86_64\nEl9", "must be one word"),
    ("outputSE", "CERN EOS", "must be one word"),
])
def test_numbers_stages_and_job_description_words_are_bounded(key, value, fragment):
    problem = problem_for(problems_of(minimal(**{key: value})), key)
    assert fragment in problem and len(problem) < 400, problem
