"""What the emulator reads from Marlin steering files and Pandora settings files."""
import math
from pathlib import Path

import pytest

from ILCDIRAC.CalibrationSystem.Utilities import steering
from ILCDIRAC.CalibrationSystem.Utilities.steering_editor import SteeringEditor
from marlin_emulator import DATA_DIR
from marlin_emulator.pandora import PandoraSettingsError, read_pandora_settings
from marlin_emulator.steering_input import SteeringInputError, parse_steering, read_steering, steering_input

DATA = DATA_DIR
STEERING = DATA / "steering" / "calibrationReconstruction.xml"
CONFIGURATIONS = Path(__file__).resolve().parents[2] / "ILCDIRAC" / "CalibrationSystem" / "test" / "data" / "configurations"

MINIMAL = """<marlin>
  <constants>
    <constant name="Window" value="10"/>
    <constant name="Suffix">${Window}ns</constant>
  </constants>
  <execute>
    <if condition="Config.Always">
      <processor name="Digi_${Suffix}"/>
    </if>
    <group name="PandoraGroup"/>
    <processor name="Pfo"/>
  </execute>
  <global>
    <parameter name="LCIOInputFiles"> a.slcio
       b.slcio </parameter>
    <parameter name="MaxRecordNumber" value="250"/>
    <parameter name="SkipNEvents">40</parameter>
  </global>
  <processor name="Digi_10ns" type="DDCaloDigi">
    <parameter name="CalibrECAL" type="FloatVec">30 60</parameter>
    <parameter name="ECALLayers" value="21 31"/>
    <parameter name="CalibrHCALBarrel">40</parameter>
    <parameter name="CalibrHCALEndcap" value="41"/>
    <parameter name="CalibrHCALOther">50</parameter>
    <parameter name="HCALBarrelTimeWindowMax">${Window}</parameter>
    <parameter name="HCALEndcapTimeWindowMax" value="400"/>
  </processor>
  <processor name="Digi_400ns" type="DDCaloDigi">
    <parameter name="CalibrECAL">1 1</parameter>
  </processor>
  <group name="PandoraGroup">
    <parameter name="HCalToHadGeVCalibration">1.02</parameter>
    <processor name="Pandora" type="DDPandoraPFANewProcessor">
      <parameter name="PandoraSettingsXmlFile">Settings.xml</parameter>
      <parameter name="ECalToMipCalibration">160</parameter>
      <parameter name="HCalToMipCalibration" value="40"/>
      <parameter name="MuonToMipCalibration">20000</parameter>
      <parameter name="ECalToEMGeVCalibration">1.01</parameter>
      <parameter name="HCalToEMGeVCalibration">1.01</parameter>
      <parameter name="ECalToHadGeVCalibrationBarrel">1.1</parameter>
      <parameter name="ECalToHadGeVCalibrationEndCap">1.12</parameter>
      <parameter name="MaxClusterEnergyToApplySoftComp">0</parameter>
    </processor>
  </group>
  <processor name="Pfo" type="PfoAnalysis">
    <parameter name="RootFile" value="out.root"/>
    <parameter name="CollectCalibrationDetails">1</parameter>
  </processor>
</marlin>
"""


def test_shipped_steering_runs_the_10ns_processors_only():
    config = read_steering(STEERING)
    assert config.inputFiles == () and config.maxRecordNumber == 0 and config.skipNEvents == 0
    assert config.digi.calibrEcal == (37.5227197175, 37.5227197175)
    assert config.digi.ecalLayers == (41, 100)
    assert config.digi.ecalTimeWindows == (10.0, 10.0) and config.digi.hcalTimeWindows == (10.0, 10.0)
    assert config.digi.calibrHcalOther == pytest.approx(57.4588011802)
    assert config.pandora.settingsFile == "PandoraSettings/PandoraSettingsDefault.xml"
    assert config.pandora.hcalToMip == 45.6621 and config.pandora.maxClusterEnergyToApplySoftComp == 200.0
    assert config.pfoAnalysis.rootFile == "pfoAnalysis.root" and config.pfoAnalysis.collectCalibrationDetails
    assert (config.pfoAnalysis.muonHistogramBins, config.pfoAnalysis.muonHistogramHigh) == (500, 0.002)
    assert config.muonDigitisation == 70.1
    parsed = steering.read_text(STEERING.read_text())
    assert parsed.processors["MyDDCaloDigi_400ns"].type == "DDCaloDigi"
    assert parsed.running("DDCaloDigi") == ["MyDDCaloDigi_10ns"]


def test_the_calibration_can_edit_the_shipped_steering():
    """The worker's editor writes what the emulator then reads."""
    editor = SteeringEditor(steering.read_text(STEERING.read_text()))
    editor.set_globals({"LCIOInputFiles": ["x.slcio", "y.slcio"], "MaxRecordNumber": 100, "SkipNEvents": 300})
    editor.set_parameters("MyDDCaloDigi_10ns", {"CalibrECAL": [40.0, 80.0], "ECALLayers": "21 31"},
                          vectors={"CalibrECAL", "ECALLayers"})
    editor.set_parameters("MyDDMarlinPandora_10ns", {"HCalToHadGeVCalibration": 1.2, "ECalToMipCalibration": 150.0})
    config = parse_steering(editor.texts()[steering.STEERING_FILE])
    assert config.inputFiles == ("x.slcio", "y.slcio") and (config.maxRecordNumber, config.skipNEvents) == (100, 300)
    assert config.digi.calibrEcal == (40.0, 80.0) and config.digi.ecalLayers == (21, 31)
    assert config.pandora.hcalToHad == 1.2 and config.pandora.ecalToMip == 150.0


def test_marlin_semantics_constants_groups_if_and_value_forms():
    config = parse_steering(MINIMAL)
    assert config.inputFiles == ("a.slcio", "b.slcio")
    assert (config.maxRecordNumber, config.skipNEvents) == (250, 40)
    assert config.digi.calibrEcal == (30.0, 60.0) and config.digi.ecalLayers == (21, 31)
    assert config.digi.hcalTimeWindows == (10.0, 400.0)
    assert config.digi.ecalTimeWindows == (math.inf, math.inf)  # no window given: no timing cut
    assert config.digi.ecalEndcapCorrectionFactor == 1.0 and config.digi.ecalThreshold == 5e-5
    assert config.pandora.hcalToHad == 1.02  # from the group
    assert config.pandora.ecalToHadEndcap == 1.12 and config.pandora.maxClusterEnergyToApplySoftComp == 0.0
    assert config.pandora.ecalMipThreshold is None and config.pandora.maxHcalHitHadronicEnergy == math.inf
    assert config.pfoAnalysis.rootFile == "out.root" and config.muonDigitisation is None


def test_without_execute_marlin_runs_nothing_and_refuses_the_file():
    text = MINIMAL.replace(MINIMAL[MINIMAL.index("<execute>"):MINIMAL.index("</execute>") + 10], "")
    with pytest.raises(SteeringInputError, match="no <execute> section"):
        parse_steering(text)


def test_a_scalar_parameter_is_its_first_token_as_marlin_reads_it():
    text = MINIMAL.replace('<parameter name="MuonToMipCalibration">20000', '<parameter name="MuonToMipCalibration">2 3')
    assert parse_steering(text).pandora.muonToMip == 2.0
    grouped = MINIMAL.replace('<parameter name="HCalToHadGeVCalibration">1.02</parameter>',
                              '<parameter name="HCalToHadGeVCalibration">1.02</parameter>'
                              '<parameter name="ECalToMipCalibration">999</parameter>')
    assert parse_steering(grouped).pandora.ecalToMip == 160.0, "the processor's own value comes first"


def test_an_ild_chain_of_realistic_calo_digi_and_reco_is_read_as_digitisation_constants():
    folder = CONFIGURATIONS / "ILDLike"
    parsed = steering.read_steering(steering.FolderFiles(folder), "MarlinStdReco.xml", {"DetectorModel": "ILD_l5_o1_v02"})
    digi = steering_input(parsed).digi
    # energy factor (GeV/MIP) / MIP energy (GeV), per region and ECAL layer group
    assert digi.calibrEcal == pytest.approx((0.0063520964756 / 0.0001575, 0.012902699188 / 0.0001575))
    assert digi.ecalLayers == (20, 31)
    assert digi.ecalEndcapCorrectionFactor == pytest.approx(0.0067218419842 / 0.0063520964756)
    assert (digi.calibrHcalBarrel, digi.calibrHcalEndcap, digi.calibrHcalOther) == pytest.approx(
        (0.0287783798145 / 0.0004925, 0.0285819096797 / 0.0004725, 0.0349940637704 / 0.0004875))
    assert digi.ecalThreshold == pytest.approx(0.5 * 0.0001575) and digi.hcalThreshold == pytest.approx(0.5 * 0.0004925)
    assert digi.ecalTimeWindows == (100.0, 100.0)
    # ILD's PfoAnalysis: no calibration details, PfoAnalysis's own muon histogram range
    pfo = steering_input(parsed).pfoAnalysis
    assert (pfo.collectCalibrationDetails, pfo.muonHistogramHigh, pfo.rootFile) == (False, 1.0, "StandardReco_PfoAnalysis.root")


def test_timing_can_be_switched_off():
    text = MINIMAL.replace(
        '<parameter name="CalibrHCALOther">50</parameter>',
        '<parameter name="CalibrHCALOther">50</parameter><parameter name="UseHcalTiming">0</parameter>',
    )
    assert parse_steering(text).digi.hcalTimeWindows == (math.inf, math.inf)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("<marlin>", "<marlin><oops>", "not well-formed XML"),
        ("<processor name=\"Pfo\"/>", "<processor name=\"Pfo\"/><processor name=\"Digi_400ns\"/>", "2 DDCaloDigi processors are executed"),
        ('<parameter name="CalibrHCALEndcap" value="41"/>', "", "has no value for CalibrHCALEndcap"),
        ("30 60", "30 sixty", "CalibrECAL must be numbers"),
        ("30 60", "30", "CalibrECAL has 1 values for the 2 layer groups"),
        ('"21 31"', '"21 x"', "ECALLayers must be integers"),
        ("<parameter name=\"ECalToMipCalibration\">160", "<parameter name=\"ECalToMipCalibration\">-160", "must be positive"),
        ("${Window}</parameter>", "${Windw}</parameter>", r"constant \$\{Windw\} is not defined"),
        ('value="250"', 'value="lots"', "MaxRecordNumber must be an integer"),
        ('type="DDPandoraPFANewProcessor"', 'type="SomethingElse"', "no DDPandoraPFANewProcessor processor is executed"),
    ],
)
def test_bad_steering_fails_with_a_clear_message(old, new, message):
    assert old in MINIMAL
    with pytest.raises((SteeringInputError, steering.SteeringError), match=message):
        parse_steering(MINIMAL.replace(old, new, 1))


def test_missing_steering_file(tmp_path):
    with pytest.raises(SteeringInputError, match="does not exist"):
        read_steering(tmp_path / "steering.xml")
    root = tmp_path / "notmarlin.xml"
    root.write_text("<pandora/>")
    with pytest.raises(SteeringInputError, match="not a Marlin steering file"):
        read_steering(root)


def test_shipped_pandora_settings():
    default = read_pandora_settings(DATA / "steering" / "PandoraSettings" / "PandoraSettingsDefault.xml")
    assert default.present and not default.training
    assert default.histogramFile == "PandoraSettings/PandoraLikelihoodData9EBin.xml"
    training = read_pandora_settings(DATA / "steering" / "CalibrationPandoraSettings" / "PandoraSettingsPhotonTraining.xml")
    assert training.training and training.histogramFile == "PandoraLikelihoodDataPhotonTraining.xml"
    assert training.energyBinLowerEdges == (0.0, 0.2, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0)
    assert training.binning["PeakRms"] == (50, 0.0, 5.0)


def test_pandora_settings_errors(tmp_path):
    path = tmp_path / "settings.xml"
    with pytest.raises(PandoraSettingsError, match="does not exist"):
        read_pandora_settings(path)
    path.write_text("<pandora><algorithm type='PhotonReconstruction'><ShouldMakePdfHistograms>true</ShouldMakePdfHistograms>"
                    "<HistogramFile>out.xml</HistogramFile></algorithm></pandora>")
    with pytest.raises(PandoraSettingsError, match="training needs NEnergyBins and EnergyBinLowerEdges"):
        read_pandora_settings(path)
    path.write_text("<pandora><algorithm type='PhotonReconstruction'><ShouldMakePdfHistograms>maybe</ShouldMakePdfHistograms>"
                    "<HistogramFile>out.xml</HistogramFile></algorithm></pandora>")
    with pytest.raises(PandoraSettingsError, match="must be true or false"):
        read_pandora_settings(path)
    path.write_text("<pandora><algorithm type='PhotonReconstruction'/></pandora>")
    with pytest.raises(PandoraSettingsError, match="no HistogramFile"):
        read_pandora_settings(path)
    path.write_text("<pandora><algorithm type='ConeClustering'/></pandora>")
    assert not read_pandora_settings(path).present
