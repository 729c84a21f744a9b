"""Detector models as data: lookup by name, alias and tarball; the data's internal consistency."""
import json
import math

import pytest
import yaml

from ILCDIRAC.CalibrationSystem.Utilities import detectors
from ILCDIRAC.CalibrationSystem.Utilities.carriers import CALIBRATED_CONSTANTS
from ILCDIRAC.CalibrationSystem.Utilities.detectors import (
    SETTINGS_KEYS,
    DetectorModelError,
    available_models,
    is_tarball,
    load_detector_model,
    model_stem,
)

FCCEE_VARIANTS = ("FCCee_01_v04_ecal40", "FCCee_01_v04_ecal30", "FCCee_01_v04_ecal20", "FCCee_01_v04_ecal20_10")


def test_available_models():
    assert set(available_models()) == {"CLIC_o3_v14", "FCCee_o1_v04", "ILD_l5_o1_v02", *FCCEE_VARIANTS}


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("CLD", "FCCee_o1_v04"),
        ("FCCee_o1_v04", "FCCee_o1_v04"),
        ("CLICdet", "CLIC_o3_v14"),
        ("ILD", "ILD_l5_o1_v02"),
        ("fccee_01_v04_ecal20_10", "FCCee_01_v04_ecal20_10"),
        ("FCCee_01_v04_ecal20_10.tgz", "FCCee_01_v04_ecal20_10"),
        ("/ilc/user/o/oviazlo/geometry/FCCee_01_v04_ecal30.tar.gz", "FCCee_01_v04_ecal30"),
        ("CLIC_o3_v14.zip", "CLIC_o3_v14"),
    ],
)
def test_lookup_by_name_alias_and_tarball(name, canonical):
    assert load_detector_model(name).name == canonical


def test_tarball_helpers():
    assert is_tarball("x/FCCee_01_v04_ecal20_10.tgz") and is_tarball("a.TAR.GZ")
    assert not is_tarball("FCCee_o1_v04")
    assert model_stem("/a/b/FCCee_01_v04_ecal20_10.tar.xz") == "FCCee_01_v04_ecal20_10"
    assert model_stem("CLD") == "CLD"


@pytest.mark.parametrize(
    "name, suggestion",
    [
        ("CLIC_o3_v13", "CLIC_o3_v14"),
        ("FCCee_01_v04_ecal2O_10.tgz", "FCCee_01_v04_ecal20_10"),
        ("fccee_o1_v4", "FCCee_o1_v04"),
    ],
)
def test_unknown_model_suggests_the_closest(name, suggestion):
    with pytest.raises(DetectorModelError) as info:
        load_detector_model(name)
    message = str(info.value)
    assert f"did you mean {suggestion!r}" in message
    assert "FCCee_o1_v04" in message  # the known models are listed


def test_bad_names():
    for bad in ("", "   ", None, 42):
        with pytest.raises(DetectorModelError):
            load_detector_model(bad)
    with pytest.raises(DetectorModelError) as info:
        load_detector_model("SiD_o2_v03")
    assert "did you mean" not in str(info.value)


def test_processor_names_and_geometry_of_clic_and_cld():
    cld, clic = load_detector_model("CLD"), load_detector_model("CLIC_o3_v14")
    assert (cld.DDCaloDigiName, cld.DDPandoraPFANewProcessorName) == ("MyDDCaloDigi_10ns", "MyDDMarlinPandora_10ns")
    assert (clic.DDCaloDigiName, clic.DDPandoraPFANewProcessorName) == ("MyDDCaloDigi", "MyDDMarlinPandora")
    assert cld.PfoAnalysisName == clic.PfoAnalysisName == "MyPfoAnalysis"
    assert (cld.nHcalLayers, clic.nHcalLayers) == (44, 60)
    assert cld.ecalBarrelCosThetaRange == (0.0, 0.643) and cld.ecalEndcapCosThetaRange == (0.766, 0.94)
    assert cld.hcalBarrelCosThetaRange == (0.15, 0.485) and cld.hcalEndcapCosThetaRange == (0.72, 0.94)
    assert clic.ecalBarrelCosThetaRange == (0.0, 0.65) and clic.ecalEndcapCosThetaRange == (0.8, 0.92)
    assert clic.hcalBarrelCosThetaRange == (0.2, 0.6) and clic.hcalEndcapCosThetaRange == (0.8, 0.9)
    for model in (cld, clic):
        # 0.5 + 19 + 0.5 mm steel radiator and 3 mm scintillator per layer, endcap and ring alike
        assert (model.hcalAbsorberThicknessEndcap, model.hcalAbsorberThicknessRing) == (20.0, 20.0)
        assert (model.hcalScintillatorThicknessEndcap, model.hcalScintillatorThicknessRing) == (3.0, 3.0)
        assert (model.ecalMipThreshold, model.hcalMipThreshold) == (0.5, 0.3)
        assert model.ecalFirstLayerNumber == 1


@pytest.mark.parametrize("name", sorted(["CLIC_o3_v14", "FCCee_o1_v04", "ILD_l5_o1_v02", *FCCEE_VARIANTS]))
def test_every_model_is_complete_and_consistent(name):
    model = load_detector_model(name)
    assert model.nEcalThinLayers + model.nEcalThickLayers == model.nEcalLayers
    assert (model.nEcalThickLayers > 0) == (model.ecalResponseCorrectionForThickLayers is not None)
    assert set(CALIBRATED_CONSTANTS) <= set(model.startingConstants)
    thin, thick = model.startingConstants["CalibrECAL"]
    ratio = model.ecalResponseCorrectionForThickLayers or 1.0
    assert thick / thin == pytest.approx(ratio, rel=1e-3)
    for calo in ("ecal", "hcal"):
        barrel = getattr(model, f"{calo}BarrelCosThetaRange")
        endcap = getattr(model, f"{calo}EndcapCosThetaRange")
        assert 0 <= barrel[0] < barrel[1] < endcap[0] < endcap[1] <= 1
    defaults = model.settings_defaults()
    assert set(defaults) == set(SETTINGS_KEYS)
    json.dumps(defaults)
    constants = model.constants()
    constants["CalibrECAL"][0] = -1.0  # a copy: the model stays untouched
    assert model.startingConstants["CalibrECAL"][0] == thin


@pytest.mark.parametrize("name", ["CLIC_o3_v14", "FCCee_o1_v04"])
def test_mip_scales_are_centres_of_the_pfoanalysis_mip_histogram_bins(name):
    """ToMip = 1/peak with the peak a bin centre of the 500-bin [0, 0.1] GeV histogram (0.2 MeV bins)."""
    constants = load_detector_model(name).startingConstants
    for key in ("ECalToMipCalibration", "HCalToMipCalibration"):
        bins = (1.0 / constants[key]) / 0.0002
        assert abs(bins - (math.floor(bins) + 0.5)) < 1e-3, key


def test_fccee_variants_scale_cld_with_the_tungsten_thickness():
    cld = load_detector_model("CLD")
    tungsten = {"FCCee_01_v04_ecal40": 1.9, "FCCee_01_v04_ecal30": 2.62, "FCCee_01_v04_ecal20": 3.15}
    layers = {"FCCee_01_v04_ecal40": 40, "FCCee_01_v04_ecal30": 30, "FCCee_01_v04_ecal20": 20}
    for name, thickness in tungsten.items():
        model = load_detector_model(name)
        scale = thickness / 1.9
        assert model.ecalAbsorberThicknessThin == thickness
        assert (model.nEcalThinLayers, model.nEcalThickLayers) == (layers[name], 0)
        thin, thick = model.startingConstants["CalibrECAL"]
        assert thin == thick == pytest.approx(cld.startingConstants["CalibrECAL"][0] * scale, rel=1e-6)
        # the digitised MIP peak moves with the constant: ToMip * CalibrECAL stays CLD's
        assert model.startingConstants["ECalToMipCalibration"] * thin == pytest.approx(
            cld.startingConstants["ECalToMipCalibration"] * cld.startingConstants["CalibrECAL"][0], rel=1e-5)
        for key in set(CALIBRATED_CONSTANTS) - {"CalibrECAL", "ECalToMipCalibration"}:
            assert model.startingConstants[key] == cld.startingConstants[key], key
        assert model.DDCaloDigiName == cld.DDCaloDigiName and model.nHcalLayers == 44
        assert model.aliases == ()  # aliases are not inherited from the base model
    mixed = load_detector_model("FCCee_01_v04_ecal20_10")
    assert (mixed.nEcalThinLayers, mixed.nEcalThickLayers, mixed.nEcalLayers) == (20, 10, 30)
    assert mixed.ecalResponseCorrectionForThickLayers == 2.0
    assert mixed.ecalAbsorberThicknessThick / mixed.ecalAbsorberThicknessThin == 2.0
    assert mixed.startingConstants["CalibrECAL"] == (37.5227197175, 2 * 37.5227197175)
    assert mixed.ecalBarrelCosThetaRange == cld.ecalBarrelCosThetaRange


def test_ild_constants_follow_from_ildconfig_energy_factors():
    ild = load_detector_model("ILD")
    thin, thick = ild.startingConstants["CalibrECAL"]
    assert thin == pytest.approx(0.0063520964756 / 0.0001575, rel=1e-7)
    assert thick == pytest.approx(0.012902699188 / 0.0001575, rel=1e-7)
    assert ild.ecalResponseCorrectionForThickLayers == pytest.approx(thick / thin, abs=0.005)
    assert (ild.nEcalThinLayers, ild.nEcalThickLayers, ild.nHcalLayers) == (20, 10, 48)
    assert ild.startingConstants["HCalToHadGeVCalibration"] == 1.02821419758


# ------------------------------------------------------------------------------------ bad data files
@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    """A private model folder; the caches are cleared before and after so other tests see the real data."""
    monkeypatch.setattr(detectors, "DATA_DIR", tmp_path)
    detectors._models.cache_clear()
    detectors._name_index.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    detectors._models.cache_clear()
    detectors._name_index.cache_clear()


def test_a_model_file_may_extend_a_base_and_errors_name_the_file(data_dir):
    base = {
        "name": "Base",
        "DDCaloDigiName": "D", "DDPandoraPFANewProcessorName": "P", "PfoAnalysisName": "A",
        "ecalBarrelCosThetaRange": [0.0, 0.6], "ecalEndcapCosThetaRange": [0.8, 0.9],
        "hcalBarrelCosThetaRange": [0.1, 0.5], "hcalEndcapCosThetaRange": [0.7, 0.9],
        "nEcalLayers": 30, "nEcalThinLayers": 30, "nEcalThickLayers": 0,
        "ecalResponseCorrectionForThickLayers": None, "ecalFirstLayerNumber": 1, "nHcalLayers": 40,
        "hcalAbsorberThicknessEndcap": 19.0, "hcalAbsorberThicknessRing": 20.0,
        "hcalScintillatorThicknessEndcap": 3.0, "hcalScintillatorThicknessRing": 3.0,
        "ecalMipThreshold": 0.5, "hcalMipThreshold": 0.3,
        "startingConstants": {name: 1.0 for name in CALIBRATED_CONSTANTS} | {"CalibrECAL": [30.0, 30.0]},
    }
    (data_dir / "Base.yaml").write_text(yaml.safe_dump(base))
    (data_dir / "Child.yaml").write_text(yaml.safe_dump(
        {"name": "Child", "base": "Base", "aliases": ["Kid"], "nHcalLayers": 50,
         "startingConstants": {"CalibrHCALBarrel": 2.0}}))
    child = load_detector_model("Kid")
    assert child.name == "Child" and child.nHcalLayers == 50 and child.hcalAbsorberThicknessEndcap == 19.0
    assert child.startingConstants["CalibrHCALBarrel"] == 2.0
    assert child.startingConstants["CalibrECAL"] == (30.0, 30.0)

    (data_dir / "Broken.yaml").write_text(yaml.safe_dump(
        {"name": "Broken", "base": "Base", "nEcalThickLayers": 5, "ecalBarrelCosThetaRange": [0.6, 0.2],
         "startingConstants": {"CalibECAL": [1, 2], "ECalToMipCalibration": -3}}))
    detectors._models.cache_clear()
    with pytest.raises(DetectorModelError) as info:
        load_detector_model("Child")
    message = str(info.value)
    assert "Broken.yaml" in message
    for fragment in ("ecalBarrelCosThetaRange", "nEcalThinLayers + nEcalThickLayers", "needs ecalResponseCorrection",
                     "unknown constant 'CalibECAL'", "ECalToMipCalibration must be a positive number"):
        assert fragment in message


def test_malformed_model_files_are_refused(data_dir):
    (data_dir / "A.yaml").write_text("name: B\n")
    with pytest.raises(DetectorModelError, match="file name stem"):
        load_detector_model("A")
    (data_dir / "A.yaml").write_text("name: A\nbase: A\n")
    detectors._models.cache_clear()
    with pytest.raises(DetectorModelError, match="circular"):
        load_detector_model("A")
    (data_dir / "A.yaml").write_text("name: A\nnHcalLayer: 3\n")
    detectors._models.cache_clear()
    with pytest.raises(DetectorModelError, match="unknown keys"):
        load_detector_model("A")
