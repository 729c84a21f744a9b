"""The Marlin reader: a steering file and its includes read as Marlin's XMLParser reads them."""
import pytest

from ILCDIRAC.CalibrationSystem.Utilities import steering
from ILCDIRAC.CalibrationSystem.Utilities.steering import SteeringError, evaluate, read_steering, read_text


def marlin(body: str, execute: str = "", head: str = "") -> str:
    """A steering file with an <execute> section, an empty <global> and ``body``."""
    return f"{head}<marlin>\n<execute>\n{execute}\n</execute>\n<global/>\n{body}\n</marlin>\n"


def proc(name: str, kind: str = "T", params: str = "") -> str:
    return f'<processor name="{name}" type="{kind}">{params}</processor>'


def param(name: str, value: str, attribute: bool = False) -> str:
    return f'<parameter name="{name}" value="{value}"/>' if attribute else f'<parameter name="{name}">{value}</parameter>'


# ------------------------------------------------------------------------------------ XML as TinyXML reads it
def test_comments_may_hold_double_dashes_like_a_licence_header():
    text = marlin(proc("A", params=param("P", "1")), '<processor name="A"/>',
                  head="<!--\n-- Copyright (c) 2014-2024 Key4hep-Project.\n--\n  -->\n")
    assert read_text(text).processors["A"].value("P") == "1"
    # still an error where TinyXML has one, with the line of the file
    with pytest.raises(SteeringError, match=r"steering.xml is not well-formed XML \(line 10\): mismatched tag"):
        read_text(text.replace("</processor>", "</processr>"))


def test_parameter_values_in_both_forms_with_white_space_and_comments_as_separators():
    text = marlin(proc("A", params=param("V", " 1  2\n 3 ") + param("W", "a b", True) + param("X", "4<!-- x -->5")
                       + param("E", "")), '<processor name="A"/>')
    a = read_text(text).processors["A"]
    assert (a.tokens("V"), a.tokens("W"), a.tokens("X"), a.tokens("E"), a.tokens("missing")) == (
        ["1", "2", "3"], ["a", "b"], ["4", "5"], [], None)


@pytest.mark.parametrize("text, message", [
    ("not xml", "not well-formed"),
    ("<steering/>", "not <marlin>"),
    ("<marlin><global/></marlin>", "no <execute> section"),
    ("<marlin><execute/></marlin>", "no <global> section"),
])
def test_not_a_steering_file(text, message):
    with pytest.raises(SteeringError, match=message):
        read_text(text)


# ------------------------------------------------------------------------------------ constants
def test_constants_are_expanded_in_order_with_the_constants_defined_before_them():
    text = marlin(proc("A_10ns", params=param("P", "${Window} ${Label}")), '<processor name="A_${Window}ns"/>',
                  ).replace("<execute>", '<constants><constant name="Window" value="10"/>'
                            '<constant name="Label">w${Window}ns</constant>'
                            '<constant name="Both" value="${Label}:${Window}"/></constants>\n<execute>')
    parsed = read_text(text)
    assert {n: c.value for n, c in parsed.constants.items()} == {"Window": "10", "Label": "w10ns", "Both": "w10ns:10"}
    assert parsed.processors["A_10ns"].value("P") == "10 w10ns"
    assert [e.name for e in parsed.execute] == ["A_10ns"]


@pytest.mark.parametrize("constants, message", [
    ('<constant name="A" value="${B}"/><constant name="B" value="1"/>', r"constant \$\{B\} is not defined"),
    ('<constant name="A" value="1"/><constant name="A" value="2"/>', "constant 'A' is defined twice"),
    ('<constant value="1"/>', "a <constant> has no name"),
    ('<constant name="A" value="${B"/>', "unterminated"),
])
def test_bad_constants(constants, message):
    with pytest.raises(SteeringError, match=message):
        read_text(marlin("").replace("<execute>", f"<constants>{constants}</constants><execute>"))


def test_limits_keep_a_hostile_file_from_exhausting_the_service():
    doubling = "".join(f'<constant name="C{i + 1}" value="${{C{i}}}${{C{i}}}"/>' for i in range(40))
    text = marlin("").replace("<execute>", f'<constants><constant name="C0" value="xxxxxxxxxx"/>{doubling}</constants><execute>')
    with pytest.raises(SteeringError, match="more than 100000 characters"):
        read_text(text)
    with pytest.raises(SteeringError, match="nested deeper than 100 levels"):
        read_text(marlin("<a>" * 150 + "</a>" * 150))
    with pytest.raises(SteeringError, match="nested deeper than 50 levels"):
        evaluate("(" * 60 + "true && true" + ")" * 60)


def test_an_unknown_constant_anywhere_is_an_error_even_in_a_processor_that_does_not_run():
    text = marlin(proc("A") + proc("B", params=param("P", "${Nope}")), '<processor name="A"/>')
    with pytest.raises(SteeringError, match=r"line 6 \(parameter P\): constant \$\{Nope\} is not defined"):
        read_text(text)


def test_env_references_are_not_marlin_syntax_and_stay_as_written():
    text = marlin(proc("A", params=param("P", "$ENV{HOME}/x")), '<processor name="A"/>')
    assert read_text(text).processors["A"].value("P") == "$ENV{HOME}/x"


def test_overrides_act_like_marlins_command_line_constants():
    text = marlin(proc("A", params=param("P", "${Model}")), '<processor name="A"/>').replace(
        "<execute>", '<constants><constant name="Model" value="none"/><constant name="File" value="c_${Model}"/>'
                     '</constants><execute>')
    parsed = read_steering({"steering.xml": text}, constants={"Model": "ILD_l5_o1_v02"})
    assert parsed.constants["File"].value == "c_ILD_l5_o1_v02"
    assert parsed.processors["A"].value("P") == "ILD_l5_o1_v02"
    with pytest.raises(SteeringError, match=r"steeringConstants \['Modle'\] are not defined"):
        read_steering({"steering.xml": text}, constants={"Modle": "x"})


# ------------------------------------------------------------------------------------ includes
def included_files():
    top = marlin(
        '<include ref="digi/${Digi}.xml"/>\n' + proc("Pfo", "PfoAnalysis", param("RootFile", "${Out}")),
        '<group name="Digi"/><processor name="Pfo"/>',
    ).replace("<execute>", '<constants><constant name="Digi" value="Calo"/><include ref="calibration/${Digi}Constants.xml"/>'
                           '<constant name="Out" value="${Base}.root"/></constants>\n<execute>')
    return {
        "steering.xml": top,
        "calibration/CaloConstants.xml": "<?xml version='1.0' encoding='ASCII'?>\n<!-- a list, no root -->\n"
                                         '<constant name="Base" value="calo"/>\n<constant name="Factor">40.5</constant>\n'
                                         '<group name="Ignored"/>\n',
        "digi/Calo.xml": '<group name="Digi">\n  <parameter name="Shared" value="s"/>\n'
                         '  <processor name="CaloDigi" type="DDCaloDigi"><parameter name="C">${Factor}</parameter></processor>\n'
                         '</group>\n',
    }


def test_includes_in_and_outside_constants_are_expanded_with_refs_built_from_constants():
    parsed = read_steering(included_files())
    assert parsed.includes == ["calibration/CaloConstants.xml", "digi/Calo.xml"]
    assert parsed.constants["Factor"].value == "40.5" and parsed.constants["Factor"].file == "calibration/CaloConstants.xml"
    digi = parsed.processors["CaloDigi"]
    assert (digi.file, digi.groupName, digi.values()) == ("digi/Calo.xml", "Digi", {"C": "40.5", "Shared": "s"})
    assert parsed.processors["Pfo"].value("RootFile") == "calo.root"
    assert [e.name for e in parsed.execute] == ["CaloDigi", "Pfo"]


def test_include_refs_are_relative_to_the_top_files_folder():
    files = {f"reco/{name}": text for name, text in included_files().items()}
    parsed = read_steering(files, "reco/steering.xml")
    assert parsed.includes == ["reco/calibration/CaloConstants.xml", "reco/digi/Calo.xml"]


@pytest.mark.parametrize("change, message", [
    (("digi/Calo.xml", "<group", '<include ref="more.xml"/><group'), r"digi/Calo.xml, line 1: nested includes are not allowed"),
    (("steering.xml", "digi/${Digi}.xml", "/opt/digi/${Digi}.xml"), "include ref '/opt/digi/Calo.xml' is an absolute path"),
    (("steering.xml", "digi/${Digi}.xml", "../digi/${Digi}.xml"), "file name '../digi/Calo.xml' contains '..'"),
    (("steering.xml", "digi/${Digi}.xml", "digi/${Digi}.txt"), "does not name an .xml file"),
    (("steering.xml", "digi/${Digi}.xml", "digi/${Dig}.xml"), r"constant \$\{Dig\} is not defined"),
    (("steering.xml", "digi/${Digi}.xml", "digi/Other.xml"), "included file digi/Other.xml not found"),
    (("digi/Calo.xml", "</group>", "</grp>"), "digi/Calo.xml is not well-formed XML"),
])
def test_include_problems_are_refused_as_marlin_refuses_them(change, message):
    files = included_files()
    name, old, new = change
    files[name] = files[name].replace(old, new, 1)
    with pytest.raises(SteeringError, match=message):
        read_steering(files)


# ------------------------------------------------------------------------------------ groups
def test_group_parameters_come_after_the_processors_own():
    text = marlin('<group name="G">' + param("S", "group") + param("V", "3 4") + proc("A", params=param("S", "own") + param("V", "1 2"))
                  + proc("B") + "</group>", '<group name="G"/>')
    parsed = read_text(text)
    a, b = parsed.processors["A"], parsed.processors["B"]
    assert a.tokens("S") == ["own", "group"], "a scalar's first token is the processor's own value"
    assert a.tokens("V") == ["1", "2", "3", "4"], "a vector concatenates"
    assert (b.value("S"), b.value("V")) == ("group", "3 4")
    assert [p.group for p in a.params] == [None, None, "G", "G"]


def test_only_groups_after_execute_are_expanded():
    text = ('<marlin><global/><group name="Early">' + proc("A") + "</group>"
            '<execute><group name="Early"/></execute></marlin>')
    with pytest.raises(SteeringError, match=r"runs processor 'A', which is not defined \(it is in group 'Early', "
                                            r"written before <execute>"):
        read_text(text)


# ------------------------------------------------------------------------------------ execute
def test_execute_flattens_groups_and_if_blocks_with_marlins_condition_strings():
    execute = ('<processor name="P0"/>'
               '<if condition="A || B"><processor name="P1"/><if condition="C"><processor name="P2" condition="D"/>'
               '<group name="G"/></if></if>'
               '<if condition="${Off}"><processor name="P4"/></if>'
               '<Xprocessor name="Commented"/><group name="NotDefined"/>')
    body = "".join(proc(n) for n in ("P0", "P1", "P2", "P4")) + '<group name="G">' + proc("P3") + "</group>"
    text = marlin(body, execute).replace("<execute>", '<constants><constant name="Off" value="false"/></constants><execute>')
    parsed = read_text(text)
    assert [(e.name, e.condition, e.runs) for e in parsed.execute] == [
        ("P0", "true", True),
        ("P1", "(A || B)", None),
        ("P2", "D && C && (A || B)", None),
        ("P3", "C && (A || B)", None),
        ("P4", "false", False),
    ]
    assert parsed.running("T") == ["P0", "P1", "P2", "P3"]
    assert not parsed.runs("P4") and not parsed.runs("Commented")


@pytest.mark.parametrize("execute, body, message", [
    ('<processor name="A"/><processor name="A"/>', proc("A"), "processor 'A' is run more than once"),
    ('<processor name="B"/>', proc("A"), "runs processor 'B', which is not defined"),
    ('<processor name="A"/>', proc("A") + proc("A"), "processor 'A' is defined twice"),
    ('<processor name="A"/>', '<processor name="A"/>', "needs a name and a type"),
    ('<if><processor name="A"/></if>', proc("A"), "an <if> has no condition"),
    ('<processor name="A"/>', proc("A", params='<parameter value="1"/>'), "a <parameter> has no name"),
])
def test_bad_execute_or_processor_definitions(execute, body, message):
    with pytest.raises(SteeringError, match=message):
        read_text(marlin(body, execute))


@pytest.mark.parametrize("condition, expected", [
    ("true", True), ("False", False), ("!false", True), ("Config.Overlay", None), ("!Config.Overlay", None),
    ("true && Config.X", None), ("false && Config.X", False), ("true || Config.X", True), ("false || Config.X", None),
    # Marlin evaluates left to right, without precedence: ((true || false) && false)
    ("true || false && false", False),
    ("(true || Config.X) && !false", True), ("!(true && false)", True), ("D && C && (A || false)", None),
])
def test_conditions_are_evaluated_as_far_as_the_file_decides_them(condition, expected):
    assert evaluate(condition) is expected


def test_the_fixture_folders_read_like_marlin():
    """The project's fixtures for CLDConfig and ILDConfig: the processors that run."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "data" / "configurations"
    cld = read_steering(steering.FolderFiles(folder / "CLDLike"), "CLDReconstruction.xml")
    assert cld.running("DDCaloDigi") == ["MyDDCaloDigi_10ns"] and cld.running("PfoAnalysis") == []
    assert cld.processors["MyDDMarlinPandora_10ns"].tokens("MaxClusterEnergyToApplySoftComp") == ["200."]
    ild = read_steering(steering.FolderFiles(folder / "ILDLike"), "MarlinStdReco.xml", {"DetectorModel": "ILD_l5_o1_v02"})
    assert ild.running("RealisticCaloRecoSilicon") == ["MyEcalBarrelReco", "MyEcalEndcapReco", "MyEcalRingReco"]
    assert not ild.runs("BgOverlayWW")
    with pytest.raises(SteeringError, match="included file Calibration/Calibration_None_Please_specify_one.xml not found"):
        read_steering(steering.FolderFiles(folder / "ILDLike"), "MarlinStdReco.xml")
