"""The steering editor: the value it writes is the one Marlin uses, and no other byte changes."""
import difflib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ILCDIRAC.CalibrationSystem.Utilities import steering
from ILCDIRAC.CalibrationSystem.Utilities.marlin_xml import XmlError, format_value
from ILCDIRAC.CalibrationSystem.Utilities.steering import STEERING_FILE, SteeringError, read_steering, read_text
from ILCDIRAC.CalibrationSystem.Utilities.steering_editor import (
    SteeringEditor,
    set_global_parameters,
    set_processor_parameters,
)

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = (DATA / "fcceeReconstruction_noSWC.xml").read_text()
DIGI, PANDORA = "MyDDCaloDigi_10ns", "MyDDMarlinPandora_10ns"


def replaced(text, old, new):
    """The expected result of an edit: exactly one occurrence of ``old`` becomes ``new``."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def effective(files, processor, name, top=STEERING_FILE):
    return read_steering(files, top).processors[processor].tokens(name)


def changed_lines(old: str, new: str) -> list[str]:
    return [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


# ------------------------------------------------------------------------------------ byte-exact edits
def test_text_form_edit_changes_only_the_value():
    new = set_processor_parameters(FIXTURE, DIGI, {"CalibrECAL": [40.0, 80.5]})
    assert new == replaced(FIXTURE, ">37.5227197175 37.5227197175</parameter>", ">40.0 80.5</parameter>")


def test_text_form_keeps_the_whitespace_around_the_value():
    new = set_processor_parameters(FIXTURE, DIGI, {"ECALLayers": "21 31"})
    assert new == replaced(FIXTURE, ">41 100  </parameter>", ">21 31  </parameter>")


def test_attribute_form_edit_changes_only_the_value():
    new = set_processor_parameters(FIXTURE, DIGI, {"CalibrHCALBarrel": 47.25, "ECALThreshold": 1e-4})
    expected = replaced(FIXTURE, 'value="45.9956826061"', 'value="47.25"')
    assert new == replaced(expected, 'value="5e-05"', 'value="0.0001"')


def test_adding_a_missing_parameter_follows_the_processor_layout():
    new = set_processor_parameters(FIXTURE, DIGI, {"ECALGapCorrection": 1})
    assert new == replaced(
        FIXTURE,
        '<parameter name="HCALEndcapCorrectionFactor" type="float">1.000</parameter>\n',
        '<parameter name="HCALEndcapCorrectionFactor" type="float">1.000</parameter>\n'
        '    <parameter name="ECALGapCorrection">1</parameter>\n',
    )
    # after an attribute-form parameter, the new one uses the attribute form too
    new = set_processor_parameters(FIXTURE, PANDORA, {"SoftwareCompensationWeights": [1.5, -0.02]})
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
    new = set_processor_parameters(text, "A", {"X": 2})
    assert new == replaced(text, '<processor name="A" type="T"/>',
                           '<processor name="A" type="T">\n    <parameter name="X" value="2"/>\n  </processor>')
    new = set_processor_parameters(text, "B", {"P": "v w"})
    assert new == replaced(text, '<parameter name="P" />', '<parameter name="P" value="v w" />')
    assert read_text(new).processors["B"].value("P") == "v w"


def test_global_parameters():
    files = [f"/ilc/user/x/gamma_{i}.slcio" for i in range(3)]
    new = set_global_parameters(FIXTURE, {"LCIOInputFiles": files, "MaxRecordNumber": 250, "SkipNEvents": 750,
                                          "AllowToModifyEvent": True})
    expected = replaced(FIXTURE, "> input_1.slcio input_2.slcio </parameter>", f"> {' '.join(files)} </parameter>")
    expected = replaced(expected, '"MaxRecordNumber" value="0"', '"MaxRecordNumber" value="250"')
    expected = replaced(expected, '"SkipNEvents" value="0"', '"SkipNEvents" value="750"')
    expected = replaced(expected, '<parameter name="RandomSeed" value="1234567890" />\n',
                        '<parameter name="RandomSeed" value="1234567890" />\n'
                        '    <parameter name="AllowToModifyEvent" value="true"/>\n')
    assert new == expected
    assert read_text(new).global_value("LCIOInputFiles").split() == files


def test_special_characters_are_escaped_and_read_back():
    new = set_processor_parameters(FIXTURE, "MyPfoAnalysis", {"RootFile": 'a&b<"c">.root'})
    ET.fromstring(new.split("?>", 1)[1])  # still well-formed
    assert read_text(new).processors["MyPfoAnalysis"].value("RootFile") == 'a&b<"c">.root'
    assert "a&amp;b&lt;" in new


def test_value_formatting():
    assert format_value(0.1 + 0.2) == "0.30000000000000004"  # repr precision: round trip exact
    assert float(format_value(37.5227197175)) == 37.5227197175
    assert format_value(np.float64(1.0672142727)) == "1.0672142727"
    assert format_value(np.array([37.5, 75.0])) == "37.5 75.0"
    assert format_value((3, np.int64(4))) == "3 4"
    assert format_value(False) == "false" and format_value(np.bool_(True)) == "true"
    for bad in (float("nan"), float("inf"), None, {"a": 1}):
        with pytest.raises(XmlError):
            format_value(bad)
    with pytest.raises(SteeringError, match="non-finite"):
        set_processor_parameters(FIXTURE, DIGI, {"CalibrECAL": float("nan")})


def test_an_undefined_processor_is_an_error():
    with pytest.raises(SteeringError, match="processor 'Nope' is not defined"):
        set_processor_parameters(FIXTURE, "Nope", {"X": 1})


# ------------------------------------------------------------------------------------ groups
GROUPED = """<marlin>
  <execute><group name="G"/></execute>
  <global/>
  <group name="G">
    <parameter name="Scalar" value="200."/>
    <parameter name="Layers">41 100</parameter>
    <processor name="A" type="T">
      <parameter name="Own">1</parameter>
    </processor>
    <processor name="B" type="T">
      <parameter name="Layers">7</parameter>
    </processor>
    <processor name="C" type="T"/>
  </group>
</marlin>
"""


def test_a_scalar_set_in_the_group_gets_an_own_value_which_marlin_reads_first():
    new = set_processor_parameters(GROUPED, "A", {"Scalar": 0})
    parsed = read_text(new)
    assert parsed.processors["A"].tokens("Scalar") == ["0", "200."]
    assert [parsed.processors[n].value("Scalar") for n in "BC"] == ["200.", "200."]
    assert changed_lines(GROUPED, new) == ['+      <parameter name="Scalar">0</parameter>']


def test_a_vector_set_in_the_group_is_moved_into_the_other_processors_so_only_one_value_changes():
    before = read_text(GROUPED)
    new = set_processor_parameters(GROUPED, "A", {"Layers": "21 31"}, vectors={"Layers"})
    after = read_text(new)
    assert after.processors["A"].tokens("Layers") == ["21", "31"]
    for name in "BC":  # their effective values are what they were
        assert after.processors[name].tokens("Layers") == before.processors[name].tokens("Layers"), name
    assert after.processors["B"].tokens("Layers") == ["7", "41", "100"]
    for name in "ABC":
        assert after.processors[name].values().keys() == before.processors[name].values().keys()


def test_several_own_values_of_a_vector_are_reduced_to_the_calibrated_one():
    text = GROUPED.replace('<parameter name="Own">1</parameter>', '<parameter name="V">1</parameter><parameter name="V">2</parameter>')
    assert read_text(text).processors["A"].tokens("V") == ["1", "2"]
    new = set_processor_parameters(text, "A", {"V": [5.0, 6.0]}, vectors={"V"})
    assert read_text(new).processors["A"].tokens("V") == ["5.0", "6.0"]
    scalar = set_processor_parameters(text, "A", {"V": 5})
    assert read_text(scalar).processors["A"].tokens("V")[0] == "5"


# ------------------------------------------------------------------------------------ constants
def constant_files(extra_use: str = ""):
    top = ('<marlin><constants><include ref="calib.xml"/><constant name="Sum" value="${EMScale} x"/></constants>\n'
           '<execute><processor name="P"/><processor name="Q"/></execute><global/>\n'
           '<processor name="P" type="DDPandoraPFANewProcessor">\n'
           '  <parameter name="ECalToEMGeVCalibration">${EMScale}</parameter>\n'
           '  <parameter name="HCalToEMGeVCalibration"> ${EMScale} </parameter>\n'
           '  <parameter name="ECalToMipCalibration">${Composite}</parameter>\n'
           '</processor>\n'
           f'<processor name="Q" type="X">{extra_use}</processor>\n</marlin>\n')
    calib = '<constant name="EMScale">1.0</constant>\n<constant name="Composite" value="${EMScale}"/>\n'
    return {STEERING_FILE: top, "calib.xml": calib}


def edit(files, values, constants=None):
    editor = SteeringEditor(read_steering(files))
    editor.set_parameters("P", values)
    if constants:
        editor.set_constants(constants)
    return editor.texts()


def test_a_constant_that_only_carries_this_value_is_changed_where_it_is_defined():
    files = constant_files().copy()
    files[STEERING_FILE] = files[STEERING_FILE].replace('<constant name="Sum" value="${EMScale} x"/>', "")
    files["calib.xml"] = files["calib.xml"].replace('<constant name="Composite" value="${EMScale}"/>\n', "")
    files[STEERING_FILE] = files[STEERING_FILE].replace("${Composite}", "170")
    out = edit(files, {"ECalToEMGeVCalibration": 1.02, "HCalToEMGeVCalibration": 1.02})
    assert out[STEERING_FILE] == files[STEERING_FILE], "the processor keeps its ${EMScale}"
    assert out["calib.xml"] == replaced(files["calib.xml"], ">1.0<", ">1.02<")
    p = read_steering(out).processors["P"]
    assert p.value("ECalToEMGeVCalibration") == p.value("HCalToEMGeVCalibration") == "1.02"


def test_a_constant_with_other_uses_or_other_values_stays_and_the_parameters_get_the_number():
    files = constant_files()
    out = edit(files, {"ECalToEMGeVCalibration": 1.02, "HCalToEMGeVCalibration": 1.02, "ECalToMipCalibration": 160})
    assert out["calib.xml"] == files["calib.xml"], "EMScale also builds Sum and Composite"
    p = read_steering(out).processors["P"]
    assert [p.value(n) for n in ("ECalToEMGeVCalibration", "HCalToEMGeVCalibration", "ECalToMipCalibration")] == [
        "1.02", "1.02", "160"]
    assert read_steering(out).constants["Sum"].value == "1.0 x"
    # two parameters written with one constant but calibrated to different values
    alone = {STEERING_FILE: files[STEERING_FILE].replace('<constant name="Sum" value="${EMScale} x"/>', ""),
             "calib.xml": '<constant name="EMScale">1.0</constant>\n<constant name="Composite" value="2"/>\n'}
    out = edit(alone, {"ECalToEMGeVCalibration": 1.02, "HCalToEMGeVCalibration": 1.03})
    assert out["calib.xml"] == alone["calib.xml"]
    p = read_steering(out).processors["P"]
    assert (p.value("ECalToEMGeVCalibration"), p.value("HCalToEMGeVCalibration")) == ("1.02", "1.03")


def test_steering_constants_change_the_constant_where_it_is_defined():
    out = edit(constant_files(), {}, constants={"EMScale": "0.5"})
    assert out["calib.xml"] == replaced(constant_files()["calib.xml"], ">1.0<", ">0.5<")
    assert read_steering(out).constants["Sum"].value == "0.5 x"


# ------------------------------------------------------------------------------------ added processors
def test_an_added_processor_runs_right_after_the_entry_of_the_one_it_follows():
    text = FIXTURE
    editor = SteeringEditor(read_text(text))
    editor.add_processor("Added", "PfoAnalysis", {"RootFile": "x.root", "CollectCalibrationDetails": 1}, after=DIGI)
    new = editor.texts()[STEERING_FILE]
    parsed = read_text(new)
    assert [e.name for e in parsed.execute] == ["InitDD4hep", DIGI, "Added", PANDORA, "MyPfoAnalysis"]
    assert parsed.executed("Added").condition == parsed.executed(DIGI).condition == "Always", "inside the same <if>"
    assert parsed.processors["Added"].values() == {"RootFile": "x.root", "CollectCalibrationDetails": "1"}
    assert all(line.startswith("+") for line in changed_lines(text, new))
    with pytest.raises(SteeringError, match="defines one of that name"):
        SteeringEditor(read_text(text)).add_processor(DIGI, "PfoAnalysis", {}, after=DIGI)


def test_an_existing_processor_can_be_added_to_execute_after_a_group_reference():
    text = FIXTURE.replace('<processor name="MyDDMarlinPandora_10ns"/>', "")
    editor = SteeringEditor(read_text(text))
    editor.run_after(PANDORA, "MyPfoAnalysis")
    parsed = read_text(editor.texts()[STEERING_FILE])
    assert [e.name for e in parsed.execute] == ["InitDD4hep", DIGI, "MyPfoAnalysis", PANDORA]


def test_only_the_set_values_change_in_a_real_folder():
    folder = DATA / "configurations" / "ILDLike"
    files = steering.FolderFiles(folder)
    parsed = read_steering(files, "MarlinStdReco.xml", {"DetectorModel": "ILD_l5_o1_v02"})
    editor = SteeringEditor(parsed)
    editor.set_parameters("MyEcalBarrelReco", {"calibration_factorsMipGev": [0.0065, 0.013]}, {"calibration_factorsMipGev"})
    editor.set_parameters("MyDDMarlinPandora", {"ECalToMipCalibration": 160.0, "MaxClusterEnergyToApplySoftComp": 0})
    editor.set_parameters("MyPfoAnalysis", {"RootFile": "step1_gamma.root", "CollectCalibrationDetails": 1})
    editor.set_constants({"DetectorModel": "ILD_l5_o1_v02"})
    out = editor.texts()
    changes = {name: changed_lines(files.get(name), text) for name, text in out.items() if text != files.get(name)}
    assert set(changes) == {"MarlinStdReco.xml", "Calibration/Calibration_ILD_l5_o1_v02.xml",
                            "ParticleFlow/PandoraPFAStandard.xml"}
    assert changes["Calibration/Calibration_ILD_l5_o1_v02.xml"] == [
        '-<constant name="EcalBarrelEnergyFactors">0.0063520964756 0.012902699188</constant>',
        '+<constant name="EcalBarrelEnergyFactors">0.0065 0.013</constant>',
        '-<constant name="PandoraEcalToMip">153.846</constant>',
        '+<constant name="PandoraEcalToMip">160.0</constant>']
    assert changes["ParticleFlow/PandoraPFAStandard.xml"] == [
        '-    <parameter name="MaxClusterEnergyToApplySoftComp" type="float">1000</parameter>',
        '+    <parameter name="MaxClusterEnergyToApplySoftComp" type="float">0</parameter>']
    assert sorted(changes["MarlinStdReco.xml"]) == sorted([
        '-    <constant name="DetectorModel" value="None_Please_specify_one" />',
        '+    <constant name="DetectorModel" value="ILD_l5_o1_v02" />',
        '-    <parameter name="RootFile" type="string"> ${PfoOutputFile} </parameter>',
        '+    <parameter name="RootFile" type="string"> step1_gamma.root </parameter>',
        '-    <parameter name="CollectCalibrationDetails" type="int"> 0 </parameter>',
        '+    <parameter name="CollectCalibrationDetails" type="int"> 1 </parameter>'])
    reread = read_steering(out, "MarlinStdReco.xml")
    assert reread.processors["MyPfoAnalysis"].value("RootFile") == "step1_gamma.root"
    assert reread.constants["PfoOutputFile"].value == "StandardReco_PfoAnalysis.root", "shared: built from OutputBaseName"
    assert reread.processors["MyDDMarlinPandora"].tokens("MaxClusterEnergyToApplySoftComp") == ["0"]
