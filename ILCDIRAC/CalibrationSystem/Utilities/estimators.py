"""Estimators of the PandoraPFA calibration, in numpy/scipy.

Each function re-implements what one LCPandoraAnalysis calibration executable does to its merged
histogram or event list (docs/PHYSICS.md, sections 3-4), so the service can run
the original estimator on the sum of the workers' reports without ROOT:

- ``digitisation_histogram`` / ``rebin_to_accuracy``: the original binning rule
  ``nbins = int(max / (accuracy * E))`` on ``[0, max]`` (quirk 2: the bin width is tied to the
  tolerance), from raw values or from the fine fixed binning the workers send.
- ``rms90_window`` + ``gaussian_fit_mean``: the Gaussian fit inside the minimum-RMS window that
  holds 90 % of the entries (ECAL/HCAL digitisation, EM scale).
- ``mip_peak``, ``simcalohit_peak``, ``histogram_mean``: the MIP-scale and HCAL-ring inputs.
- ``chi_square_hadronic_scale`` + ``csm_fixed_point``: the chi-square method of the hadronic
  scale (ECalToHad, HCalToHad) and its offline replay, from K0L events binned in energy and ECAL
  share (``KaonCells``), at a cost that does not grow with the number of events.

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
from scipy.optimize import OptimizeWarning, curve_fit

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
# Chi-square method (CSM) of the hadronic scale: ECalToHad and HCalToHad from K0L events
# --------------------------------------------------------------------------------------------
# Re-implements ``PandoraPFACalibrate_HadronicScale_ChiSquareMethod`` (docs/PHYSICS.md, phase 4
# and section 4).  Each selected event is a point (E_H, E_E) = (pfoHCalToHadEnergy,
# pfoECalToHadEnergy).  A calibrated detector puts the points on the line E_H/I_H + E_E/I_E = 1 with
# both intercepts I_H = I_E = T (the K0L kinetic energy).  The estimator finds the intercepts that
# minimise ``chi2 = sum (d / sigma_d)**2`` with d the perpendicular distance of a point from the line
# and sigma_d its error from a stochastic resolution ``0.55 * sqrt(E)`` on each axis.  Writing
# u = 1/I_E, v = 1/I_H, E = E_E + E_H and f = E_E / E, one event contributes
#
#     (d / sigma_d)**2 = (E w - 1)**2 / (c**2 E q),   w = f u + (1 - f) v,   q = f u**2 + (1 - f) v**2,
#
# which is the original's formula with the common factor sqrt(I_H**2 + I_E**2) cancelled, c = 0.55.
#
# Events arrive binned in (E, f) (``KaonCells``): per cell the number of events and their summed f
# and E, so every cell stands for its events at their mean (E, f).  Summing the numerator over the
# events of one f bin needs only six sums, N, sum f, sum E, sum E f, sum E f**2 and sum 1/E
# (``csm_moments``), because it is a polynomial in f; only q is taken at the bin's mean f, which
# moves chi2 by a negligible amount near the minimum, where u and v differ by a few per cent at
# most.  So the whole (1/accuracy)**2 grid costs (number of f bins) x (grid points), whatever the
# number of events, and the offline replay and its bootstrap reuse the same sums.
#
# The original scans the grid I = 0.5 T + E * accuracy * k, k = 0 .. int(1/accuracy) - 1 on both
# axes (E the beam energy); ``chi_square_hadronic_scale`` returns its optimum.  ``csm_fixed_point``
# is the offline replay: the constants at which the continuous estimator (the chi2 minimum off the
# grid, which no longer moves in steps of ``accuracy * E``) finds both intercepts at T on the same
# events.
#
# Known property of the estimator (all modes): because sigma_d grows with the measured energies,
# downward fluctuations weigh more and the intercepts come out low by up to about ``c**2`` = 0.3 GeV
# (0.3-0.6 % at 50 GeV in toy studies; for an all-HCAL sample the minimum is exactly the harmonic
# mean of E_H).  Iterating the calibration therefore converges to the estimator's fixed point, not
# to the true scale; compare emulator runs with that fixed point.

#: Stochastic resolution constant of both calorimeters in the original (sigma_E = 0.55 sqrt(E)).
RESOLUTION_CONSTANT = 0.55
#: Half-width of the pre-selection band around the ideal line, in sigma_d.
BAND_SIGMAS = 3.0
#: Relative step of the numerical second derivatives of chi2 (from its analytic gradient).
HESSIAN_STEP = 1e-5
#: The offline replay's fixed point: chi2 gradient per event (in units of T) below this, which
#: puts both intercepts within about 1e-7 T of the target.
STATIONARITY_TOLERANCE = 1e-9
#: Ratio updates (continuous estimator) that bring the replay close before solving for the fixed point.
RATIO_UPDATES = 8


@dataclass(frozen=True)
class CSMResult:
    """Best intercepts (GeV), their chi2 and the number of events that entered it.

    The errors come from the curvature of chi2 at the reported point, scaled by sqrt(chi2/ndf) so
    that they follow the observed scatter even where 0.55 sqrt(E) is not the true resolution; they
    do not include the grid quantisation.  ``nEvents`` counts the events inside the band (cells
    straddling its edge count with the fraction inside).
    """

    interceptEcal: float
    interceptHcal: float
    chi2: float
    nEvents: float
    ok: bool
    reason: str = ""
    interceptEcalError: float = math.nan
    interceptHcalError: float = math.nan


@dataclass(frozen=True)
class KaonCells:
    """The non-empty cells of K0L events binned in total energy E and ECAL fraction f.

    ``counts``, ``fraction`` and ``energy`` are each cell's number of events and their mean f and
    mean E; ``low``/``high`` are the cell's E edges (equal for the flow cells, which then stand for
    a point at their mean); ``fractionBin`` numbers the cell's f bin out of ``nFractionBins``.
    """

    counts: np.ndarray
    fraction: np.ndarray
    energy: np.ndarray
    low: np.ndarray
    high: np.ndarray
    fractionBin: np.ndarray
    nFractionBins: int

    @classmethod
    def from_sums(cls, counts, fractionSums, energySums, energyEdges) -> KaonCells:
        """From (E with flow bins) x (f) arrays of event counts, summed f and summed E, and the
        in-range E edges."""
        counts = as_finite_array("counts", counts, ndim=2)
        fractionSums = as_finite_array("fractionSums", fractionSums, ndim=2)
        energySums = as_finite_array("energySums", energySums, ndim=2)
        edges = as_finite_array("energyEdges", energyEdges)
        if counts.shape != fractionSums.shape or counts.shape != energySums.shape:
            raise ValueError(f"cell arrays must have the same shape, got {counts.shape}, "
                             f"{fractionSums.shape}, {energySums.shape}")
        if np.any(counts < 0) or np.any(energySums < 0):
            raise ValueError("cell counts and energy sums must be non-negative")
        if counts.shape[0] != edges.size + 1:
            raise ValueError(
                f"{counts.shape[0]} energy rows need {counts.shape[0] - 1} edges (with flow), got {edges.size}"
            )
        row, column = np.nonzero(counts > 0)
        n = counts[row, column]
        energy = energySums[row, column] / n
        inRange = (row >= 1) & (row <= edges.size - 1)
        low = np.where(inRange, edges[np.clip(row - 1, 0, edges.size - 1)], energy)
        high = np.where(inRange, edges[np.clip(row, 0, edges.size - 1)], energy)
        return cls(n, fractionSums[row, column] / n, energy, low, high, column, counts.shape[1])



def csm_intercept_grid(targetEnergy: float, beamEnergy: float, accuracy: float) -> np.ndarray:
    """The original's intercept values ``0.5 T + E * accuracy * k``, ``k < int(1/accuracy)``
    (the step count computed in single precision as in the executable: 40 at 0.025, 200 at 0.005)."""
    beamEnergy, accuracy = check_accuracy(beamEnergy, accuracy)
    targetEnergy = _positive("targetEnergy", targetEnergy)
    steps = int(np.float32(1.0) / np.float32(accuracy))
    return 0.5 * targetEnergy + beamEnergy * accuracy * np.arange(steps)


def csm_band(
    targetEnergy: float, *, resolution: float = RESOLUTION_CONSTANT, nSigma: float = BAND_SIGMAS
) -> tuple[float, float]:
    """The original ``ThreeSigmaCut`` around the ideal line (both intercepts = T) as an energy range.

    For that line sigma_d of an event is ``c sqrt(E / 2)`` and d is ``|E - T| / sqrt(2)``, so the
    band ``d <= nSigma sigma_d`` is ``|E - T| <= k sqrt(E)`` with ``k = nSigma c``: sqrt(E) between
    ``(-k + r) / 2`` and ``(k + r) / 2``, ``r = sqrt(k**2 + 4 T)``."""
    targetEnergy = _positive("targetEnergy", targetEnergy)
    k = _positive("nSigma", nSigma) * _positive("resolution", resolution)
    root = math.sqrt(k * k + 4 * targetEnergy)
    return ((root - k) / 2) ** 2, ((root + k) / 2) ** 2


def csm_band_fraction(cells: KaonCells, targetEnergy: float, scale: np.ndarray | float = 1.0, *,
                      resolution: float = RESOLUTION_CONSTANT, nSigma: float = BAND_SIGMAS) -> np.ndarray:
    """Per cell, the fraction of its events inside the band once their energies are multiplied
    by ``scale``, as the original selects event by event: a cell holding one event knows its
    energy exactly (its mean), so it is in or out; the events of a fuller cell are taken as spread
    evenly over it (the cells are 0.4 % of E wide), so it counts with its overlap with the band."""
    bandLow, bandHigh = csm_band(targetEnergy, resolution=resolution, nSigma=nSigma)
    low, high = cells.low * scale, cells.high * scale
    width = np.where(cells.counts == 1, 0.0, high - low)
    inside = np.clip(np.minimum(high, bandHigh) - np.maximum(low, bandLow), 0.0, None)
    point = (cells.energy * scale >= bandLow) & (cells.energy * scale <= bandHigh)
    return np.where(width > 0, np.minimum(inside / np.where(width > 0, width, 1.0), 1.0), point.astype(float))


def csm_moments(cells: KaonCells, weights: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """The six sums (N, sum f, sum E, sum E f, sum E f**2, sum 1/E) of every non-empty f bin, each
    cell's events counted ``weights`` times with energies multiplied by ``scale``; shape (6, bins)."""
    n = cells.counts * weights
    energy = cells.energy * scale
    f = cells.fraction
    parts = (n, n * f, n * energy, n * energy * f, n * energy * f * f, n / energy)
    moments = np.stack([np.bincount(cells.fractionBin, weights=p, minlength=cells.nFractionBins) for p in parts])
    return moments[:, moments[0] > 0]


def csm_chi2(moments: np.ndarray, u, v, resolution: float = RESOLUTION_CONSTANT) -> np.ndarray:
    """chi2 at inverse intercepts (u, v) (broadcast against each other) from ``csm_moments``."""
    n, sf, se, sef, seff, si = (m for m in moments)
    u, v = np.asarray(u, dtype=float)[..., None], np.asarray(v, dtype=float)[..., None]
    d = u - v
    share = sf / n
    numerator = v * v * se + 2 * v * d * sef + d * d * seff - 2 * v * n - 2 * d * sf + si
    return (numerator / (share * u * u + (1 - share) * v * v)).sum(axis=-1) / (resolution * resolution)


def csm_gradient(moments: np.ndarray, u: float, v: float, resolution: float = RESOLUTION_CONSTANT) -> np.ndarray:
    """(d chi2 / du, d chi2 / dv) at one point, from ``csm_moments``."""
    n, sf, se, sef, seff, si = (m for m in moments)
    d = u - v
    share = sf / n
    numerator = v * v * se + 2 * v * d * sef + d * d * seff - 2 * v * n - 2 * d * sf + si
    q = share * u * u + (1 - share) * v * v
    dNumU = 2 * v * sef + 2 * d * seff - 2 * sf
    dNumV = 2 * v * se + 2 * (d - v) * sef - 2 * d * seff - 2 * n + 2 * sf
    dqU, dqV = 2 * share * u, 2 * (1 - share) * v
    q2 = q * q * resolution * resolution
    return np.array([((dNumU * q - numerator * dqU) / q2).sum(), ((dNumV * q - numerator * dqV) / q2).sum()])


def _hessian(moments: np.ndarray, u: float, v: float, resolution: float) -> np.ndarray:
    hu, hv = HESSIAN_STEP * u, HESSIAN_STEP * v
    columns = [(csm_gradient(moments, u + hu, v, resolution) - csm_gradient(moments, u - hu, v, resolution)) / (2 * hu),
               (csm_gradient(moments, u, v + hv, resolution) - csm_gradient(moments, u, v - hv, resolution)) / (2 * hv)]
    hessian = np.column_stack(columns)
    return 0.5 * (hessian + hessian.T)


def _intercept_errors(moments: np.ndarray, u: float, v: float, chi2: float, resolution: float) -> tuple[float, float]:
    """Intercept errors from the chi2 curvature (covariance 2 H^-1 of (u, v)), scaled by chi2/ndf."""
    nEvents = float(moments[0].sum())
    try:
        covariance = 2.0 * np.linalg.inv(_hessian(moments, u, v, resolution))
    except np.linalg.LinAlgError:
        return math.nan, math.nan
    scale = chi2 / (nEvents - 2) if nEvents > 2 else math.nan
    # I = 1/u: dI/du = -I**2
    variances = np.diag(covariance) * scale / np.array([u, v]) ** 4
    errorU, errorV = (float(math.sqrt(value)) if value >= 0 else math.nan for value in variances)
    return errorU, errorV


def chi_square_hadronic_scale(cells: KaonCells, targetEnergy: float, accuracy: float, *, beamEnergy: float,
                              resolution: float = RESOLUTION_CONSTANT) -> CSMResult:
    """Hadronic-scale intercepts (I_E, I_H) by the chi-square method from binned K0L events.

    ``cells``: the selected events (one neutral-hadron target and PFO, ``pfoMinHCalLayerToEdge``
    cut); the band selection around the ideal line is applied here, as the original applies its
    ``ThreeSigmaCut``.  ``targetEnergy`` T = E - m_K0L and ``beamEnergy`` E define the grid (see
    ``csm_intercept_grid``); the result is the grid optimum exactly as the original finds it (the
    first minimum in its loop order, ECAL outer).  The update is then
    ``HCalToHad' = T * HCalToHad / I_H`` and ``ECalToHad' = T * ECalToHad / I_E``.  A minimum on
    the grid edge is returned as the original does (the next iteration moves into the grid).
    Fewer than 3 events in the band give ``ok=False``.
    """
    intercepts = csm_intercept_grid(targetEnergy, beamEnergy, accuracy)
    moments = csm_moments(cells, csm_band_fraction(cells, targetEnergy, resolution=resolution))
    nEvents = float(moments[0].sum())
    if nEvents < 3:
        return CSMResult(math.nan, math.nan, math.nan, nEvents, False,
                         f"the chi-square method needs at least 3 events in the band, got {nEvents:g}")
    inverse = 1.0 / intercepts
    surface = np.stack([csm_chi2(moments, u, inverse, resolution) for u in inverse])
    i, j = np.unravel_index(int(np.argmin(surface)), surface.shape)
    u, v = float(inverse[i]), float(inverse[j])
    chi2 = float(surface[i, j])
    errorEcal, errorHcal = _intercept_errors(moments, u, v, chi2, resolution)
    return CSMResult(1.0 / u, 1.0 / v, chi2, nEvents, True, "", errorEcal, errorHcal)


def csm_minimum(moments: np.ndarray, u: float, v: float, resolution: float = RESOLUTION_CONSTANT,
                iterations: int = 50) -> tuple[float, float] | None:
    """The continuous chi2 minimum (u, v) from a start, by Newton steps (analytic gradient,
    numerical Hessian) halved until chi2 decreases; None if it does not converge."""
    point = np.array([u, v], dtype=float)
    value = float(csm_chi2(moments, point[0], point[1], resolution))
    for _ in range(iterations):
        gradient = csm_gradient(moments, point[0], point[1], resolution)
        try:
            step = -np.linalg.solve(_hessian(moments, point[0], point[1], resolution), gradient)
        except np.linalg.LinAlgError:
            return None
        if np.dot(step, gradient) >= 0:  # not a descent direction: follow the gradient instead
            step = -gradient * (1e-3 * np.linalg.norm(point) / np.linalg.norm(gradient))
        for _ in range(40):
            trial = point + step
            if np.all(trial > 0):
                trialValue = float(csm_chi2(moments, trial[0], trial[1], resolution))
                if trialValue <= value:
                    break
            step = step / 2
        else:
            return None
        point, value = trial, trialValue
        if np.all(np.abs(step) <= 1e-12 * point):
            return float(point[0]), float(point[1])
    return None


def csm_fixed_point(cells: KaonCells, targetEnergy: float, ecalToHad: float, hcalToHad: float, *,
                    start: tuple[float, float] | None = None,
                    resolution: float = RESOLUTION_CONSTANT) -> tuple[float, float] | None:
    """The offline replay: (ECalToHad, HCalToHad) at which the continuous estimator finds both
    intercepts at T on these events, which were reconstructed with (ecalToHad, hcalToHad).

    A neutral-hadron PFO has E = a x + b y (x, y: its digitised ECAL and HCAL energies), split as
    E_E = f E, E_H = (1 - f) E with f = x / (x + y), which does not depend on a and b.  For trial
    constants (a, b) every event therefore keeps its f and its energy scales by
    ``(a f + b (1 - f)) / (ecalToHad f + hcalToHad (1 - f))``, and the band selection and chi2
    can be re-evaluated without another pass over the samples.  A few ratio updates with the
    continuous estimator bring the constants close (the band then holds the right events); the
    fixed point itself is where chi2 of the rescaled events is stationary at u = v = 1/T, two
    equations solved for (ln a, ln b) directly rather than by iterating the ratio update (which
    converges slowly where one intercept is weakly constrained).  ``start``, constants close to
    the answer (e.g. the full sample's when solving a bootstrap replica), skips the ratio updates.
    None if there is no solution (too few events, no convergence, or not a minimum there)."""
    from scipy.optimize import root

    target = _positive("targetEnergy", targetEnergy)
    ecalToHad, hcalToHad = _positive("ecalToHad", ecalToHad), _positive("hcalToHad", hcalToHad)
    f = cells.fraction
    response = ecalToHad * f + hcalToHad * (1 - f)
    u = 1.0 / target

    def moments_at(logScales: np.ndarray) -> np.ndarray:
        a, b = ecalToHad * math.exp(logScales[0]), hcalToHad * math.exp(logScales[1])
        scale = (a * f + b * (1 - f)) / response
        return csm_moments(cells, csm_band_fraction(cells, target, scale, resolution=resolution), scale)

    def stationarity(logScales: np.ndarray) -> np.ndarray:
        moments = moments_at(logScales)
        if moments[0].sum() < 3:
            return np.full(2, 1e6)
        return csm_gradient(moments, u, u, resolution) * u / moments[0].sum()

    def solved(initial: np.ndarray) -> tuple[float, float] | None:
        solution = root(stationarity, initial, method="hybr", options={"xtol": 1e-10})
        if not (np.all(np.isfinite(solution.x)) and np.all(np.abs(solution.x) < 2.0)
                and np.max(np.abs(solution.fun)) < STATIONARITY_TOLERANCE):
            return None
        moments = moments_at(solution.x)
        if moments[0].sum() < 3 or np.any(np.linalg.eigvalsh(_hessian(moments, u, u, resolution)) <= 0):
            return None
        return ecalToHad * math.exp(solution.x[0]), hcalToHad * math.exp(solution.x[1])

    if start is not None:
        near = solved(np.log([_positive("start", start[0]) / ecalToHad, _positive("start", start[1]) / hcalToHad]))
        if near is not None:
            return near
    logScales = np.zeros(2)
    for _ in range(RATIO_UPDATES):
        moments = moments_at(logScales)
        minimum = csm_minimum(moments, u, u, resolution) if moments[0].sum() >= 3 else None
        if minimum is None:
            return None
        update = np.log(np.array(minimum) / u)  # the ratio update a' = a T / I
        logScales = logScales + update
        if np.max(np.abs(update)) < 1e-3:
            break
    return solved(logScales)


def _positive(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value
