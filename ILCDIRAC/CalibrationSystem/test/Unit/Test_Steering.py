"""The Marlin steering editor: reads like Marlin, writes only the targeted bytes, fails clearly."""
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from marlin_emulator import STEERING
from ILCDIRAC.CalibrationSystem.Utilities import steering
from ILCDIRAC.CalibrationSystem.Utilities.steering import SteeringError

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = (DATA / "fcceeReconstruction_noSWC.xml").read_text()
REALISTIC = STEERING
DIGI, PANDORA = "MyDDCaloDigi_10ns", "MyDDMarlinPandora_10ns"


def replaced(text, old, new):
    """The expected result of an edit: exactly one occurrence of ``old`` becomes ``new``."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


# ------------------------------------------------------------------------------------ reading
def test_read_parameters_in_attribute_and_text_form():
    digi = steering.read_parameters(FIXTURE, DIGI)
    assert digi["CalibrECAL"] == "37.5227197175 37.5227197175"  # text form
    assert digi["CalibrHCALBarrel"] == "45.9956826061"  # value attribute
    assert digi["ECALLayers"] == "41 100"  # surrounding whitespace is not part of the value
    assert digi["ECALBarrelTimeWindowMax"] == "${CalorimeterIntegrationTimeWindow}"  # Marlin constants stay raw
    pandora = steering.read_parameters(FIXTURE, PANDORA)
    assert pandora["PandoraSettingsXmlFile"] == "PandoraSettingsCLD/PandoraSettingsDefault.xml"
    assert pandora["MaxClusterEnergyToApplySoftComp"] == "0"
    assert steering.read_global_parameters(FIXTURE)["LCIOInputFiles"] == "input_1.slcio input_2.slcio"


def test_group_parameters_apply_to_the_processors_of_the_group():
    pfo = steering.read_parameters(FIXTURE, "MyPfoAnalysis")
    assert pfo == {"CollectCalibrationDetails": "1", "RootFile": "pfoAnalysis.root", "Verbosity": "WARNING"}


def test_processors_by_type_and_execution_order():
    assert steering.processor_names_by_type(FIXTURE, "DDCaloDigi") == [DIGI]
    assert steering.processor_names_by_type(FIXTURE, "DDPandoraPFANewProcessor") == [PANDORA]
    assert steering.processor_names_by_type(FIXTURE, "NoSuchType") == []
    # <if> blocks are entered and group references expanded
    assert steering.executed_processors(FIXTURE) == ["InitDD4hep", DIGI, PANDORA, "MyPfoAnalysis"]


# ------------------------------------------------------------------------------------ byte-exact edits
def test_text_form_edit_changes_only_the_value():
    new = steering.set_processor_parameters(FIXTURE, DIGI, {"CalibrECAL": [40.0, 80.5]})
    assert new == replaced(FIXTURE, ">37.5227197175 37.5227197175</parameter>", ">40.0 80.5</parameter>")


def test_text_form_keeps_the_whitespace_around_the_value():
    new = steering.set_processor_parameters(FIXTURE, DIGI, {"ECALLayers": "21 31"})
    assert new == replaced(FIXTURE, ">41 100  </parameter>", ">21 31  </parameter>")
    new = steering.set_processor_parameters(FIXTURE, PANDORA, {"PandoraSettingsXmlFile": "PandoraSettingsDefault.xml"})
    assert new == replaced(FIXTURE, "> PandoraSettingsCLD/PandoraSettingsDefault.xml </parameter>",
                           "> PandoraSettingsDefault.xml </parameter>")


def test_attribute_form_edit_changes_only_the_value():
    new = steering.set_processor_parameters(FIXTURE, DIGI, {"CalibrHCALBarrel": 47.25, "ECALThreshold": 1e-4})
    expected = replaced(FIXTURE, 'value="45.9956826061"', 'value="47.25"')
    expected = replaced(expected, 'value="5e-05"', 'value="0.0001"')
    assert new == expected


def test_adding_a_missing_parameter_follows_the_processor_layout():
    new = steering.set_processor_parameters(FIXTURE, DIGI, {"ECALGapCorrection": 1, "CalibrECAL": [1.5, 3.0]})
    expected = replaced(FIXTURE, ">37.5227197175 37.5227197175</parameter>", ">1.5 3.0</parameter>")
    expected = replaced(
        expected,
        '<parameter name="HCALEndcapCorrectionFactor" type="float">1.000</parameter>\n',
        '<parameter name="HCALEndcapCorrectionFactor" type="float">1.000</parameter>\n'
        '    <parameter name="ECALGapCorrection">1</parameter>\n',
    )
    assert new == expected
    assert steering.read_parameters(new, DIGI)["ECALGapCorrection"] == "1"
    # after an attribute-form parameter, the new one uses the attribute form too
    new = steering.set_processor_parameters(FIXTURE, PANDORA, {"SoftwareCompensationWeights": [1.5, -0.02]})
    assert new == replaced(
        FIXTURE,
        '<parameter name="MaxClusterEnergyToApplySoftComp" value="0"/>\n',
        '<parameter name="MaxClusterEnergyToApplySoftComp" value="0"/>\n'
        '    <parameter name="SoftwareCompensationWeights" value="1.5 -0.02"/>\n',
    )


def test_self_closing_processor_and_parameter_are_opened_up():
    text = ('<marlin>\n  <execute><processor name="A"/></execute>\n  <global/>\n'
            '  <processor name="A" type="T"/>\n  <processor name="B" type="T">\n'
            '    <parameter name="P" />\n  </processor>\n</marlin>\n')
    new = steering.set_processor_parameters(text, "A", {"X": 2})
    assert new == replaced(text, '<processor name="A" type="T"/>',
                           '<processor name="A" type="T">\n    <parameter name="X" value="2"/>\n  </processor>')
    new = steering.set_processor_parameters(text, "B", {"P": "v w"})
    assert new == replaced(text, '<parameter name="P" />', '<parameter name="P" value="v w" />')
    assert steering.read_parameters(new, "B") == {"P": "v w"}


def test_global_parameters():
    files = [f"/ilc/user/x/gamma_{i}.slcio" for i in range(3)]
    new = steering.set_global_parameters(FIXTURE, {"LCIOInputFiles": files, "MaxRecordNumber": 250, "SkipNEvents": 750,
                                                   "AllowToModifyEvent": True})
    expected = replaced(FIXTURE, "> input_1.slcio input_2.slcio </parameter>", f"> {' '.join(files)} </parameter>")
    expected = replaced(expected, '"MaxRecordNumber" value="0"', '"MaxRecordNumber" value="250"')
    expected = replaced(expected, '"SkipNEvents" value="0"', '"SkipNEvents" value="750"')
    expected = replaced(expected, '<parameter name="RandomSeed" value="1234567890" />\n',
                        '<parameter name="RandomSeed" value="1234567890" />\n'
                        '    <parameter name="AllowToModifyEvent" value="true"/>\n')
    assert new == expected
    values = steering.read_global_parameters(new)
    assert values["LCIOInputFiles"].split() == files and values["SkipNEvents"] == "750"


def test_special_characters_are_escaped_and_read_back():
    new = steering.set_processor_parameters(FIXTURE, "MyPfoAnalysis", {"RootFile": 'a&b<"c">.root'})
    ET.fromstring(new.split("?>", 1)[1])  # still well-formed
    assert steering.read_parameters(new, "MyPfoAnalysis")["RootFile"] == 'a&b<"c">.root'
    assert "a&amp;b&lt;" in new


def test_value_formatting():
    assert steering.format_value(0.1 + 0.2) == "0.30000000000000004"  # repr precision: round trip exact
    assert float(steering.format_value(37.5227197175)) == 37.5227197175
    assert steering.format_value(np.float64(1.0672142727)) == "1.0672142727"
    assert steering.format_value(np.array([37.5, 75.0])) == "37.5 75.0"
    assert steering.format_value((3, np.int64(4))) == "3 4"
    assert steering.format_value(1e7) == "10000000.0"
    assert steering.format_value(False) == "false" and steering.format_value(np.bool_(True)) == "true"
    for bad in (float("nan"), float("inf"), None, {"a": 1}):
        with pytest.raises(SteeringError):
            steering.format_value(bad)


# ------------------------------------------------------------------------------------ constants
CONSTANTS = {
    "CalibrECAL": [38.0, 76.0],
    "ECALEndcapCorrectionFactor": 1.025,
    "CalibrHCALBarrel": 46.5,
    "CalibrHCALEndcap": 47.5,
    "CalibrHCALOther": 58.5,
    "ECalToMipCalibration": 172.414,
    "HCalToMipCalibration": 44.843,
    "MuonToMipCalibration": 20408.2,
    "ECalToEMGeVCalibration": 1.015,
    "HCalToEMGeVCalibration": 1.015,
    "ECalToHadGeVCalibrationBarrel": 1.12,
    "ECalToHadGeVCalibrationEndCap": 1.12,
    "HCalToHadGeVCalibration": 1.01,
    "MaxClusterEnergyToApplySoftComp": 0,
}


def test_apply_constants_routes_each_constant_to_its_processor():
    new = steering.apply_constants(FIXTURE, CONSTANTS, digi_name=DIGI, pandora_name=PANDORA,
                                   n_thin_layers=20, n_thick_layers=10)
    digi, pandora = steering.read_parameters(new, DIGI), steering.read_parameters(new, PANDORA)
    for name, value in CONSTANTS.items():
        target, other = (digi, pandora) if steering.CONSTANT_PROCESSOR[name] == "digi" else (pandora, digi)
        assert target[name] == steering.format_value(value), name
        assert name not in other or name == "HCALEndcapCorrectionFactor"
    assert digi["ECALLayers"] == "21 31"
    # nothing else moved: the PfoAnalysis processor and the global section are untouched
    assert steering.read_parameters(new, "MyPfoAnalysis") == steering.read_parameters(FIXTURE, "MyPfoAnalysis")
    assert steering.read_global_parameters(new) == steering.read_global_parameters(FIXTURE)
    assert len(new.splitlines()) == len(FIXTURE.splitlines())  # every constant existed: no line added


def test_ecal_layers_untouched_without_thick_layers():
    new = steering.apply_constants(FIXTURE, {"CalibrECAL": [38.0, 38.0]}, digi_name=DIGI, pandora_name=PANDORA,
                                   n_thin_layers=40, n_thick_layers=0)
    assert steering.read_parameters(new, DIGI)["ECALLayers"] == "41 100"


@pytest.mark.parametrize("first, thin, thick", [(1, 20, 10), (0, 20, 10), (1, 40, 34), (1, 1, 1)])
def test_ecal_layers_put_every_thin_layer_in_group_0_and_every_thick_one_in_group_1(first, thin, thick):
    """DDCaloDigi: layer < L0 -> CalibrECAL[0]; L0 <= layer < L1 -> CalibrECAL[1]."""
    low, high = map(int, steering.ecal_layers(thin, thick, first).split())
    layers = np.arange(first, first + thin + thick)
    group = np.where(layers < low, 0, np.where(layers < high, 1, 2))
    assert (group[:thin] == 0).all() and (group[thin:] == 1).all()


def test_unknown_constant_is_refused_with_a_suggestion():
    with pytest.raises(SteeringError, match="did you mean 'CalibrHCALBarrel'"):
        steering.apply_constants(FIXTURE, {"CalibHCALBarrel": 1.0}, digi_name=DIGI, pandora_name=PANDORA)


def test_final_steering_restores_the_users_software_compensation():
    user = steering.set_processor_parameters(FIXTURE, PANDORA, {"MaxClusterEnergyToApplySoftComp": 200})
    settings = {"DDCaloDigiName": DIGI, "DDPandoraPFANewProcessorName": PANDORA,
                "nEcalThinLayers": 20, "nEcalThickLayers": 10, "ecalFirstLayerNumber": 1}
    final = steering.final_steering(user, CONSTANTS, settings)
    pandora = steering.read_parameters(final, PANDORA)
    assert pandora["MaxClusterEnergyToApplySoftComp"] == "200"
    assert pandora["HCalToHadGeVCalibration"] == "1.01"
    assert steering.read_parameters(final, DIGI)["CalibrECAL"] == "38.0 76.0"
    explicit = steering.final_steering(FIXTURE, CONSTANTS, settings, user_soft_comp_value=2000)
    assert steering.read_parameters(explicit, PANDORA)["MaxClusterEnergyToApplySoftComp"] == "2000"
    # a user file without the parameter does not gain it
    without = FIXTURE.replace('    <parameter name="MaxClusterEnergyToApplySoftComp" value="0"/>\n', "")
    final = steering.final_steering(without, CONSTANTS, settings)
    assert "MaxClusterEnergyToApplySoftComp" not in steering.read_parameters(final, PANDORA)


# ------------------------------------------------------------------------------------ errors
def test_processor_not_found_suggests_the_closest():
    with pytest.raises(SteeringError) as info:
        steering.read_parameters(FIXTURE, "MyDDCaloDigi")
    assert "did you mean 'MyDDCaloDigi_10ns'" in str(info.value) and "MyPfoAnalysis" in str(info.value)
    with pytest.raises(SteeringError, match="not found"):
        steering.set_processor_parameters(FIXTURE, "MyDDMarlinPandora_400ns", {"X": 1})


@pytest.mark.parametrize(
    "text, message",
    [
        ("this is not xml", "not well-formed"),
        ("<marlin><processor name='A'></marlin>", "not well-formed"),
        ("<steering/>", "not <marlin>"),
        (b"<marlin/>", "must be text"),
    ],
)
def test_not_a_steering_file(text, message):
    with pytest.raises(SteeringError, match=message):
        steering.read_parameters(text, "A")


def test_ambiguous_definitions_are_refused():
    twice = "<marlin><global/><processor name='A' type='T'/><processor name='A' type='T'/></marlin>"
    with pytest.raises(SteeringError, match="defined 2 times"):
        steering.read_parameters(twice, "A")
    doubled = ("<marlin><global/><processor name='A' type='T'><parameter name='P' value='1'/>"
               "<parameter name='P' value='2'/></processor></marlin>")
    with pytest.raises(SteeringError, match="sets parameter 'P' 2 times"):
        steering.set_processor_parameters(doubled, "A", {"P": 3})
    with pytest.raises(SteeringError, match="set in its group 'Analysis'"):
        steering.set_processor_parameters(FIXTURE, "MyPfoAnalysis", {"Verbosity": "DEBUG"})
    with pytest.raises(SteeringError, match="no <global> section"):
        steering.set_global_parameters("<marlin/>", {"SkipNEvents": 1})


def test_processor_problems():
    assert steering.processor_problems(FIXTURE, [DIGI, PANDORA, "MyPfoAnalysis"]) == []
    unexecuted = FIXTURE.replace('      <processor name="MyDDCaloDigi_10ns"/>\n', "")
    problems = steering.processor_problems(unexecuted, [DIGI, "Nope"])
    assert len(problems) == 2
    assert "'MyDDCaloDigi_10ns' is defined but not run" in problems[0] and "'Nope' not found" in problems[1]
    assert steering.processor_problems("<oops", [DIGI])[0].startswith("the steering file is not well-formed")


@pytest.mark.skipif(not REALISTIC.exists(), reason="the realistic calibration steering file is not there yet")
def test_realistic_steering_file_takes_the_constants():
    text = REALISTIC.read_text()
    digi = steering.processor_names_by_type(text, "DDCaloDigi")
    pandora = steering.processor_names_by_type(text, "DDPandoraPFANewProcessor")
    assert len(digi) >= 1 and len(pandora) >= 1
    new = steering.apply_constants(text, CONSTANTS, digi_name=digi[0], pandora_name=pandora[0],
                                   n_thin_layers=20, n_thick_layers=10)
    assert steering.read_parameters(new, digi[0])["CalibrECAL"] == "38.0 76.0"
    assert steering.read_parameters(new, pandora[0])["HCalToHadGeVCalibration"] == "1.01"
    untouched = [line for line in text.splitlines() if not any(name in line for name in [*CONSTANTS, "ECALLayers"])]
    assert all(line in new.splitlines() for line in untouched)
