"""When a waiting worker should ask again: the ``retryAfter`` of a ``wait`` answer.

A worker that reported the current step has nothing to do until the step closes. Polling at a
fixed back-off either wastes the service's calls (hundreds of workers asking every few seconds)
or learns of the new step late (up to the back-off's maximum). Instead the service gives the
waiting workers of a calibration a budget of ``rate`` calls per second together: each asks
again after one *window* of ``waiting / rate`` seconds, at its own offset within the window, so
it learns of a new step at most one window after it opened. When the step is expected sooner
than a window from now, the worker comes back then (plus its offset):

- the threshold is reached (the close is being computed): in ``closeSeconds``;
- reports are coming in: when the missing ones will have arrived at the rate observed since
  the step opened, plus ``closeSeconds``;
- no report yet: never sooner than the window.

A worker told to wait already is not asked back sooner than one window, which keeps the
calls at about ``rate`` per second whatever the number of workers. The result is bounded by
the service's ``WorkerPollMinimum`` and ``WorkerPollMaximum``.
"""
from __future__ import annotations

from dataclasses import dataclass

#: 1/golden ratio: worker IDs times this, modulo 1, spread evenly over [0, 1) for any number of workers.
_SPREAD = 0.6180339887498949


@dataclass(frozen=True)
class PollPolicy:
    """The service's polling options (seconds; ``rate`` in calls per second)."""

    minimum: float = 1.0
    maximum: float = 120.0
    rate: float = 20.0
    closeSeconds: float = 2.0


#: The service's defaults (ConfigTemplate.cfg).
DEFAULT_POLLING = PollPolicy()


@dataclass(frozen=True)
class StepProgress:
    """What the step's row says: results counted, results needed, seconds since it opened."""

    results: int
    needed: int
    openSeconds: float


def retry_after(progress: StepProgress, policy: PollPolicy, workerID: int, repeated: bool) -> float:
    """Seconds this waiting worker should wait before asking again (see the module doc);
    ``repeated``: it was told to wait for this step before."""
    missing = progress.needed - progress.results
    if missing <= 0:
        expected = policy.closeSeconds
    elif progress.results > 0 and progress.openSeconds > 0:
        expected = missing * progress.openSeconds / progress.results + policy.closeSeconds
    else:
        expected = policy.maximum
    # the workers waiting now are those that reported this step
    window = max(progress.results, 1) / policy.rate
    offset = window * ((workerID * _SPREAD) % 1.0)
    hint = min(expected, window) + offset
    if repeated:
        hint = max(hint, window)
    return round(min(max(hint, policy.minimum), policy.maximum), 3)
