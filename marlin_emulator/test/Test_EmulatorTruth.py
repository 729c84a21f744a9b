"""Emulator detector truth (data files, schema, user files) and the sample-file API."""
import json

import numpy as np
import pytest
import yaml

from marlin_emulator.samples import (
    SampleFileError,
    make_sample_files,
    read_sample_file,
)
from marlin_emulator.sim import simulate
from marlin_emulator.truth import (
    TruthError,
    available_truths,
    load_truth,
    ring_direction_ratio,
    truth_from_mapping,
)

SHIPPED = {
    "FCCee_o1_v04", "CLIC_o3_v14", "ILD_l5_o1_v02",
    "FCCee_01_v04_ecal40", "FCCee_01_v04_ecal30", "FCCee_01_v04_ecal20", "FCCee_01_v04_ecal20_10",
}


def test_all_talk_detectors_are_shipped_and_valid():
    assert SHIPPED <= set(available_truths())
    for name in SHIPPED:
        truth = load_truth(name)
        assert truth.name == name
        assert truth.nEcalLayers == len(truth.ecalLayerX0) == len(truth.ecalLayerTrueConstants)
        assert 0 < truth.ecalClusterCapture <= 1 and 0 < truth.hcalClusterCapture <= 1


def test_aliases_and_section_3_values():
    cld = load_truth("CLD")
    assert cld.name == "FCCee_o1_v04" and load_truth("cld") is cld
    assert cld.trueConstants.CalibrECAL == (37.5227197175, 37.5227197175)
    assert cld.trueConstants.CalibrHCALOther == 57.4588
    # MIP sim energies reproduce the quoted MIP scale (ECAL 5.7 MeV digitised)
    assert cld.trueEcalToMip == pytest.approx(175.439, rel=1e-6)
    assert load_truth("CLICdet").trueConstants.ECalToHadGeVCalibration == 1.24223718397
    assert load_truth("ILD").ecal.firstLayerNumber == 0


def test_ecal_layouts_of_the_talk():
    layouts = {
        "FCCee_01_v04_ecal40": (40, 0), "FCCee_01_v04_ecal30": (30, 0),
        "FCCee_01_v04_ecal20": (20, 0), "FCCee_01_v04_ecal20_10": (20, 10),
    }
    for name, (thin, thick) in layouts.items():
        ecal = load_truth(name).ecal
        assert (ecal.nThinLayers, ecal.nThickLayers) == (thin, thick)
    split = load_truth("FCCee_01_v04_ecal20_10")
    thinC, thickC = split.trueConstants.CalibrECAL
    assert thickC / thinC == pytest.approx(1.02 * split.ecal.thickLayerX0 / split.ecal.thinLayerX0, rel=1e-3)


def test_ring_direction_factors_reproduce_the_ring_constant():
    cld = load_truth("CLD")
    ratio = ring_direction_ratio(cld.trueConstants, cld.mipSimEnergy)
    assert ratio * cld.trueConstants.CalibrHCALEndcap == pytest.approx(cld.trueConstants.CalibrHCALOther)


def test_user_truth_file_with_base_and_constants_off(tmp_path):
    cld = load_truth("CLD")
    off = {k: [1.15 * x for x in v] if isinstance(v, tuple) else 1.15 * v for k, v in vars(cld.trueConstants).items()}
    path = tmp_path / "cld_off.yaml"
    path.write_text(yaml.safe_dump({"name": "CLD_off", "base": "CLD", "trueConstants": off}))
    truth = load_truth(str(path))
    assert truth.name == "CLD_off" and truth.aliases == ()
    assert truth.trueConstants.CalibrHCALBarrel == pytest.approx(1.15 * 45.9957)
    assert truth.hcal == cld.hcal  # everything else comes from the base
    assert truth_from_mapping(truth.to_mapping()) == truth


def test_complete_truth_file_without_base_round_trips(tmp_path):
    data = load_truth("CLIC").to_mapping()
    data["name"] = "MyCLIC"
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_truth(path).trueConstants == load_truth("CLIC").trueConstants


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hcal": {"nLayers": "many"}}, r"hcal\.nLayers: must be an integer"),
        ({"ecal": {"thinLayerX0": None}}, r"ecal\.thinLayerX0: must be a finite number"),
        ({"trueConstants": {"CalibrECAL": [37.5]}}, r"CalibrECAL: must be a list of 2 numbers"),
        ({"regions": {"ecalTransition": [0.8, 0.7]}}, r"regions\.ecalTransition must be two increasing values"),
        ({"photon": {"misIdProbability": 1.5}}, r"photon\.misIdProbability: must be in \[0, 1\], got 1.5"),
        ({"trueConstants": {"ECalToEMGeVCalibration": 0.9}}, "cannot hold more than the digitised energy"),
        ({"hcal": {"colour": 3}}, r"hcal\.colour: unknown key"),
        ({"favourite": 1}, "unknown key 'favourite'"),
    ],
)
def test_bad_truth_values_are_named(change, message):
    data = load_truth("CLD").to_mapping()
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    with pytest.raises(TruthError, match=message):
        truth_from_mapping(data)


def test_truth_lookup_errors(tmp_path):
    with pytest.raises(TruthError, match="unknown detector truth 'CDL'"):
        load_truth("CDL")
    with pytest.raises(TruthError, match="does not exist"):
        load_truth(str(tmp_path / "missing.yaml"))
    loop = tmp_path / "loop.yaml"
    loop.write_text("name: loop\nbase: loop.yaml\n")
    with pytest.raises(TruthError, match="circular 'base' chain"):
        load_truth(loop)
    incomplete = tmp_path / "incomplete.yaml"
    incomplete.write_text("name: bare\nhcal: {nLayers: 40}\n")
    with pytest.raises(TruthError, match="missing section 'trueConstants'"):
        load_truth(incomplete)


def test_make_sample_files_writes_small_self_describing_files(tmp_path):
    paths = make_sample_files("gamma", 10, 3, 250, "CLD", 7, tmp_path / "out")
    assert [p.name for p in paths] == ["gamma_10GeV_0000.slcio", "gamma_10GeV_0001.slcio", "gamma_10GeV_0002.slcio"]
    assert (tmp_path / "out" / "gamma_files.txt").read_text().split() == [str(p) for p in paths]
    content = json.loads(paths[1].read_text())
    assert content["format"] == "marlin-emulator-sample" and content["version"] == 1
    assert (content["particle"], content["energy"], content["seed"], content["fileIndex"], content["nEvents"]) == ("gamma", 10.0, 7, 1, 250)
    assert content["truth"]["name"] == "FCCee_o1_v04"
    assert paths[0].stat().st_size < 8000
    sample = read_sample_file(paths[1])
    assert sample.truth == load_truth("CLD") and sample.pdg == 22


def test_sim_bank_is_a_pure_function_of_file_and_event(tmp_path):
    first, second = make_sample_files("kaon0L", 50, 2, 400, "CLD", 3, tmp_path)
    a, b = read_sample_file(first), read_sample_file(second)
    whole = simulate(a, np.arange(400))
    part = simulate(a, np.array([17, 250, 3]))
    np.testing.assert_array_equal(part.ecalPrompt, whole.ecalPrompt[[17, 250, 3]])
    np.testing.assert_array_equal(part.emFraction, whole.emFraction[[17, 250, 3]])
    other = simulate(b, np.arange(400))
    assert not np.allclose(other.cosTheta, whole.cosTheta)  # another file, other events
    again = make_sample_files("kaon0L", 50, 1, 400, "CLD", 4, tmp_path / "seed4")[0]
    assert not np.allclose(simulate(read_sample_file(again), np.arange(400)).cosTheta, whole.cosTheta)


@pytest.mark.parametrize(
    "args, message",
    [
        (("photon", 10, 1, 10, "CLD", 1), "unknown particle 'photon'"),
        (("gamma", -1, 1, 10, "CLD", 1), "positive number of GeV"),
        (("gamma", 10, 0, 10, "CLD", 1), "number of files must be a positive integer"),
        (("gamma", 10, 1, 2.5, "CLD", 1), "events per file must be a positive integer"),
        (("kaon0L", 0.4, 1, 10, "CLD", 1), "no kinetic energy"),
        (("gamma", 10, 1, 10, "CLD", -3), "seed must be a non-negative integer"),
    ],
)
def test_bad_sample_requests(tmp_path, args, message):
    with pytest.raises(SampleFileError, match=message):
        make_sample_files(*args, tmp_path)


def test_bad_sample_files(tmp_path):
    with pytest.raises(SampleFileError, match="does not exist"):
        read_sample_file(tmp_path / "none.slcio")
    binary = tmp_path / "real.slcio"
    binary.write_bytes(b"\x00\x01LCIO")
    with pytest.raises(SampleFileError, match="not an emulator sample file"):
        read_sample_file(binary)
    good = make_sample_files("mu-", 10, 1, 5, "CLD", 1, tmp_path)[0]
    content = json.loads(good.read_text())
    content["version"] = 9
    good.write_text(json.dumps(content))
    with pytest.raises(SampleFileError, match="format version 9"):
        read_sample_file(good)
    content["version"] = 1
    content["truth"]["hcal"]["nLayers"] = 2
    good.write_text(json.dumps(content))
    with pytest.raises(SampleFileError, match=r"hcal\.nLayers: must be >= 6, got 2"):
        read_sample_file(good)
