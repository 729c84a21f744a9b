"""The emulator as a Marlin stand-in: the ROOT file it leaves, slicing, training mode, the command
line (through subprocess) and its speed."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import uproot

from ILCDIRAC.CalibrationSystem.Utilities import steering_editor
from ILCDIRAC.CalibrationSystem.Utilities.likelihood import merge_likelihoods, read_likelihood
from marlin_emulator import DATA_DIR, STEERING_DIR
from marlin_emulator.rootio import (
    CALIBRATION_FLOAT_BRANCHES,
    CALIBRATION_HISTOGRAMS,
    FLOAT_BRANCHES,
    INT_BRANCHES,
    PFO_VECTORS,
    TARGET_VECTORS,
)
from marlin_emulator.run import event_slices, run
from marlin_emulator.samples import make_sample_files, read_sample_file

CHECKOUT = Path(__file__).resolve().parents[2]
DATA = DATA_DIR
STEERING = (DATA / "steering" / "calibrationReconstruction.xml").read_text()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    shutil.copytree(STEERING_DIR, folder, dirs_exist_ok=True)
    samples = {
        "gamma": make_sample_files("gamma", 10, 2, 400, "CLD", 1, folder / "s"),
        "kaon": make_sample_files("kaon0L", 50, 2, 400, "CLD", 2, folder / "s"),
        "muon": make_sample_files("mu-", 10, 2, 400, "CLD", 3, folder / "s"),
        "zuds": make_sample_files("zuds", 200, 2, 400, "CLD", 4, folder / "s"),
    }
    return folder, samples


def write_steering(folder, name, files, events=0, skip=0, pfo=None, pandora=None) -> str:
    text = steering_editor.set_global_parameters(
        STEERING, {"LCIOInputFiles": [str(f) for f in files], "MaxRecordNumber": events, "SkipNEvents": skip}
    )
    text = steering_editor.set_processor_parameters(text, "MyPfoAnalysis", {"RootFile": f"{name}.root", **(pfo or {})})
    if pandora:
        text = steering_editor.set_processor_parameters(text, "MyDDMarlinPandora_10ns", pandora)
    (folder / f"{name}.xml").write_text(text)
    return f"{name}.xml"


def read(folder, name):
    with uproot.open(folder / f"{name}.root") as rootFile:
        arrays = rootFile["PfoAnalysisTree"].arrays(library="np")
        histograms = {key.split(";")[0]: rootFile[key].values(flow=True) for key in rootFile.keys() if "TH1" in rootFile[key].classname}
    return arrays, histograms


@pytest.mark.parametrize("sample", ["gamma", "kaon", "muon", "zuds"])
def test_same_input_and_constants_give_the_same_output(workdir, sample):
    folder, samples = workdir
    for copy in ("a", "b"):
        run(write_steering(folder, f"det_{sample}_{copy}", samples[sample]), folder)
    (a, ha), (b, hb) = read(folder, f"det_{sample}_a"), read(folder, f"det_{sample}_b")
    assert a.keys() == b.keys() and ha.keys() == hb.keys()
    for key in a:
        np.testing.assert_array_equal(np.concatenate(a[key]) if a[key].dtype == object else a[key],
                                      np.concatenate(b[key]) if b[key].dtype == object else b[key])
    for key in ha:
        np.testing.assert_array_equal(ha[key], hb[key])


def test_tree_has_pfoanalysis_branches_with_their_types(workdir):
    folder, samples = workdir
    run(write_steering(folder, "types", samples["gamma"]), folder)
    with uproot.open(folder / "types.root") as rootFile:
        tree = rootFile["PfoAnalysisTree"]
        assert tree.num_entries == 800
        for name in INT_BRANCHES + ("pfoMinHCalLayerToEdge",):
            assert tree[name].typename == "int32_t", name
        for name in FLOAT_BRANCHES + CALIBRATION_FLOAT_BRANCHES:
            assert tree[name].typename == "float", name
        for name, kind in {**PFO_VECTORS, **TARGET_VECTORS}.items():
            assert tree[name].typename == ("float[]" if kind == "f" else "int32_t[]"), name
            assert tree["n" + name].typename == "int32_t"
        targets = tree["pfoTargetEnergies"].array(library="np")
        assert all(np.all(np.diff(t) <= 0) for t in targets)  # sorted by energy, leading first
        assert rootFile["fPFA"].classname == "TH1F"
        counts, edges = rootFile["fPFA"].to_numpy()
        assert (counts.size, edges[0], edges[-1]) == (10000, 0.0, 5000.0) and counts.sum() == 800
        for name, (bins, low, high) in CALIBRATION_HISTOGRAMS.items():
            counts, edges = rootFile[name].to_numpy()
            assert rootFile[name].classname == "TH1F" and (counts.size, edges[0], edges[-1]) == pytest.approx((bins, low, high)), name
        assert rootFile["ECalBarrelDirectionCorrectionSimCaloHit"].values().sum() > 0


def test_without_calibration_details_only_the_event_tree_is_written(workdir):
    folder, samples = workdir
    run(write_steering(folder, "nodetails", samples["kaon"], events=50, pfo={"CollectCalibrationDetails": 0}), folder)
    with uproot.open(folder / "nodetails.root") as rootFile:
        assert "TotalCaloHitEnergy" not in rootFile["PfoAnalysisTree"] and "pfoMinHCalLayerToEdge" not in rootFile["PfoAnalysisTree"]
        assert "HCalDirectionCorrectedCaloHitEnergy" not in rootFile and "fPFA" in rootFile


def test_skip_and_max_record_number_slice_the_concatenated_files_exactly(workdir):
    folder, samples = workdir
    run(write_steering(folder, "all", samples["kaon"]), folder)
    run(write_steering(folder, "slice", samples["kaon"], events=300, skip=250), folder)
    (full, _), (part, _) = read(folder, "all"), read(folder, "slice")
    assert part["event"].size == 300
    np.testing.assert_array_equal(part["run"], np.r_[np.zeros(150), np.ones(150)])
    np.testing.assert_array_equal(part["event"], np.r_[np.arange(250, 400), np.arange(0, 150)])
    for key in ("TotalCaloHitEnergy", "pfoEnergyTotal", "pfoECalToHadEnergy", "nPfosTotal", "pfoMinHCalLayerToEdge"):
        np.testing.assert_array_equal(part[key], full[key][250:550])
    run(write_steering(folder, "beyond", samples["kaon"], events=10, skip=5000), folder)
    assert read(folder, "beyond")[0]["event"].size == 0


def test_event_slices():
    class Sample:
        def __init__(self, n):
            self.nEvents = n

    files = [Sample(100), Sample(50), Sample(100)]
    assert [s.tolist() for s in event_slices(files, 0, 0)] == [list(range(100)), list(range(50)), list(range(100))]
    slices = event_slices(files, 120, 60)
    assert [s.tolist() for s in slices] == [[], list(range(20, 50)), list(range(30))]
    assert sum(s.size for s in event_slices(files, 240, 0)) == 10 and sum(s.size for s in event_slices(files, 0, -1)) == 250


def test_training_mode_writes_likelihood_files_that_merge(workdir):
    folder, samples = workdir
    training = {"PandoraSettingsXmlFile": "CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml"}
    outputs = []
    for worker, (skip, events) in enumerate(((0, 400), (400, 400))):
        run(write_steering(folder, f"train{worker}", samples["zuds"], events=events, skip=skip, pandora=training), folder)
        produced = folder / "PandoraLikelihoodDataPhotonTraining.xml"
        outputs.append(read_likelihood(produced.read_text()))
        produced.rename(folder / f"training_{worker}.xml")
    first, second = outputs
    assert first.energyBinLowerEdges == (0.0, 0.2, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0)
    assert len(first.variables) == 6 and sum(first.nSignalEvents) > 1000 and sum(first.nBackgroundEvents) > 1000
    assert first.nSignalEvents != second.nSignalEvents  # different events
    merged = merge_likelihoods(outputs)
    assert merged.nSignalEvents == tuple(a + b for a, b in zip(first.nSignalEvents, second.nSignalEvents, strict=True))
    assert (folder / "train0.root").is_file()


def run_cli(folder, *args, script="main"):
    """The console-script entry point of this checkout, in a separate process."""
    code = f"import sys; from marlin_emulator.cli import {script}; sys.exit({script}())"
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_command_line_runs_like_marlin(workdir):
    folder, samples = workdir
    done = run_cli(folder, write_steering(folder, "cli", samples["muon"], events=100))
    assert done.returncode == 0, done.stderr
    assert "processed 100 events" in done.stdout and done.stderr == ""
    with uproot.open(folder / "cli.root") as rootFile:
        assert rootFile["PfoAnalysisTree"].num_entries == 100


def test_samples_command_line(tmp_path):
    done = run_cli(tmp_path, "--particle", "kaon0L", "--energy", "50", "--files", "2", "--events-per-file", "10",
                   "--truth", "CLIC", "--seed", "9", "--outdir", "out", script="samples_main")
    assert done.returncode == 0, done.stderr
    paths = done.stdout.split()
    assert [Path(p).name for p in paths] == ["kaon0L_50GeV_0000.slcio", "kaon0L_50GeV_0001.slcio"]
    assert (tmp_path / "out" / "kaon0L_files.txt").read_text().split() == paths
    assert read_sample_file(tmp_path / paths[1]).truth.name == "CLIC_o3_v14"
    bad = run_cli(tmp_path, "--particle", "kaon0L", "--energy", "50", "--files", "1", "--events-per-file", "10",
                  "--truth", "NoSuchDetector", "--seed", "9", "--outdir", "out", script="samples_main")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "NoSuchDetector" in bad.stderr


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing input", "does not exist"),
        ("garbled input", "not an emulator sample file"),
        ("garbled steering", "not well-formed XML"),
        ("missing settings", "Pandora settings file"),
        ("missing likelihood", "photon likelihood file"),
        ("garbled likelihood", "lacks NEnergyBins"),
        ("no input", "LCIOInputFiles is empty"),
    ],
)
def test_bad_inputs_fail_with_one_clear_line(workdir, tmp_path, problem, message):
    folder, samples = workdir
    shutil.copytree(STEERING_DIR, tmp_path, dirs_exist_ok=True)
    files = list(samples["gamma"])
    if problem == "missing input":
        files.append(tmp_path / "gone.slcio")
    if problem == "garbled input":
        (tmp_path / "bad.slcio").write_bytes(b"LCIO\x00\x17binary")
        files = [tmp_path / "bad.slcio"]
    name = write_steering(tmp_path, "bad", [] if problem == "no input" else files)
    if problem == "garbled steering":
        (tmp_path / name).write_text((tmp_path / name).read_text()[:-40])
    if problem == "missing settings":
        (tmp_path / "PandoraSettings/PandoraSettingsDefault.xml").unlink()
    if problem == "missing likelihood":
        (tmp_path / "PandoraSettings/PandoraLikelihoodData9EBin.xml").unlink()
    if problem == "garbled likelihood":
        (tmp_path / "PandoraSettings/PandoraLikelihoodData9EBin.xml").write_text("<PhotonSigPeakRms_0/>")
    done = run_cli(tmp_path, name)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("marlin-emulator: error:") and message in lines[0], done.stderr
    assert not (tmp_path / "bad.root").exists()


@pytest.mark.parametrize("sample", ["gamma", "kaon", "muon", "zuds"])
def test_500_events_take_well_under_a_second_of_cpu(workdir, sample):
    folder, samples = workdir
    name = write_steering(folder, f"speed_{sample}", samples[sample], events=500)
    started = time.process_time()
    report = run(name, folder)
    assert report.events == 500
    assert time.process_time() - started < 0.8
