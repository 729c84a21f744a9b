"""Calibration estimators against distributions with known answers, against literal
(loop-by-loop) re-statements of the original algorithms (docs/PHYSICS.md section 4), and
(chi-square method) against today's per-event computation it replaces."""
import math

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import minimize_scalar

from ILCDIRAC.CalibrationSystem.test import percsm
from ILCDIRAC.CalibrationSystem.Utilities.estimators import (
    KaonCells,
    chi_square_hadronic_scale,
    csm_band,
    csm_band_fraction,
    csm_chi2,
    csm_fixed_point,
    csm_intercept_grid,
    csm_moments,
    digitisation_histogram,
    gaussian_fit_mean,
    histogram_mean,
    mip_peak,
    rebin_to_accuracy,
    rms90_window,
    simcalohit_peak,
)
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for
from ILCDIRAC.CalibrationSystem.Utilities.phases.hadronic_scale import kaon_cells

K0L_MASS = 0.497672
BEAM = 50.0
KINETIC = BEAM - K0L_MASS


# --------------------------------------------------------------------------------------------
# Literal references, written from the prose of the spec, one loop per sentence
# --------------------------------------------------------------------------------------------

def literal_rms90(counts, edges, fraction=0.9):
    x = 0.5 * (edges[:-1] + edges[1:])
    total = sum(counts)
    running, lastStart = 0.0, 0
    for i, n in enumerate(counts):
        running += n
        lastStart = i
        if running >= total * (1 - fraction):
            break
    best = None
    for start in range(lastStart + 1):
        sumN = sumX = sumXX = 0.0
        end = start
        for i in range(start, len(counts)):
            sumN += counts[i]
            sumX += counts[i] * x[i]
            sumXX += counts[i] * x[i] ** 2
            end = i
            if sumN >= fraction * total:
                break
        mean = sumX / sumN
        rms = math.sqrt(max(sumXX / sumN - mean ** 2, 0.0))
        if best is None or rms < best[3] - 1e-12:
            best = (start, end, mean, rms)
    return best


def literal_peak(counts, distance=10):
    bestBin, highest = None, 0.0
    for i in range(distance, len(counts) - distance - 1):
        if counts[i] > counts[i - distance] and counts[i] > counts[i + distance] and counts[i] > highest:
            bestBin, highest = i, counts[i]
    return bestBin


def literal_csm_chi2(eEcal, eHcal, iE, iH, c=0.55):
    chi2 = 0.0
    for eE, eH in zip(eEcal, eHcal, strict=True):
        d = abs(eH * iE + eE * iH - iH * iE) / math.sqrt(iH ** 2 + iE ** 2)
        sigma = math.sqrt(((c * math.sqrt(eH) * iE) ** 2 + (c * math.sqrt(eE) * iH) ** 2) / (iH ** 2 + iE ** 2))
        chi2 += (d / sigma) ** 2
    return chi2


def kaon_events(rng, n, a, b, resolution=0.55):
    """K0L toy: x + y = T split by a uniform ECAL share in [0, 0.7], each part smeared by
    resolution * sqrt(part), measured as E_E = x / a, E_H = y / b; the true line has intercepts
    T/a and T/b."""
    share = rng.uniform(0.0, 0.7, n)
    x, y = share * KINETIC, (1 - share) * KINETIC
    x = x + resolution * np.sqrt(x) * rng.standard_normal(n)
    y = y + resolution * np.sqrt(y) * rng.standard_normal(n)
    return np.clip(x, 0, None) / a, np.clip(y, 0, None) / b


def photon_energies(rng, n, tail):
    """10 GeV photon toy: Gaussian core N(10, 0.5) and 10 % low-side tail of the given kind."""
    values = rng.normal(10.0, 0.5, n)
    nTail = n // 10
    if tail == "separated":
        values[:nTail] = rng.uniform(5.0, 9.0, nTail)
    elif tail == "crack":
        values[:nTail] = 10.0 * (1 - rng.uniform(0.05, 0.3, nTail)) + rng.normal(0, 0.4, nTail)
    return values


# --------------------------------------------------------------------------------------------
# Binning
# --------------------------------------------------------------------------------------------

def test_digitisation_histogram_follows_the_original_binning_rule():
    values = np.array([-0.1, 0.2, 3.0, 9.7, 10.1, 15.3])
    counts, edges = digitisation_histogram(values, 10.0, 0.05)
    assert len(counts) == int(15.3 / 0.5) == 30
    assert edges[0] == 0.0 and edges[-1] == 15.3
    # the maximum lands in ROOT's overflow, the negative value in its underflow
    assert counts.sum() == 4
    empty, emptyEdges = digitisation_histogram(np.zeros(0), 10.0, 0.05)
    assert empty.tolist() == [0.0] and emptyEdges.tolist() == [0.0, 0.5]


@pytest.mark.parametrize("accuracy, tolerance", [(0.005, 0.2), (0.02, 0.05), (0.05, 0.05)])
def test_rebinned_fine_histogram_gives_the_raw_value_fit(accuracy, tolerance):
    for seed in range(10):
        values = photon_energies(np.random.default_rng(seed), 5000, "separated")
        rawCounts, rawEdges = digitisation_histogram(values, 10.0, accuracy)
        fine, fineEdges = np.histogram(values, bins=3000, range=(0.0, 30.0))
        counts, edges = rebin_to_accuracy(fine, fineEdges, 10.0, accuracy)
        assert abs(len(counts) - len(rawCounts)) <= 1
        assert edges[-1] - rawEdges[-1] == pytest.approx(0.005, abs=0.005)
        assert counts.sum() == pytest.approx(rawCounts.sum() + 1)  # the maximum is not in overflow here
        raw, rebinned = gaussian_fit_mean(rawCounts, rawEdges), gaussian_fit_mean(counts, edges)
        assert raw.ok and rebinned.ok
        assert abs(rebinned.mean - raw.mean) < tolerance * (rawEdges[1] - rawEdges[0])


def test_rebin_shares_fine_bins_in_proportion_to_overlap():
    fine = np.array([0, 4, 0, 0, 0, 2.0])
    counts, edges = rebin_to_accuracy(fine, np.arange(7.0), 4.0, 0.5)  # upper 6, int(6 / 2) = 3 bins of 2
    np.testing.assert_allclose(edges, [0, 2, 4, 6])
    np.testing.assert_allclose(counts, [4, 0, 2])
    counts, edges = rebin_to_accuracy(fine, np.arange(7.0), 5.0, 0.5)  # int(6 / 2.5) = 2 bins of 3
    np.testing.assert_allclose(counts, [4, 2])
    counts, edges = rebin_to_accuracy(fine, np.arange(7.0), 3.0, 0.5)  # 4 bins of 1.5 cut fine bin 1 in half
    np.testing.assert_allclose(counts, [2, 2, 0, 2])
    counts, edges = rebin_to_accuracy(np.array([0, 3.0, 0]), np.arange(4.0), 1.0, 0.8)  # upper 2, 2 bins of 1
    np.testing.assert_allclose(counts, [0, 3])


# --------------------------------------------------------------------------------------------
# rms90 window and Gaussian fit
# --------------------------------------------------------------------------------------------

def test_rms90_window_of_a_gaussian_is_the_central_1p645_sigma():
    """The continuous answer is [-1.645, 1.645] sigma with RMS 0.79 sigma. The RMS is flat around
    it, so the window that overshoots 90 % the least can win although it sits a few bins off
    centre: the edges agree to 0.1 sigma, the RMS to 0.005 sigma."""
    z = stats.norm.ppf(0.95)
    truncatedRms = math.sqrt(1 - 2 * z * stats.norm.pdf(z) / 0.9)
    edges = np.linspace(-5.0, 5.0, 501)  # 0.02 sigma bins
    expected = 1e6 * np.diff(stats.norm.cdf(edges))
    samples = np.random.default_rng(7).normal(3.0, 2.0, 200_000)
    sampled, sampledEdges = np.histogram(samples, bins=400, range=(-7.0, 13.0))
    for counts, binEdges, mu, sigma in ((expected, edges, 0.0, 1.0), (sampled, sampledEdges, 3.0, 2.0)):
        low, high, mean, rms = rms90_window(counts, binEdges)
        centre = 0.5 * (binEdges[:-1] + binEdges[1:])
        assert (centre[low] - mu) / sigma == pytest.approx(-z, abs=0.1)
        assert (centre[high] - mu) / sigma == pytest.approx(z, abs=0.1)
        assert (mean - mu) / sigma == pytest.approx(0.0, abs=0.05)
        assert rms / sigma == pytest.approx(truncatedRms, abs=0.005)
        assert counts[low:high + 1].sum() >= 0.9 * counts.sum() > counts[low:high].sum()


def test_rms90_window_matches_the_literal_algorithm():
    rng = np.random.default_rng(11)
    for trial in range(40):
        nBins = int(rng.integers(3, 80))
        shape = rng.choice(["gauss", "skew", "sparse", "float"])
        if shape == "gauss":
            counts = np.histogram(rng.normal(0, 1, 500), bins=nBins, range=(-4, 4))[0].astype(float)
        elif shape == "skew":
            counts = np.histogram(rng.gamma(2.0, 1.0, 300), bins=nBins, range=(0, 10))[0].astype(float)
        elif shape == "sparse":
            counts = rng.integers(0, 3, nBins) * (rng.random(nBins) < 0.3)
        else:
            counts = rng.exponential(5.0, nBins)
        if counts.sum() == 0:
            counts[nBins // 2] = 1
        edges = np.sort(rng.uniform(0, 100, nBins + 1)) if trial % 2 else np.linspace(0, 10, nBins + 1)
        if np.any(np.diff(edges) <= 0):
            edges = np.linspace(0, 10, nBins + 1)
        compare_with_literal_rms90(counts, edges)
    # the cumulative count hits exactly 10 % (90 %) of the total at a bin
    compare_with_literal_rms90(np.array([1.0, 0, 0, 3, 3, 3]), np.arange(7.0))
    compare_with_literal_rms90(np.array([0, 0, 2.0, 9, 7, 1, 1]), np.arange(8.0))
    compare_with_literal_rms90(np.array([5.0]), np.arange(2.0))


def compare_with_literal_rms90(counts, edges):
    got = rms90_window(counts, edges)
    want = literal_rms90(list(counts), edges)
    assert got[:2] == want[:2], counts
    assert got[2] == pytest.approx(want[2], rel=1e-9, abs=1e-9)
    assert got[3] == pytest.approx(want[3], rel=1e-7, abs=1e-9)


def test_gaussian_fit_mean_and_error_are_calibrated_on_pure_gaussians():
    pulls = []
    for seed in range(100):
        values = np.random.default_rng(seed).normal(10.0, 0.5, 5000)
        fit = gaussian_fit_mean(*digitisation_histogram(values, 10.0, 0.02))
        assert fit.ok, fit.reason
        assert fit.windowLow <= fit.mean <= fit.windowHigh
        assert fit.sigma == pytest.approx(0.5, rel=0.1)
        pulls.append((fit.mean - 10.0) / fit.meanError)
    assert abs(np.mean(pulls)) < 0.3  # 3 standard errors of the mean pull
    assert 0.8 < np.std(pulls) < 1.2


def test_gaussian_fit_ignores_a_low_side_tail_that_biases_the_plain_mean():
    fits, plain, errors = [], [], []
    for seed in range(20):
        values = photon_energies(np.random.default_rng(100 + seed), 5000, "separated")
        fit = gaussian_fit_mean(*digitisation_histogram(values, 10.0, 0.02))
        assert fit.ok, fit.reason
        fits.append(fit.mean)
        errors.append(fit.meanError)
        plain.append(values.mean())
    error = float(np.mean(errors))
    # the systematic shift of the fit (averaged over 20 samples) is below 2 errors of one sample ...
    assert abs(np.mean(fits) - 10.0) < 2 * error
    # ... while the plain mean of every single sample is more than 10 errors low
    assert np.all(np.array(plain) < 10.0 - 10 * error)


def test_gaussian_fit_removes_most_of_a_crack_tail_bias():
    values = photon_energies(np.random.default_rng(5), 20000, "crack")
    fit = gaussian_fit_mean(*digitisation_histogram(values, 10.0, 0.02))
    assert fit.ok, fit.reason
    plainBias = values.mean() - 10.0
    assert plainBias < -0.15
    assert abs(fit.mean - 10.0) < 0.2 * abs(plainBias)


def test_fit_window_starting_at_the_first_bin_opens_at_its_lower_edge():
    values = np.random.default_rng(4).normal(0.5, 1.0, 20000)
    counts, edges = np.histogram(values, bins=50, range=(0.0, 5.0))
    fit = gaussian_fit_mean(counts, edges)
    assert rms90_window(counts, edges)[0] == 0
    assert fit.ok and fit.windowLow == 0.0
    assert fit.mean == pytest.approx(0.5, abs=0.05)


def test_gaussian_fit_reports_unfittable_histograms():
    edges = np.linspace(0, 20, 41)
    empty = gaussian_fit_mean(np.zeros(40), edges)
    assert not empty.ok and "empty" in empty.reason and math.isnan(empty.mean)
    few = np.zeros(40)
    few[20] = 4
    assert "fewer than 5" in gaussian_fit_mean(few, edges).reason
    twoBins = np.zeros(40)
    twoBins[20:22] = [30, 10]
    result = gaussian_fit_mean(twoBins, edges)
    assert not result.ok and "non-empty bin" in result.reason and result.entries == 40
    # a Gaussian peaking below the histogram range: the fit finds the peak, outside the window
    edges = np.linspace(0.0, 4.0, 81)
    tail = 1e5 * np.diff(stats.norm.cdf(edges, loc=-0.5))
    outside = gaussian_fit_mean(tail, edges)
    assert not outside.ok and "outside the fit window" in outside.reason
    assert outside.mean == pytest.approx(-0.5, abs=0.05) and outside.windowLow == 0.0


# --------------------------------------------------------------------------------------------
# MIP peaks and means
# --------------------------------------------------------------------------------------------

def landau_mode():
    return minimize_scalar(lambda x: -stats.landau.pdf(x), bracket=(-1.0, -0.3, 1.0), tol=1e-10).x


@pytest.mark.parametrize("distribution", ["moyal", "landau"])
def test_mip_peaks_find_the_most_probable_value(distribution):
    dist, mode = (stats.moyal, 0.0) if distribution == "moyal" else (stats.landau, landau_mode())
    rng = np.random.default_rng(3)
    # digitised ECAL hits: MPV 5.7 MeV, width 0.34 MeV, PfoAnalysis binning 500 bins on [0, 0.1] GeV
    hits = 5.7e-3 + 0.34e-3 * (dist.rvs(size=50_000, random_state=rng) - mode)
    counts, edges = np.histogram(hits, bins=500, range=(0.0, 0.1))
    assert abs(mip_peak(counts, edges) - 5.7e-3) <= 0.2e-3
    assert 1 / mip_peak(counts, edges) == pytest.approx(175.439, rel=1e-4)
    # HCAL sim hits: MPV 0.48 MeV, width 26 keV, 200 bins on [0, 1 MeV], plus a threshold spike
    hits = 0.48e-3 + 26e-6 * (dist.rvs(size=1_000_000, random_state=rng) - mode)
    counts, edges = np.histogram(hits, bins=200, range=(0.0, 1e-3))
    assert abs(simcalohit_peak(counts, edges) - 0.48e-3) <= 5e-6
    counts[1] += 10 * counts.max()
    assert abs(simcalohit_peak(counts, edges) - 0.48e-3) <= 5e-6
    assert mip_peak(counts, edges) == pytest.approx(7.5e-6)  # the global maximum is the spike


def test_simcalohit_peak_matches_the_literal_loop():
    rng = np.random.default_rng(21)
    edges = np.linspace(0, 1, 61)
    for _ in range(200):
        counts = rng.integers(0, 6, 60).astype(float)
        want = literal_peak(counts)
        got = simcalohit_peak(counts, edges)
        if want is None:
            assert math.isnan(got)
        else:
            assert got == pytest.approx(0.5 * (edges[want] + edges[want + 1]))
    # the original loop stops one bin early: a peak at nBins - 11 never counts
    counts = np.zeros(60)
    counts[60 - 11] = 5
    assert literal_peak(counts) is None and math.isnan(simcalohit_peak(counts, edges))
    counts[60 - 12] = 3
    assert simcalohit_peak(counts, edges) == pytest.approx(0.5 * (edges[48] + edges[49]))


def test_peak_finders_and_mean_return_nan_without_a_peak():
    edges = np.linspace(0, 1, 31)
    assert math.isnan(mip_peak(np.zeros(30), edges))
    assert math.isnan(simcalohit_peak(np.zeros(30), edges))
    assert math.isnan(simcalohit_peak(np.arange(30.0), edges))  # monotonic: no local maximum
    assert math.isnan(histogram_mean(np.zeros(30), edges))


def test_histogram_mean_of_direction_factors():
    values = np.random.default_rng(8).beta(5.0, 2.0, 100_000)
    counts, edges = np.histogram(values, bins=200, range=(0.0, 1.0))
    assert histogram_mean(counts, edges) == pytest.approx(5.0 / 7.0, abs=4 * values.std() / math.sqrt(values.size))
    assert histogram_mean(counts, edges) == pytest.approx(values.mean(), abs=1e-4)


# --------------------------------------------------------------------------------------------
# Chi-square method
# --------------------------------------------------------------------------------------------

def cells_of(eEcal, eHcal, beam=BEAM):
    """The events binned as a worker bins them: the hadronic-scale phase's own reduction of a
    tree whose every event passes the worker-side selection."""
    n = len(eEcal)
    ctx = PhaseContext(energies={"kaon": beam}, digitisationAccuracy=0.02, pandoraPFAAccuracy=0.005,
                       ecalBarrelCosThetaRange=(0, 0.6), ecalEndcapCosThetaRange=(0.8, 0.9),
                       hcalBarrelCosThetaRange=(0, 0.6), hcalEndcapCosThetaRange=(0.8, 0.9), nHcalLayers=44,
                       nEcalThinLayers=40, nEcalThickLayers=0, ecalResponseCorrectionForThickLayers=1.0,
                       hcalThicknessRatio=1.0)
    tree = {name: np.ones(n) for name in ("nPfoTargetsTotal", "nPfoTargetsNeutralHadrons", "nPfosTotal", "nPfosNeutralHadrons")}
    tree.update(pfoMinHCalLayerToEdge=np.full(n, 10), pfoECalToHadEnergy=np.asarray(eEcal), pfoHCalToHadEnergy=np.asarray(eHcal))
    return kaon_cells(phase_for("1.4").reduce({"kaon": tree}, ctx))


def scaled(eEcal, eHcal, a, b):
    """The same events reconstructed with ECalToHad and HCalToHad multiplied by a and b (split by
    the ECAL share, which does not change)."""
    share = eEcal / (eEcal + eHcal)
    factor = a * share + b * (1 - share)
    return eEcal * factor, eHcal * factor


def test_csm_grid_is_the_original_grid():
    grid = csm_intercept_grid(KINETIC, BEAM, 0.025)
    assert grid.size == 40
    assert grid[0] == pytest.approx(0.5 * KINETIC)
    np.testing.assert_allclose(np.diff(grid), 1.25)
    assert csm_intercept_grid(KINETIC, BEAM, 0.005).size == 200


def test_csm_chi2_from_binned_sums_matches_the_original_formula():
    """Binned in (E, f) the chi2 keeps the per-event formula up to a few 1e-5 near the minimum:
    exact in the numerator, the denominator at each f bin's mean share."""
    eEcal, eHcal = kaon_events(np.random.default_rng(2), 300, 1.05, 0.95)
    cells = cells_of(eEcal, eHcal)
    moments = csm_moments(cells, np.ones(cells.counts.size))
    for iE, iH in [(KINETIC, KINETIC), (0.95 * KINETIC, 1.03 * KINETIC), (0.9 * KINETIC, 1.1 * KINETIC)]:
        literal = literal_csm_chi2(eEcal, eHcal, iE, iH)
        assert float(csm_chi2(moments, 1 / iE, 1 / iH)) == pytest.approx(literal, rel=2e-4)


def test_csm_of_pure_ecal_and_pure_hcal_events_gives_harmonic_means():
    """With every event in one calorimeter chi2 separates into sum (E - I)^2 / (c^2 E) per axis:
    a parabola in I with its minimum at the harmonic mean of E, the grid optimum at the grid point
    nearest to it (10k events, the 200 x 200 grid of 0.5 % accuracy). The offline replay scales
    each calorimeter's events by its own constant, to where the harmonic mean of the band's
    events is the target."""
    rng = np.random.default_rng(4)
    ecalOnly = rng.normal(47.0, 0.55 * math.sqrt(47.0), 4000)
    hcalOnly = rng.normal(52.0, 0.55 * math.sqrt(52.0), 6000)
    eEcal = np.concatenate((ecalOnly, np.zeros(6000)))
    eHcal = np.concatenate((np.zeros(4000), hcalOnly))
    cells = cells_of(eEcal, eHcal)
    band = percsm.csm_band_selection(eEcal, eHcal, KINETIC)
    harmonicEcal = band[:4000].sum() / np.sum(1 / ecalOnly[band[:4000]])
    harmonicHcal = band[4000:].sum() / np.sum(1 / hcalOnly[band[4000:]])
    grid = csm_intercept_grid(KINETIC, BEAM, 0.005)
    result = chi_square_hadronic_scale(cells, KINETIC, 0.005, beamEnergy=BEAM)
    assert result.ok and result.nEvents == pytest.approx(band.sum(), abs=3)
    assert result.interceptEcal == pytest.approx(grid[np.argmin(np.abs(grid - harmonicEcal))])
    assert result.interceptHcal == pytest.approx(grid[np.argmin(np.abs(grid - harmonicHcal))])
    a, b = csm_fixed_point(cells, KINETIC, 1.0, 1.0)
    lower, upper = csm_band(KINETIC)
    for events, scale in ((ecalOnly, a), (hcalOnly, b)):
        inBand = events * scale
        inBand = inBand[(inBand >= lower) & (inBand <= upper)]
        assert inBand.size / np.sum(1 / inBand) == pytest.approx(KINETIC, rel=2e-4)


@pytest.mark.parametrize("start, events", [((1.0, 1.0), 20000), ((1.12, 0.93), 20000), ((0.9, 1.1), 20000),
                                           ((1.12, 0.93), 800)])
def test_binned_csm_reproduces_todays_per_event_computation(start, events):
    """The grid optimum is the per-event one and the offline replay's fixed point agrees with the
    per-event replay to a few 1e-5 (its own precision is 1e-4): 0.5 % of a 0.5 % accuracy, also
    for a small sample, where single events at the band's edge matter."""
    base = kaon_events(np.random.default_rng(9), events, 1.04, 0.97)  # as reconstructed with (1, 1)
    eEcal, eHcal = scaled(*base, *start)
    cells = cells_of(eEcal, eHcal)
    keep = percsm.csm_band_selection(eEcal, eHcal, KINETIC)
    for accuracy in (0.025, 0.005):
        reference = percsm.chi_square_hadronic_scale(eEcal[keep], eHcal[keep], KINETIC, accuracy, beamEnergy=BEAM)
        binned = chi_square_hadronic_scale(cells, KINETIC, accuracy, beamEnergy=BEAM)
        assert (binned.interceptEcal, binned.interceptHcal) == pytest.approx((reference.interceptEcal, reference.interceptHcal))
        assert binned.interceptEcalError == pytest.approx(reference.interceptEcalError, rel=0.05)
        assert binned.interceptHcalError == pytest.approx(reference.interceptHcalError, rel=0.05)
    # (the per-event replay's grid only starts its continuous fits: a coarse one is as good)
    replayed = percsm.replay_fixed_point(eEcal, eHcal, KINETIC, 0.05, BEAM, *start)
    solved = csm_fixed_point(cells, KINETIC, *start)
    assert solved == pytest.approx(replayed, rel=2.5e-4)
    # the replay's promise: the same events reconstructed with the solution find the target
    eEcal, eHcal = scaled(*base, *solved)
    keep = percsm.csm_band_selection(eEcal, eHcal, KINETIC)
    confirmed = percsm.chi_square_hadronic_scale(eEcal[keep], eHcal[keep], KINETIC, 0.05, beamEnergy=BEAM, grid=False)
    assert (confirmed.interceptEcal, confirmed.interceptHcal) == pytest.approx((KINETIC, KINETIC), rel=2e-4)


def test_csm_errors_follow_the_sample_to_sample_scatter():
    """The toy's resolution (0.8 sqrt(E)) is worse than the estimator's 0.55: the chi2/ndf scaling
    must carry the errors to the real scatter."""
    estimates, errors = [], []
    for seed in range(60):
        eEcal, eHcal = kaon_events(np.random.default_rng(1000 + seed), 1000, 1.0, 1.0, resolution=0.8)
        result = chi_square_hadronic_scale(cells_of(eEcal, eHcal), KINETIC, 0.005, beamEnergy=BEAM)
        estimates.append((result.interceptEcal, result.interceptHcal))
        errors.append((result.interceptEcalError, result.interceptHcalError))
    ratio = np.std(estimates, axis=0, ddof=1) / np.mean(errors, axis=0)
    assert np.all((ratio > 0.7) & (ratio < 1.3)), ratio


def test_csm_band_is_the_three_sigma_perpendicular_band():
    rng = np.random.default_rng(6)
    eEcal, eHcal = kaon_events(rng, 50_000, 1.0, 1.0)
    # independent geometry: distance of (E_H, E_E) from the line through (T, 0) and (0, T)
    points = np.column_stack((eHcal, eEcal))
    normal = np.array([1.0, 1.0]) / math.sqrt(2)
    distance = np.abs((points - [KINETIC, 0.0]) @ normal)
    sigma = 0.55 * np.sqrt((eHcal + eEcal) / 2)
    lower, upper = csm_band(KINETIC)
    total = eEcal + eHcal
    inside = distance <= 3 * sigma
    np.testing.assert_array_equal((total >= lower) & (total <= upper), inside)
    # cells count with the fraction of their energy range inside the band
    cells = cells_of(eEcal, eHcal)
    fraction = csm_band_fraction(cells, KINETIC)
    assert np.all((fraction >= 0) & (fraction <= 1))
    assert np.all(fraction[(cells.low >= lower) & (cells.high <= upper)] == 1)
    assert np.all(fraction[(cells.high <= lower) | (cells.low >= upper)] == 0)
    assert np.dot(fraction, cells.counts) == pytest.approx(inside.sum(), abs=5)
    # scaled energies move the cells through the band
    assert np.all(csm_band_fraction(cells, KINETIC, 0.1) == 0)


def test_csm_reports_too_few_events():
    result = chi_square_hadronic_scale(cells_of([10.0, 20.0], [30.0, 25.0]), KINETIC, 0.025, beamEnergy=BEAM)
    assert not result.ok and "at least 3 events" in result.reason
    assert csm_fixed_point(cells_of([10.0, 20.0], [30.0, 25.0]), KINETIC, 1.0, 1.0) is None


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

EDGES = np.linspace(0, 1, 11)


@pytest.mark.parametrize("call, message", [
    (lambda: rms90_window(np.ones(10), np.linspace(0, 1, 10)), "len\\(counts\\) \\+ 1"),
    (lambda: rms90_window(np.ones((2, 5)), EDGES), "1-dimensional"),
    (lambda: rms90_window(np.zeros(10), EDGES), "empty"),
    (lambda: gaussian_fit_mean(np.r_[np.ones(9), np.nan], EDGES), "non-finite"),
    (lambda: gaussian_fit_mean(np.r_[np.ones(9), -1.0], EDGES), "non-negative"),
    (lambda: gaussian_fit_mean(np.ones(10), EDGES[::-1]), "strictly increasing"),
    (lambda: mip_peak(["a"] * 10, EDGES), "numeric"),
    (lambda: simcalohit_peak(np.ones(10), EDGES, distance=0), "positive integer"),
    (lambda: digitisation_histogram([1.0, np.inf], 10.0, 0.05), "non-finite"),
    (lambda: digitisation_histogram([1.0], -10.0, 0.05), "beamEnergy"),
    (lambda: rebin_to_accuracy(np.ones(10), EDGES, 10.0, 1.5), "accuracy"),
    (lambda: KaonCells.from_sums(np.ones((4, 3)), np.ones((4, 2)), np.ones((4, 3)), np.arange(3.0)), "same shape"),
    (lambda: KaonCells.from_sums(np.ones((4, 3)), np.ones((4, 3)), np.ones((4, 3)), np.arange(4.0)), "edges"),
    (lambda: KaonCells.from_sums(-np.ones((4, 3)), np.ones((4, 3)), np.ones((4, 3)), np.arange(3.0)), "non-negative"),
    (lambda: KaonCells.from_sums(np.ones(4), np.ones(4), np.ones(4), np.arange(3.0)), "2-dimensional"),
    (lambda: KaonCells.from_sums(np.full((4, 3), np.nan), np.ones((4, 3)), np.ones((4, 3)), np.arange(3.0)), "non-finite"),
    (lambda: chi_square_hadronic_scale(cells_of([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), -1.0, 0.025, beamEnergy=BEAM), "targetEnergy"),
    (lambda: csm_band("fifty"), "targetEnergy must be a number"),
    (lambda: csm_band(KINETIC, resolution=0.0), "resolution"),
    (lambda: csm_fixed_point(cells_of([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), KINETIC, 0.0, 1.0), "ecalToHad"),
])
def test_bad_input_raises_a_specific_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
