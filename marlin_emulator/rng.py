"""Random numbers that are pure functions of (file, event, quantity, index).

Marlin reads the same simulated events whatever slice of a file a worker processes, and a
re-run with other constants sees the same showers. The emulator gets both properties from a
counter-based generator: every draw is a hash (SplitMix64 finaliser) of the file key, the event
number in its file, a named stream and an index (e.g. the hit number). Generating any subset of
events is therefore exact and costs only the events asked for, and everything stays vectorised.
"""
from __future__ import annotations

import zlib

import numpy as np
from scipy import special

_MASK = (1 << 64) - 1
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STEP = np.uint64(0xD2B74407B1CE6E93)
_S30, _S27, _S31, _S11 = (np.uint64(k) for k in (30, 27, 31, 11))


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (multiplication wraps modulo 2**64 by design)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _S30)) * _C1
        x = (x ^ (x >> _S27)) * _C2
    return x ^ (x >> _S31)


def file_key(seed: int, *parts: int) -> int:
    """A 64-bit key for one sample file from its seed and identifying integers."""
    key = np.array([seed & _MASK], dtype=np.uint64)
    for part in parts:
        with np.errstate(over="ignore"):
            key = _mix(key ^ (np.uint64(part & _MASK) * _GOLDEN + _STEP))
    return int(key[0])


class EventRandom:
    """Draws for the events of one file; ``stream`` names the quantity (e.g. "cosTheta")."""

    def __init__(self, key: int) -> None:
        self.key = np.uint64(key & _MASK)

    def _bits(self, events: np.ndarray, stream: str, index) -> np.ndarray:
        streamKey = np.uint64(zlib.crc32(stream.encode()))
        events = np.asarray(events, dtype=np.uint64)
        index = np.asarray(index, dtype=np.uint64)
        with np.errstate(over="ignore"):
            x = _mix(np.asarray(self.key ^ (streamKey * _GOLDEN)))
            x = _mix(x ^ (events * _STEP + _GOLDEN))
            return _mix(x ^ (index * _GOLDEN + _STEP))

    def uniform(self, events: np.ndarray, stream: str, index=0) -> np.ndarray:
        """Uniform in the open interval (0, 1)."""
        return ((self._bits(events, stream, index) >> _S11).astype(np.float64) + 0.5) * 2.0**-53

    def normal(self, events: np.ndarray, stream: str, index=0) -> np.ndarray:
        return special.ndtri(self.uniform(events, stream, index))

    def exponential(self, events: np.ndarray, stream: str, index=0) -> np.ndarray:
        return -np.log(self.uniform(events, stream, index))

    def gamma(self, shape, events: np.ndarray, stream: str, index=0) -> np.ndarray:
        """Gamma(shape, scale 1) by inverse CDF."""
        return special.gammaincinv(shape, self.uniform(events, stream, index))

    def beta(self, mean, spread, events: np.ndarray, stream: str, index=0) -> np.ndarray:
        """Beta distribution of the given mean and standard deviation, by inverse CDF."""
        mean = np.asarray(mean, dtype=float)
        concentration = mean * (1 - mean) / np.square(spread) - 1
        return special.betaincinv(mean * concentration, (1 - mean) * concentration, self.uniform(events, stream, index))

    def poisson(self, mean, events: np.ndarray, stream: str, index=0) -> np.ndarray:
        """Poisson counts by inverse CDF (pdtrik), as int64."""
        u = self.uniform(events, stream, index)
        mean = np.broadcast_to(np.asarray(mean, dtype=float), u.shape)
        return np.ceil(special.pdtrik(u, mean) - 1e-9).clip(min=0).astype(np.int64)


def hit_indices(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For jagged per-event counts: the owning row of every item and its index within the row."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(owner.size) - np.repeat(starts, counts)


__all__ = ["EventRandom", "file_key", "hit_indices"]
