"""Today's per-event chi-square method, as the service ran it before fixed-size summaries.

Kept verbatim (band selection, grid scan chunked over events, continuous least-squares refinement,
Gauss-Newton errors, and the phase's offline replay iterating the ratio update) as the independent
reference the binned estimator of ``Utilities/estimators.py`` is tested and benchmarked against:
the constants must stay these within a small fraction of the requested accuracy.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

from ILCDIRAC.CalibrationSystem.Utilities.estimators import (
    BAND_SIGMAS,
    RESOLUTION_CONSTANT,
    CSMResult,
    _positive,
    as_finite_array,
    csm_intercept_grid,
)

#: Bound on the temporary (events x grid) arrays of the grid scan, in elements.
CHUNK_ELEMENTS = 1 << 17
#: Offline fixed-point iterations of the chi-square method before giving up on replaying.
SOLVE_ITERATIONS = 30
#: Relative distance of both intercepts from the target at which the offline replay stops.
SOLVE_PRECISION = 1e-4


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


def _positive_array(name: str, values) -> np.ndarray:
    array = as_finite_array(name, values)
    if array.size == 0 or np.any(array <= 0):
        raise ValueError(f"{name} must be a non-empty array of positive intercepts")
    return array


def replay_fixed_point(eEcal, eHcal, targetEnergy: float, accuracy: float, beamEnergy: float,
                       ecalToHad: float, hcalToHad: float) -> tuple[float, float] | None:
    """(ECalToHad, HCalToHad) at which the continuous estimator finds both intercepts at the
    target on these events, measured with (ecalToHad, hcalToHad): the phase's offline replay,
    iterating the ratio update on rescaled events (E = a x + b y split by f = x / (x + y))."""
    eEcal, eHcal = np.asarray(eEcal, dtype=float), np.asarray(eHcal, dtype=float)
    total = eEcal + eHcal
    keep = total > 0
    eEcal, eHcal, total = eEcal[keep], eHcal[keep], total[keep]
    fraction = eEcal / total
    response0 = ecalToHad * fraction + hcalToHad * (1 - fraction)
    a, b = ecalToHad, hcalToHad
    for _ in range(SOLVE_ITERATIONS):
        scale = (a * fraction + b * (1 - fraction)) / response0
        trialEcal, trialHcal = eEcal * scale, eHcal * scale
        band = csm_band_selection(trialEcal, trialHcal, targetEnergy)
        result = chi_square_hadronic_scale(trialEcal[band], trialHcal[band], targetEnergy, accuracy,
                                           beamEnergy=beamEnergy, grid=False)
        if not result.ok:
            return None
        a, b = targetEnergy * a / result.interceptEcal, targetEnergy * b / result.interceptHcal
        deviation = max(abs(result.interceptEcal / targetEnergy - 1), abs(result.interceptHcal / targetEnergy - 1))
        if deviation < SOLVE_PRECISION:
            return a, b
    return None
