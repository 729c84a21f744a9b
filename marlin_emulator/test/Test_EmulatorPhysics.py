"""Emulator physics: the PfoAnalysis output reacts to the constants the way Marlin's would, and
the original selections with an independent estimator recover the detector truth."""
import shutil

import numpy as np
import pytest
import uproot
import yaml

from ILCDIRAC.CalibrationSystem.Utilities import steering_editor
from marlin_emulator import DATA_DIR, STEERING_DIR
from marlin_emulator.run import run
from marlin_emulator.samples import make_sample_files
from marlin_emulator.truth import load_truth, ring_direction_ratio

DATA = DATA_DIR
STEERING = (DATA / "steering" / "calibrationReconstruction.xml").read_text()
DIGI, PANDORA, PFO = "MyDDCaloDigi_10ns", "MyDDMarlinPandora_10ns", "MyPfoAnalysis"
T_K0L = 50.0 - 0.497672
CLD = load_truth("CLD")
#: CLD whose true constants are 15 % above the shipped steering's (CLD) starting values.
OFF = 1.15


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emulator")
    shutil.copytree(STEERING_DIR, folder, dirs_exist_ok=True)
    off = {k: [OFF * x for x in v] if isinstance(v, tuple) else OFF * v for k, v in vars(CLD.trueConstants).items()}
    (folder / "cld_off.yaml").write_text(yaml.safe_dump({"name": "CLD_off", "base": "CLD", "trueConstants": off}))
    samples = {
        "gamma": make_sample_files("gamma", 10, 2, 6000, "CLD", 21, folder / "gamma"),
        "gammaOff": make_sample_files("gamma", 10, 2, 6000, str(folder / "cld_off.yaml"), 22, folder / "gammaOff"),
        "kaon": make_sample_files("kaon0L", 50, 2, 6000, "CLD", 23, folder / "kaon"),
        "muon": make_sample_files("mu-", 10, 2, 2000, "CLD", 24, folder / "muon"),
        "zuds": make_sample_files("zuds", 200, 2, 500, "CLD", 25, folder / "zuds"),
        "split": make_sample_files("gamma", 10, 1, 3000, "FCCee_01_v04_ecal20_10", 26, folder / "split"),
    }
    return folder, samples


def reconstruct(workdir, sample, name, digi=None, pandora=None, pfo=None, events=0, skip=0):
    """Run the emulator on a sample with the shipped steering, edited like the worker does."""
    folder, samples = workdir
    text = steering_editor.set_global_parameters(
        STEERING, {"LCIOInputFiles": [str(p) for p in samples[sample]], "MaxRecordNumber": events, "SkipNEvents": skip}
    )
    text = steering_editor.set_processor_parameters(text, PFO, {"RootFile": f"{name}.root", **(pfo or {})})
    if digi:
        text = steering_editor.set_processor_parameters(text, DIGI, digi)
    if pandora:
        text = steering_editor.set_processor_parameters(text, PANDORA, pandora)
    (folder / f"{name}.xml").write_text(text)
    run(f"{name}.xml", folder)
    return uproot.open(folder / f"{name}.root")


def tree(rootFile) -> dict[str, np.ndarray]:
    arrays = rootFile["PfoAnalysisTree"].arrays(library="np")
    arrays["cos"] = np.abs(np.array([c[0] if len(c) else np.nan for c in arrays["pfoTargetCosTheta"]]))
    return arrays


def peak(values) -> float:
    """Independent estimate of a peak's Gaussian core (not the project's estimator): the mean of
    the values within 1.5 sigma of it, iterated from the median (sigma corrected for the clipping)."""
    values = np.asarray(values, dtype=float)
    centre = float(np.median(values))
    sigma = float(np.subtract(*np.percentile(values, [84, 16]))) / 2
    for _ in range(30):
        core = values[np.abs(values - centre) < 1.5 * sigma]
        centre, sigma = float(core.mean()), float(core.std()) / 0.7376
    return centre


def contained_photons(t, window, energy=10.0):
    low, high = window
    return (
        (t["nPfoTargetsTotal"] == 1) & (t["nPfoTargetsPhotons"] == 1)
        & (t["TotalCaloHitEnergy"] - t["ECalTotalCaloHitEnergy"] < 0.01 * energy)
        & (t["cos"] < 0.95) & (t["cos"] > low) & (t["cos"] < high)
    )


def test_ecal_digitisation_is_exactly_proportional_to_its_constants(workdir):
    base = tree(reconstruct(workdir, "gamma", "prop_base", events=2000))
    scaled = tree(reconstruct(workdir, "gamma", "prop_scaled", events=2000, digi={"CalibrECAL": [1.1 * 37.5227197175] * 2}))
    np.testing.assert_allclose(scaled["ECalTotalCaloHitEnergy"], 1.1 * base["ECalTotalCaloHitEnergy"], rtol=2e-6)
    np.testing.assert_array_equal(scaled["HCalTotalCaloHitEnergy"], base["HCalTotalCaloHitEnergy"])
    np.testing.assert_array_equal(scaled["ECalTotalSimCaloHitEnergy"], base["ECalTotalSimCaloHitEnergy"])
    endcap = tree(reconstruct(workdir, "gamma", "prop_endcap", events=2000, digi={"ECALEndcapCorrectionFactor": 1.2}))
    barrel = base["cos"] < CLD.regions.ecalTransition[0]
    pureEndcap = base["cos"] > CLD.regions.ecalTransition[1]
    np.testing.assert_array_equal(endcap["ECalTotalCaloHitEnergy"][barrel], base["ECalTotalCaloHitEnergy"][barrel])
    np.testing.assert_allclose(
        endcap["ECalTotalCaloHitEnergy"][pureEndcap],
        base["ECalTotalCaloHitEnergy"][pureEndcap] * 1.2 / 1.03245503522, rtol=2e-6,
    )


def test_hcal_time_window_raises_the_digitised_energy_by_the_late_fraction(workdir):
    prompt = tree(reconstruct(workdir, "kaon", "time_10", events=1000))
    late = tree(
        reconstruct(workdir, "kaon", "time_400", events=1000, digi={"HCALBarrelTimeWindowMax": 400, "HCALEndcapTimeWindowMax": 400})
    )
    np.testing.assert_allclose(late["HCalTotalCaloHitEnergy"], prompt["HCalTotalCaloHitEnergy"] * 1.081, rtol=2e-6)
    np.testing.assert_array_equal(late["ECalTotalCaloHitEnergy"], prompt["ECalTotalCaloHitEnergy"])


def test_phase_1_0_ratio_update_lands_on_the_truth(workdir):
    """Start 15 % off (the truth is 1.15 x the steering's constants): one ratio update lands within ~1 %."""
    t = tree(reconstruct(workdir, "gammaOff", "ecal_off"))
    start, kStart = 37.5227197175, 1.03245503522
    barrel = contained_photons(t, (0.0, 0.643))
    endcap = contained_photons(t, (0.766, 0.94))
    assert barrel.sum() > 3000 and endcap.sum() > 1000
    mBarrel, mEndcap = peak(t["ECalTotalCaloHitEnergy"][barrel]), peak(t["ECalTotalCaloHitEnergy"][endcap])
    assert mBarrel == pytest.approx(10.0 / OFF, rel=0.015)
    newBarrel = 10.0 * start / mBarrel
    newEndcapFactor = 10.0 * start * kStart / mEndcap / newBarrel
    truth = load_truth(str(workdir[0] / "cld_off.yaml")).trueConstants
    assert newBarrel == pytest.approx(truth.CalibrECAL[0], rel=0.012)
    assert newEndcapFactor == pytest.approx(truth.ECALEndcapCorrectionFactor, rel=0.01)


def test_phase_1_1_hcal_digitisation_recovers_the_truth(workdir):
    t = tree(reconstruct(workdir, "kaon", "hcal"))
    total, hcal = t["TotalCaloHitEnergy"], t["HCalTotalCaloHitEnergy"]
    selected = (
        (t["nPfoTargetsTotal"] == 1) & (t["nPfoTargetsNeutralHadrons"] == 1) & (total - hcal < 0.05 * 50)
        & (t["hCalCaloHitEnergyFromEdge"] / total < 0.05)
    )
    for window, truth in (((0.15, 0.485), CLD.trueConstants.CalibrHCALBarrel), ((0.72, 0.94), CLD.trueConstants.CalibrHCALEndcap)):
        inWindow = selected & (t["cos"] > window[0]) & (t["cos"] < window[1])
        assert inWindow.sum() > 500
        steered = 45.9956826061 if window[0] < 0.5 else 46.9252540291
        assert T_K0L * steered / peak(hcal[inWindow]) == pytest.approx(truth, rel=0.015)


def test_mip_peaks_sit_at_the_truth_and_move_with_the_digitisation(workdir):
    def mip_peak(rootFile, name):
        counts, edges = rootFile[name].to_numpy()
        i = int(np.argmax(counts))
        return 0.5 * (edges[i] + edges[i + 1]), edges[1] - edges[0]

    base = reconstruct(workdir, "muon", "mip_base")
    ecal, width = mip_peak(base, "ECalDirectionCorrectedCaloHitEnergy")
    assert ecal == pytest.approx(37.5227197175 * CLD.mipSimEnergy.ecal, abs=width)
    assert 1.0 / ecal == pytest.approx(CLD.trueEcalToMip, rel=0.04)
    hcal, width = mip_peak(base, "HCalDirectionCorrectedCaloHitEnergy")
    assert hcal == pytest.approx(45.9957 * CLD.mipSimEnergy.hcalBarrel, abs=2 * width)
    muon, width = mip_peak(base, "MuonDirectionCorrectedCaloHitEnergy")
    assert muon == pytest.approx(70.1 * CLD.mipSimEnergy.yoke, abs=width)
    hot = reconstruct(workdir, "muon", "mip_hot", digi={"CalibrECAL": [1.25 * 37.5227197175] * 2})
    hotEcal, width = mip_peak(hot, "ECalDirectionCorrectedCaloHitEnergy")
    assert hotEcal == pytest.approx(1.25 * ecal, abs=width)  # so ToMip = 1/peak moves inversely
    for name in ("HCalDirectionCorrectedSimCaloHitEndCap", "HCalDirectionCorrectedSimCaloHitOther", "ECalDirectionCorrectedSimCaloHit"):
        np.testing.assert_array_equal(hot[name].values(), base[name].values())  # sim hits ignore the constants


def test_hcal_ring_constant_from_the_original_formula(workdir):
    muon = reconstruct(workdir, "muon", "ring_mu")
    kaon = reconstruct(workdir, "kaon", "ring_k0l")

    def local_maximum_peak(name):
        counts, edges = muon[name].to_numpy()
        best = max(
            range(10, counts.size - 10), key=lambda i: counts[i] if counts[i] > counts[i - 10] and counts[i] > counts[i + 10] else -1
        )
        return 0.5 * (edges[best] + edges[best + 1])

    def mean(name):
        counts, edges = kaon[name].to_numpy()
        return float(np.average(0.5 * (edges[1:] + edges[:-1]), weights=counts))

    directionRatio = mean("HCalEndCapDirectionCorrectionSimCaloHit") / mean("HCalOtherDirectionCorrectionSimCaloHit")
    assert directionRatio == pytest.approx(ring_direction_ratio(CLD.trueConstants, CLD.mipSimEnergy), rel=0.01)
    mipRatio = local_maximum_peak("HCalDirectionCorrectedSimCaloHitEndCap") / local_maximum_peak("HCalDirectionCorrectedSimCaloHitOther")
    ring = directionRatio * mipRatio * CLD.trueConstants.CalibrHCALEndcap
    assert ring == pytest.approx(CLD.trueConstants.CalibrHCALOther, rel=0.05)


def test_em_scale_and_its_dependence_on_the_mip_threshold(workdir):
    base = tree(reconstruct(workdir, "gamma", "em_base"))
    single = (
        (base["nPfoTargetsTotal"] == 1) & (base["nPfoTargetsPhotons"] == 1) & (base["nPfosTotal"] == 1)
        & (base["nPfosPhotons"] == 1) & (base["pfoHCalToEmEnergy"] < 0.1)
    )
    assert single.mean() > 0.5
    emPeak = peak(base["pfoECalToEmEnergy"][single])
    # untrained likelihood: the EM scale comes out 1-2 % above the truth (leakage, transition, photon ID)
    assert 10.0 * 1.01776966108 / emPeak == pytest.approx(CLD.trueConstants.ECalToEMGeVCalibration, rel=0.025)
    half = tree(reconstruct(workdir, "gamma", "em_halfmip", pandora={"ECalToMipCalibration": 175.439 / 2}))
    ratio = half["pfoECalToEmEnergy"][single] / base["pfoECalToEmEnergy"][single]
    # the 0.5 MIP threshold now cuts at 1 true MIP: the sub-threshold loss doubles from 1 % to 2 %
    np.testing.assert_allclose(ratio, 0.98 / 0.99, rtol=1e-3)


def test_chi_square_method_inputs_recover_the_hadronic_scales(workdir):
    noSoftComp = {"MaxClusterEnergyToApplySoftComp": 0}  # as the calibration runs
    t = tree(reconstruct(workdir, "kaon", "csm", pandora=noSoftComp))
    selected = (
        (t["nPfoTargetsTotal"] == 1) & (t["nPfoTargetsNeutralHadrons"] == 1) & (t["nPfosTotal"] == 1)
        & (t["nPfosNeutralHadrons"] == 1) & (t["pfoMinHCalLayerToEdge"] > 5)
    )
    ecal, hcal = t["pfoECalToHadEnergy"][selected].astype(float), t["pfoHCalToHadEnergy"][selected].astype(float)
    assert selected.sum() > 3000 and ecal.mean() > 1.0  # both calorimeters take part
    # least squares of the line E_E / I_E + E_H / I_H = 1: intercepts near T when the truth is used
    inverse = np.linalg.lstsq(np.stack([ecal, hcal], axis=1), np.ones(ecal.size), rcond=None)[0]
    assert 1.0 / inverse[1] == pytest.approx(T_K0L, rel=0.02)
    assert 1.0 / inverse[0] == pytest.approx(T_K0L, rel=0.04)
    # PfoAnalysis splits the PFO energy by the cluster's digitised ECAL/HCAL fractions, which do
    # not depend on the Pandora scales: doubling HCalToHad scales both parts by the same factor
    doubled = tree(reconstruct(workdir, "kaon", "csm_double", pandora={"HCalToHadGeVCalibration": 2 * 1.00565042407, **noSoftComp}))
    e2, h2 = doubled["pfoECalToHadEnergy"][selected].astype(float), doubled["pfoHCalToHadEnergy"][selected].astype(float)
    np.testing.assert_allclose(e2 * (ecal + hcal), ecal * (e2 + h2), rtol=1e-5)
    np.testing.assert_allclose(e2 + h2, doubled["pfoEnergyNeutralHadrons"][selected], rtol=1e-5)
    a, b, f = 1.11490774181, 1.00565042407, ecal / (ecal + hcal)  # E_PFO = a x + b y, f = x / (x + y)
    np.testing.assert_allclose(e2 + h2, (ecal + hcal) * (a * f + 2 * b * (1 - f)) / (a * f + b * (1 - f)), rtol=1e-5)


def test_ecal_layers_follow_ddcalodigi_literally(workdir):
    """20 thin + 10 thick layers numbered from 1: "21 31" is right, ILCDIRAC's "20 31" gives the
    last thin layer the thick constant (quirk 8)."""
    thin, thick = load_truth("FCCee_01_v04_ecal20_10").trueConstants.CalibrECAL
    right = tree(reconstruct(workdir, "split", "layers_right", digi={"CalibrECAL": [thin, thick], "ECALLayers": "21 31"}))
    shifted = tree(reconstruct(workdir, "split", "layers_quirk", digi={"CalibrECAL": [thin, thick], "ECALLayers": "20 31"}))
    barrel = contained_photons(right, (0.0, 0.643))
    assert peak(right["ECalTotalCaloHitEnergy"][barrel]) == pytest.approx(10.0, rel=0.015)
    assert np.all(shifted["ECalTotalCaloHitEnergy"] >= right["ECalTotalCaloHitEnergy"])
    assert np.median(shifted["ECalTotalCaloHitEnergy"][barrel] / right["ECalTotalCaloHitEnergy"][barrel]) > 1.01


def test_trained_photon_likelihood_reduces_fragments_and_shifts_the_em_scale(workdir):
    folder, _ = workdir
    reconstruct(workdir, "zuds", "training",
                pandora={"PandoraSettingsXmlFile": "CalibrationPandoraSettings/PandoraSettingsPhotonTraining.xml"})
    trained = (folder / "PandoraSettings/PandoraSettingsDefault.xml").read_text().replace(
        "PandoraSettings/PandoraLikelihoodData9EBin.xml", "PandoraLikelihoodDataPhotonTraining.xml"
    )
    (folder / "PandoraSettingsTrained.xml").write_text(trained)
    default = tree(reconstruct(workdir, "gamma", "pid_default"))
    better = tree(reconstruct(workdir, "gamma", "pid_trained", pandora={"PandoraSettingsXmlFile": "PandoraSettingsTrained.xml"}))

    def single(t):
        return (t["nPfoTargetsPhotons"] == 1) & (t["nPfosTotal"] == 1) & (t["nPfosPhotons"] == 1) & (t["pfoHCalToEmEnergy"] < 0.1)

    assert single(better).mean() > single(default).mean()
    shift = peak(better["pfoECalToEmEnergy"][single(better)]) / peak(default["pfoECalToEmEnergy"][single(default)]) - 1
    assert 0.002 < shift < 0.01


def test_quirk_4_stores_the_edge_energy_through_an_int(workdir, tmp_path):
    folder, samples = workdir
    quirky = folder / "cld_quirk.yaml"
    quirky.write_text("name: CLD_quirk\nbase: CLD\nquirks: {hCalEnergyFromEdgeIntBug: true}\n")
    samples["quirk"] = make_sample_files("kaon0L", 50, 1, 300, str(quirky), 23, folder / "quirk")
    normal = tree(reconstruct(workdir, "kaon", "edge_float", events=300))
    bugged = tree(reconstruct(workdir, "quirk", "edge_int"))
    assert normal["hCalCaloHitEnergyFromEdge"].max() > 1.0
    assert np.all(np.abs(bugged["hCalCaloHitEnergyFromEdge"]) < 1e-40)  # an int's bits read as a float


def test_hit_energy_cap_and_software_compensation(workdir):
    plain = {"MaxClusterEnergyToApplySoftComp": 0}
    base = tree(reconstruct(workdir, "kaon", "had_base", events=3000, pandora=plain))
    capped = tree(reconstruct(workdir, "kaon", "had_cap", events=3000, pandora={**plain, "MaxHCalHitHadronicEnergy": 1.0}))
    compensated = tree(reconstruct(workdir, "kaon", "had_sc", events=3000, pandora={"MaxClusterEnergyToApplySoftComp": 200}))
    hadron = (base["nPfosTotal"] == 1) & (base["nPfosNeutralHadrons"] == 1) & (base["pfoHCalToHadEnergy"] > 0.9 * T_K0L)
    assert hadron.sum() > 200
    loss = 1 - capped["pfoEnergyNeutralHadrons"][hadron] / base["pfoEnergyNeutralHadrons"][hadron]
    assert 0.02 < np.median(loss) < 0.1  # the 1 GeV cap of the early CLD constants: a visible non-linearity
    contained = (base["nPfosTotal"] == 1) & (base["nPfosNeutralHadrons"] == 1) & (base["pfoMinHCalLayerToEdge"] > 5)
    width = np.std(base["pfoEnergyNeutralHadrons"][contained]) / np.mean(base["pfoEnergyNeutralHadrons"][contained])
    compensatedWidth = np.std(compensated["pfoEnergyNeutralHadrons"][contained]) / np.mean(
        compensated["pfoEnergyNeutralHadrons"][contained]
    )
    assert compensatedWidth < width  # software compensation undoes part of the e/h fluctuation
