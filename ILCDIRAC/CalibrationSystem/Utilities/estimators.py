"""Estimators of the PandoraPFA calibration, in numpy/scipy.

Each function re-implements what one LCPandoraAnalysis calibration executable does to its merged
histogram or event list (docs/calibration_physics.md, sections 2.1-2.3), so the service can run
the original estimator on the sum of the workers' reports without ROOT:

- ``digitisation_histogram`` / ``rebin_to_accuracy``: the original binning rule
  ``nbins = int(max / (accuracy * E))`` on ``[0, max]`` (quirk 2: the bin width is tied to the
  tolerance), from raw values or from the fine fixed binning the workers send.
- ``rms90_window`` + ``gaussian_fit_mean``: the Gaussian fit inside the minimum-RMS window that
  holds 90 % of the entries (ECAL/HCAL digitisation, EM scale).
- ``mip_peak``, ``simcalohit_peak``, ``histogram_mean``: the MIP-scale and HCAL-ring inputs.
- ``csm_band_selection`` + ``chi_square_hadronic_scale``: the chi-square method of the hadronic
  scale (ECalToHad, HCalToHad) from per-event (E_ECAL, E_HCAL) pairs.
- ``spread_error``, ``jackknife_error``: statistical uncertainty of a merged estimate from the
  per-worker reports (stored with every constant; statistical stopping, section 5).

Histograms are ``(counts, edges)`` pairs of in-range bins, as ``Summary.values`` returns them.
Bad input raises ``ValueError`` naming the problem; a histogram that is valid but cannot be
measured (empty, too few bins, no peak) gives ``ok=False`` with a reason, or NaN for the
float-valued peak finders, because that is a physics outcome the phase has to report.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit, least_squares

#: Fraction of the entries the rms90 window must hold (``m_fitPercentage = 90``).
RMS90_FRACTION = 0.9
#: The original skips histograms with fewer entries than this.
MIN_FIT_ENTRIES = 5


@dataclass(frozen=True)
class FitResult:
    """Outcome of the rms90 + Gaussian fit of one histogram.

    ``mean`` is the fitted Gaussian mean and ``meanError`` its error from the fit covariance
    (bin errors sqrt(n), not rescaled by chi2/ndf, as ROOT's default chi-square fit);
    ``sigma`` = ``p2 ** -0.5``; ``[windowLow, windowHigh]`` is the fit range; ``entries`` the
    histogram's total content.  ``ok`` is False (with ``reason``) when the fit cannot be trusted.
    """

    mean: float
    meanError: float
    sigma: float
    windowLow: float
    windowHigh: float
    entries: float
    ok: bool
    reason: str = ""


def as_finite_array(name: str, values, ndim: int = 1) -> np.ndarray:
    """``values`` as a float array of dimension ``ndim``; ValueError naming ``name`` otherwise."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s), first at index {int(np.argmax(bad))}")
    return array


def check_histogram(counts, edges) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(counts, edges)``: 1D, finite, counts >= 0, len(edges) == len(counts) + 1,
    edges strictly increasing."""
    counts = as_finite_array("counts", counts)
    edges = as_finite_array("edges", edges)
    if counts.size == 0:
        raise ValueError("counts has no bins")
    if edges.size != counts.size + 1:
        raise ValueError(f"edges must have len(counts) + 1 = {counts.size + 1} entries, got {edges.size}")
    if np.any(counts < 0):
        raise ValueError(f"counts must be non-negative, found {counts.min()!r}")
    if np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be strictly increasing")
    return counts, edges


def check_accuracy(beamEnergy: float, accuracy: float) -> tuple[float, float]:
    beamEnergy, accuracy = float(beamEnergy), float(accuracy)
    if not (math.isfinite(beamEnergy) and beamEnergy > 0):
        raise ValueError(f"beamEnergy must be a positive finite number, got {beamEnergy!r}")
    if not (math.isfinite(accuracy) and 0 < accuracy < 1):
        raise ValueError(f"accuracy must be in (0, 1), got {accuracy!r}")
    return beamEnergy, accuracy


def centres(edges: np.ndarray) -> np.ndarray:
    return 0.5 * (edges[:-1] + edges[1:])


# --------------------------------------------------------------------------------------------
# Binning
# --------------------------------------------------------------------------------------------

def accuracy_bins(upper: float, beamEnergy: float, accuracy: float) -> int:
    """The original rule ``int(max / (accuracy * E))``; ROOT turns 0 bins into 1."""
    return max(1, int(upper / (accuracy * beamEnergy)))


def digitisation_histogram(values, beamEnergy: float, accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin raw per-event energies exactly as the digitisation / EM-scale executables do.

    ``nbins = int(max / (accuracy * E))`` bins on ``[0, max]`` with ``max`` the largest value and
    ``E`` the particle (beam) energy; for K0L the original also uses the full energy E, not the
    kinetic energy.  Like ROOT, values equal to ``max`` fall in the overflow bin and are not
    counted, nor are negative values.  An empty or all-zero sample gives one empty bin of width
    ``accuracy * E``.  (The original computes ``nbins`` in single precision; this uses double,
    which differs only when ``max / (accuracy * E)`` is within float rounding of an integer.)
    """
    values = as_finite_array("values", values)
    beamEnergy, accuracy = check_accuracy(beamEnergy, accuracy)
    upper = float(values.max()) if values.size else 0.0
    if upper <= 0:
        return np.zeros(1), np.array([0.0, accuracy * beamEnergy])
    edges = np.linspace(0.0, upper, accuracy_bins(upper, beamEnergy, accuracy) + 1)
    inRange = values[(values >= 0) & (values < upper)]
    counts, _ = np.histogram(inRange, bins=edges)
    return counts.astype(float), edges


def rebin_to_accuracy(counts, edges, beamEnergy: float, accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    """Rebin a fine histogram (what workers send, e.g. E/1000 bins on [0, 3E]) to the original
    binning rule, so merged worker histograms reproduce ``digitisation_histogram`` of the raw values.

    The upper edge is the upper edge of the last non-empty fine bin (it stands in for the largest
    value); the coarse bins are ``accuracy_bins(upper)`` equal bins on ``[0, upper]``.  Fine-bin
    contents are shared between coarse bins in proportion to their overlap (the cumulative count
    is interpolated linearly at the coarse edges), which avoids the comb pattern that whole-bin
    assignment would cause when a coarse bin is only a few fine bins wide.

    How close this is to binning the raw values: (1) ``upper`` exceeds the true maximum by less
    than one fine bin, so the coarse bin width differs by less than ``fineWidth / nbins``, and
    ``nbins`` can be larger by one when ``max / (accuracy * E)`` lies within one fine bin of an
    integer; (2) each coarse bin's content can differ from the exact one only by the part of the
    two fine bins straddling its edges that is on the wrong side (uniform density assumed inside a
    fine bin: exact on average for smooth spectra); (3) the event at the maximum is counted here,
    while the raw rule drops it into ROOT's overflow.  Fine-bin content outside the fine range
    (overflow) is lost, so the fine range must cover the spectrum.  With E/1000 fine bins the
    fitted Gaussian mean agrees with the raw-value result to typically 0.1-2 % of a coarse bin;
    at accuracy 0.005 (coarse bins only 5 fine bins wide) the rms90 window occasionally shifts
    by one bin and the two differ by up to ~0.2 bin (unit tests, 5000-event samples).
    Contents may become fractional.
    """
    counts, edges = check_histogram(counts, edges)
    beamEnergy, accuracy = check_accuracy(beamEnergy, accuracy)
    nonEmpty = np.flatnonzero(counts > 0)
    if nonEmpty.size == 0 or edges[nonEmpty[-1] + 1] <= 0:
        return np.zeros(1), np.array([0.0, accuracy * beamEnergy])
    upper = float(edges[nonEmpty[-1] + 1])
    coarseEdges = np.linspace(0.0, upper, accuracy_bins(upper, beamEnergy, accuracy) + 1)
    cumulative = np.concatenate(([0.0], np.cumsum(counts)))
    coarseCumulative = np.interp(coarseEdges, edges, cumulative)
    return np.clip(np.diff(coarseCumulative), 0.0, None), coarseEdges


# --------------------------------------------------------------------------------------------
# rms90 window and Gaussian fit
# --------------------------------------------------------------------------------------------

def rms90_window(counts, edges, fraction: float = RMS90_FRACTION) -> tuple[int, int, float, float]:
    """The minimum-RMS window of consecutive bins holding at least ``fraction`` of the entries.

    Faithful to the original ``RMSFitPercentageRange``: the start bin ``i0`` runs from the first bin
    up to ``i0max``, the first bin where the cumulative count reaches ``(1 - fraction) * total``
    (a window holding 90 % must start within the first 10 %); each window is extended bin by bin
    until it holds ``>= fraction * total``; mean and RMS are weighted by the counts on the bin
    centres; the first window with the smallest RMS wins.  All windows are evaluated at once
    from cumulative sums.

    Returns ``(lowIndex, highIndex, mean, rms)``: the inclusive bin-index range of the window and
    its weighted mean and RMS.  ValueError for an empty histogram.
    """
    counts, edges = check_histogram(counts, edges)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    total = counts.sum()
    if total <= 0:
        raise ValueError("histogram is empty: no rms90 window")
    x = centres(edges)
    reference = float(np.dot(counts, x) / total)
    dx = x - reference
    zero = np.zeros(1)
    cum0 = np.concatenate((zero, np.cumsum(counts)))
    cum1 = np.concatenate((zero, np.cumsum(counts * dx)))
    cum2 = np.concatenate((zero, np.cumsum(counts * dx * dx)))
    # same threshold arithmetic as the original: total * (1 - 0.9) and 0.9 * total
    lastStart = min(int(np.searchsorted(cum0[1:], total * (1.0 - fraction), side="left")), counts.size - 1)
    starts = np.arange(lastStart + 1)
    ends = np.searchsorted(cum0[1:], cum0[starts] + fraction * total, side="left")
    ends = np.minimum(ends, counts.size - 1)
    s0 = cum0[ends + 1] - cum0[starts]
    s1 = cum1[ends + 1] - cum1[starts]
    s2 = cum2[ends + 1] - cum2[starts]
    localMean = s1 / s0
    rms = np.sqrt(np.clip(s2 / s0 - localMean * localMean, 0.0, None))
    best = int(np.argmin(rms))
    return int(starts[best]), int(ends[best]), float(reference + localMean[best]), float(rms[best])


def _gaussian(u: np.ndarray, amplitude: float, mu: float, p2: float) -> np.ndarray:
    return amplitude * np.exp(-0.5 * p2 * (u - mu) ** 2)


def _gaussian_jacobian(u: np.ndarray, amplitude: float, mu: float, p2: float) -> np.ndarray:
    shape = np.exp(-0.5 * p2 * (u - mu) ** 2)
    return np.column_stack((shape, amplitude * shape * p2 * (u - mu), -0.5 * amplitude * shape * (u - mu) ** 2))


def gaussian_fit_mean(counts, edges, *, fraction: float = RMS90_FRACTION,
                      minEntries: float = MIN_FIT_ENTRIES) -> FitResult:
    """Gaussian fit of the peak inside the rms90 window: the digitisation / EM-scale estimator.

    Fits ``A * exp(-0.5 * p2 * (x - mu)**2)`` by least squares to the non-empty bins whose centres
    lie in the window ``[centre(i0) (the first edge if i0 is the first bin), centre(i_end)]``,
    with bin errors ``sqrt(n)`` (``sqrt(max(n, 1))`` so fractional contents from rebinning cannot
    dominate; identical for integer counts).  Start values are the maximum bin content, the window
    mean and ``1 / rms**2`` of the window (the original's start values are broken and it retries
    with random ones; a well-defined minimum does not depend on where the fit starts).  The fit
    runs in coordinates standardised by the window mean and RMS, so any energy scale works.

    ``ok`` only if the fit converged, ``p2 > 0``, the covariance is finite and ``mu`` lies inside
    the window (the original's acceptance test).  Empty histograms, fewer than ``minEntries``
    entries (the original skips those) and fewer than three non-empty bins in the window give
    ``ok=False`` with the reason instead of an exception.
    """
    counts, edges = check_histogram(counts, edges)
    total = float(counts.sum())
    nan = math.nan

    def failed(reason: str, low: float = nan, high: float = nan, mean: float = nan) -> FitResult:
        return FitResult(mean, nan, nan, low, high, total, False, reason)

    if total <= 0:
        return failed("histogram is empty")
    if total < minEntries:
        return failed(f"histogram has {total:g} entries, fewer than {minEntries:g}")
    lowIndex, highIndex, windowMean, windowRms = rms90_window(counts, edges, fraction)
    x = centres(edges)
    low = float(edges[0]) if lowIndex == 0 else float(x[lowIndex])
    high = float(x[highIndex])
    inWindow = np.zeros(counts.size, dtype=bool)
    inWindow[lowIndex:highIndex + 1] = True
    use = inWindow & (counts > 0)
    if use.sum() < 3:
        return failed(f"only {int(use.sum())} non-empty bin(s) in the rms90 window [{low:g}, {high:g}], "
                      "a Gaussian fit needs 3", low, high)
    # three non-empty bins in the window imply windowRms > 0
    scale = windowRms
    u = (x[use] - windowMean) / scale
    n = counts[use]
    start = (float(counts[inWindow].max()), 0.0, 1.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            params, cov = curve_fit(_gaussian, u, n, p0=start, sigma=np.sqrt(np.maximum(n, 1.0)),
                                    absolute_sigma=True, jac=_gaussian_jacobian, maxfev=2000)
    except (RuntimeError, OptimizeWarning, ValueError) as exc:
        return failed(f"Gaussian fit did not converge: {exc}", low, high)
    amplitude, muU, p2U = (float(p) for p in params)
    mean = windowMean + scale * muU
    if not (p2U > 0 and np.all(np.isfinite(cov))):
        return failed(f"Gaussian fit is not a peak (p2 = {p2U / scale ** 2:g}) or has no valid covariance",
                      low, high, mean)
    if not low <= mean <= high:
        return failed(f"fitted mean {mean:g} outside the fit window [{low:g}, {high:g}]", low, high, mean)
    return FitResult(mean=mean, meanError=scale * math.sqrt(float(cov[1, 1])), sigma=scale / math.sqrt(p2U),
                     windowLow=low, windowHigh=high, entries=total, ok=True)


# --------------------------------------------------------------------------------------------
# MIP scale and HCAL ring inputs
# --------------------------------------------------------------------------------------------

def mip_peak(counts, edges) -> float:
    """Centre of the (first) maximum bin, as ``GetMaximumBin`` in ``PandoraPFACalibrate_MipResponse``;
    the MIP scale is ``1 / peak``, quantised by the bin width.  NaN for an empty histogram."""
    counts, edges = check_histogram(counts, edges)
    if counts.max() <= 0:
        return math.nan
    return float(centres(edges)[int(np.argmax(counts))])


def simcalohit_peak(counts, edges, distance: int = 10) -> float:
    """Local-maximum finder of ``SimCaloHitEnergyDistribution``: among the bins whose content is
    strictly above both the bin ``distance`` below and the bin ``distance`` above, the centre of
    the highest (the first of equal ones).  As in the original loop (ROOT bins
    ``distance + 1 <= i < nBins - distance``), candidate bins are indices ``distance`` to
    ``nBins - distance - 2`` (0-based), so the last ``distance + 1`` bins never qualify.
    NaN when no bin qualifies (the original then returns the underflow-bin centre)."""
    counts, edges = check_histogram(counts, edges)
    if int(distance) != distance or distance < 1:
        raise ValueError(f"distance must be a positive integer, got {distance!r}")
    distance = int(distance)
    candidates = np.arange(distance, counts.size - distance - 1)
    if candidates.size == 0:
        return math.nan
    current = counts[candidates]
    isPeak = (current > counts[candidates - distance]) & (current > counts[candidates + distance]) & (current > 0)
    if not isPeak.any():
        return math.nan
    best = candidates[isPeak][int(np.argmax(current[isPeak]))]
    return float(centres(edges)[best])


def histogram_mean(counts, edges) -> float:
    """Count-weighted mean of the bin centres (direction-correction means).  ROOT's ``GetMean``
    uses the filled values themselves; the bin-centre mean differs by much less than half a bin
    for smooth distributions (200 bins on [0, 1] in the original).  NaN for an empty histogram."""
    counts, edges = check_histogram(counts, edges)
    total = counts.sum()
    if total <= 0:
        return math.nan
    return float(np.dot(counts, centres(edges)) / total)


# --------------------------------------------------------------------------------------------
# Statistical uncertainty from the workers
# --------------------------------------------------------------------------------------------

def spread_error(perWorkerValues, weights=None) -> float:
    """Standard error of the merged estimate from the spread of the per-worker estimates.

    The merged estimate behaves like the weighted mean ``m = sum(w v) / sum(w)`` of the worker
    estimates ``v`` (weights: events or entries per worker; equal if None).  Its variance is
    estimated without bias, for independent workers whose variances scale as ``1 / w``, by
    ``sum(w**2 (v - m)**2) / ((sum w)**2 - sum(w**2))``; with equal weights this is the usual
    ``std(v, ddof=1) / sqrt(K)``.  Needs at least two workers with positive weight.
    """
    values = as_finite_array("perWorkerValues", perWorkerValues)
    if weights is None:
        w = np.ones_like(values)
    else:
        w = as_finite_array("weights", weights)
        if w.shape != values.shape:
            raise ValueError(f"weights has shape {w.shape}, perWorkerValues has {values.shape}")
        if np.any(w < 0):
            raise ValueError("weights must be non-negative")
    if np.count_nonzero(w) < 2:
        raise ValueError(f"spread_error needs at least two workers with positive weight, got {np.count_nonzero(w)}")
    sumW = w.sum()
    mean = np.dot(w, values) / sumW
    effective = sumW * sumW - np.dot(w, w)
    return float(math.sqrt(np.dot(w * w, (values - mean) ** 2) / effective))


def jackknife_error(leaveOneOutValues) -> float:
    """Jackknife standard error from the K estimates obtained by leaving out one worker at a time
    (e.g. the estimator re-run on the merged histogram minus one worker's):
    ``sqrt((K - 1) / K * sum((t_i - mean(t))**2))``.  Prefer it to ``spread_error`` for non-linear
    estimators (fits) when one worker alone has too few events to be fitted."""
    values = as_finite_array("leaveOneOutValues", leaveOneOutValues)
    if values.size < 2:
        raise ValueError(f"jackknife_error needs at least two leave-one-out estimates, got {values.size}")
    k = values.size
    return float(math.sqrt((k - 1) / k * np.sum((values - values.mean()) ** 2)))


# --------------------------------------------------------------------------------------------
# Chi-square method (CSM) of the hadronic scale: ECalToHad and HCalToHad from K0L events
# --------------------------------------------------------------------------------------------
# Re-implements ``PandoraPFACalibrate_HadronicScale_ChiSquareMethod`` (docs/calibration_physics.md,
# section 2.1 "1.4" and 2.2).  Each selected event is a point (E_H, E_E) = (pfoHCalToHadEnergy,
# pfoECalToHadEnergy).  A calibrated detector puts the points on the line E_H/I_H + E_E/I_E = 1 with
# both intercepts I_H = I_E = T (the K0L kinetic energy).  The estimator finds the intercepts that
# minimise ``chi2 = sum (d / sigma_d)**2`` with d the perpendicular distance of a point from the line
# and sigma_d its error from a stochastic resolution ``0.55 * sqrt(E)`` on each axis.  Writing
# u = 1/I_E, v = 1/I_H, one event contributes
#
#     (d / sigma_d)**2 = (E_E u + E_H v - 1)**2 / (c**2 (E_E u**2 + E_H v**2)),    c = 0.55,
#
# which is the original's formula with the common factor sqrt(I_H**2 + I_E**2) cancelled.
#
# The original scans the grid I = 0.5 T + E * accuracy * k, k = 0 .. int(1/accuracy) - 1 on both
# axes (E the beam energy).  ``chi_square_hadronic_scale(grid=True)`` evaluates the whole grid with
# broadcasting, chunked over events to bound memory; ``grid=False`` continues from the grid optimum
# with a continuous least-squares minimisation, a better estimator that no longer moves in steps of
# ``accuracy * E``.
#
# Known property of the estimator (both modes): because sigma_d grows with the measured energies,
# downward fluctuations weigh more and the intercepts come out low by up to about ``c**2`` = 0.3 GeV
# (0.3-0.6 % at 50 GeV in toy studies; for an all-HCAL sample the minimum is exactly the harmonic
# mean of E_H).  Iterating the calibration therefore converges to the estimator's fixed point, not
# to the true scale; compare emulator runs with that fixed point.

#: Stochastic resolution constant of both calorimeters in the original (sigma_E = 0.55 sqrt(E)).
RESOLUTION_CONSTANT = 0.55
#: Half-width of the pre-selection band around the ideal line, in sigma_d.
BAND_SIGMAS = 3.0
#: Bound on the temporary (events x grid) arrays of the grid scan, in elements.
CHUNK_ELEMENTS = 1 << 17


@dataclass(frozen=True)
class CSMResult:
    """Best intercepts (GeV), their chi2 and the number of events that entered it.

    The errors come from the curvature of chi2 at the reported point (Gauss-Newton), scaled by
    sqrt(chi2/ndf) so that they follow the observed scatter even where 0.55 sqrt(E) is not the
    true resolution; they do not include the grid quantisation of ``grid=True`` results.
    """

    interceptEcal: float
    interceptHcal: float
    chi2: float
    nEvents: int
    ok: bool
    reason: str = ""
    interceptEcalError: float = math.nan
    interceptHcalError: float = math.nan


def csm_intercept_grid(targetEnergy: float, beamEnergy: float, accuracy: float) -> np.ndarray:
    """The original's intercept values ``0.5 T + E * accuracy * k``, ``k < int(1/accuracy)``
    (the step count computed in single precision as in the executable: 40 at 0.025, 200 at 0.005)."""
    beamEnergy, accuracy = check_accuracy(beamEnergy, accuracy)
    targetEnergy = _positive("targetEnergy", targetEnergy)
    steps = int(np.float32(1.0) / np.float32(accuracy))
    return 0.5 * targetEnergy + beamEnergy * accuracy * np.arange(steps)


def csm_band_selection(eEcal, eHcal, targetEnergy: float, *, resolution: float = RESOLUTION_CONSTANT,
                       nSigma: float = BAND_SIGMAS) -> np.ndarray:
    """Mask of events within ``nSigma`` sigma_d of the ideal line (both intercepts = T).

    This is the original ``ThreeSigmaCut``, applied before the fit together with the event
    selection (one neutral-hadron target and PFO, ``pfoMinHCalLayerToEdge`` cut).  For the ideal
    line it reduces to ``|E_E + E_H - T| <= nSigma * c * sqrt(E_E + E_H)``.  Events with no
    energy at all are outside.
    """
    eEcal, eHcal = _event_energies(eEcal, eHcal)
    targetEnergy = _positive("targetEnergy", targetEnergy)
    resolution, nSigma = _positive("resolution", resolution), _positive("nSigma", nSigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = _pulls(eEcal, eHcal, 1.0 / targetEnergy, 1.0 / targetEnergy, resolution)
    return np.abs(pull) <= nSigma


def csm_chi2_grid(eEcal, eHcal, interceptsEcal, interceptsHcal, *,
                  resolution: float = RESOLUTION_CONSTANT) -> np.ndarray:
    """chi2 for every pair: element ``[i, j]`` belongs to ``(interceptsEcal[i], interceptsHcal[j])``.

    Vectorised over events and the HCAL axis, looping over the ECAL axis and over event chunks
    of at most ``CHUNK_ELEMENTS / len(interceptsHcal)`` events, so memory stays bounded.
    """
    eEcal, eHcal = _event_energies(eEcal, eHcal, forChi2=True)
    resolution = _positive("resolution", resolution)
    invE = 1.0 / _positive_array("interceptsEcal", interceptsEcal)
    invH = 1.0 / _positive_array("interceptsHcal", interceptsHcal)
    chi2 = np.zeros((invE.size, invH.size))
    chunk = max(1, CHUNK_ELEMENTS // invH.size)
    for first in range(0, eEcal.size, chunk):
        ecal, hcal = eEcal[first:first + chunk, None], eHcal[first:first + chunk, None]
        linear, quadratic = hcal * invH, hcal * invH * invH
        numerator, denominator = np.empty_like(linear), np.empty_like(linear)
        for i in range(invE.size):
            np.add(linear, ecal * invE[i] - 1.0, out=numerator)
            np.multiply(numerator, numerator, out=numerator)
            np.add(quadratic, ecal * (invE[i] * invE[i]), out=denominator)
            np.divide(numerator, denominator, out=numerator)
            chi2[i] += numerator.sum(axis=0)
    return chi2 / (resolution * resolution)


def chi_square_hadronic_scale(eEcal, eHcal, targetEnergy: float, accuracy: float, *, beamEnergy: float,
                              grid: bool = True, resolution: float = RESOLUTION_CONSTANT) -> CSMResult:
    """Hadronic-scale intercepts (I_E, I_H) of already selected K0L events by the chi-square method.

    ``eEcal``/``eHcal``: pfoECalToHadEnergy / pfoHCalToHadEnergy of the selected events (apply
    ``csm_band_selection`` first, as the original does); ``targetEnergy`` T = E - m_K0L and
    ``beamEnergy`` E define the grid (see ``csm_intercept_grid``).  ``grid=True`` returns the
    grid optimum exactly as the original (the first minimum in its loop order, ECAL outer);
    ``grid=False`` refines it by continuous minimisation.  The update is then
    ``HCalToHad' = T * HCalToHad / I_H`` and ``ECalToHad' = T * ECalToHad / I_E``.
    A minimum on the grid edge is returned as the original does (the next iteration moves into
    the grid).  Fewer than 3 events, or a failed continuous minimisation, give ``ok=False``.
    """
    eEcal, eHcal = _event_energies(eEcal, eHcal, forChi2=True)
    intercepts = csm_intercept_grid(targetEnergy, beamEnergy, accuracy)
    nEvents = int(eEcal.size)
    if nEvents < 3:
        return CSMResult(math.nan, math.nan, math.nan, nEvents, False,
                         f"the chi-square method needs at least 3 events, got {nEvents}")
    surface = csm_chi2_grid(eEcal, eHcal, intercepts, intercepts, resolution=resolution)
    i, j = np.unravel_index(int(np.argmin(surface)), surface.shape)
    gridChi2 = float(surface[i, j])
    inverse = np.array([1.0 / intercepts[i], 1.0 / intercepts[j]])
    if not grid:
        fit = least_squares(_residuals, inverse, jac=_jacobian, args=(eEcal, eHcal, resolution),
                            bounds=(0.0, np.inf), x_scale=inverse, xtol=1e-12, ftol=1e-12, gtol=1e-12)
        fitChi2 = float(np.dot(fit.fun, fit.fun))
        if not (fit.success and np.all(np.isfinite(fit.x)) and np.all(fit.x > 0) and fitChi2 <= gridChi2 * (1 + 1e-9)):
            return CSMResult(float(intercepts[i]), float(intercepts[j]), gridChi2, nEvents, False,
                             f"continuous minimisation failed from the grid optimum: {fit.message}")
        inverse = fit.x
    residuals = _residuals(inverse, eEcal, eHcal, resolution)
    chi2 = float(np.dot(residuals, residuals))
    errorEcal, errorHcal = _intercept_errors(inverse, eEcal, eHcal, resolution, chi2)
    return CSMResult(float(1.0 / inverse[0]), float(1.0 / inverse[1]), chi2, nEvents, True, "",
                     errorEcal, errorHcal)


def _pulls(eEcal: np.ndarray, eHcal: np.ndarray, u, v, resolution: float) -> np.ndarray:
    """Signed d / sigma_d for line intercepts 1/u (ECAL) and 1/v (HCAL)."""
    return (eEcal * u + eHcal * v - 1.0) / (resolution * np.sqrt(eEcal * u * u + eHcal * v * v))


def _residuals(inverse: np.ndarray, eEcal: np.ndarray, eHcal: np.ndarray, resolution: float) -> np.ndarray:
    return _pulls(eEcal, eHcal, inverse[0], inverse[1], resolution)


def _jacobian(inverse: np.ndarray, eEcal: np.ndarray, eHcal: np.ndarray, resolution: float) -> np.ndarray:
    u, v = inverse
    numerator = eEcal * u + eHcal * v - 1.0
    denominator = eEcal * u * u + eHcal * v * v
    factor = 1.0 / (resolution * denominator ** 1.5)
    return np.column_stack((eEcal * (denominator - numerator * u) * factor,
                            eHcal * (denominator - numerator * v) * factor))


def _intercept_errors(inverse: np.ndarray, eEcal: np.ndarray, eHcal: np.ndarray, resolution: float,
                      chi2: float) -> tuple[float, float]:
    jac = _jacobian(inverse, eEcal, eHcal, resolution)
    try:
        covariance = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return math.nan, math.nan
    scale = chi2 / (eEcal.size - 2) if eEcal.size > 2 else math.nan
    # I = 1/u: dI/du = -I**2
    variances = np.diag(covariance) * scale / inverse ** 4
    return tuple(float(math.sqrt(value)) if value >= 0 else math.nan for value in variances)


def _event_energies(eEcal, eHcal, forChi2: bool = False) -> tuple[np.ndarray, np.ndarray]:
    eEcal = as_finite_array("eEcal", eEcal)
    eHcal = as_finite_array("eHcal", eHcal)
    if eEcal.shape != eHcal.shape:
        raise ValueError(f"eEcal and eHcal must have the same length, got {eEcal.size} and {eHcal.size}")
    for name, values in (("eEcal", eEcal), ("eHcal", eHcal)):
        if np.any(values < 0):
            raise ValueError(f"{name} has negative energies (first at index {int(np.argmax(values < 0))})")
    if forChi2:
        empty = (eEcal == 0) & (eHcal == 0)
        if empty.any():
            raise ValueError(f"{int(empty.sum())} event(s) have no energy in either calorimeter "
                             f"(first at index {int(np.argmax(empty))}); the band selection removes them")
    return eEcal, eHcal


def _positive(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _positive_array(name: str, values) -> np.ndarray:
    array = as_finite_array(name, values)
    if array.size == 0 or np.any(array <= 0):
        raise ValueError(f"{name} must be a non-empty array of positive intercepts")
    return array
