"""The service's limits on what a caller may send, and the checks that enforce them.

Every input has a limit. The values come from the service's CS section (option names in each
field's metadata, defaults here and in ConfigTemplate.cfg). A request over a limit is refused
with one line that names the limit (``MaxStringLength = 1024``) and shows at most a short,
truncated piece of what was sent (``shown``), before anything is stored.
Pure: no DIRAC, no DB.
"""
from __future__ import annotations

import json
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

#: How much of a caller's value a message may repeat.
SHOWN_LENGTH = 60
#: Deepest nesting of lists and dicts in an RPC argument (settings need 3).
MAX_DEPTH = 10


class LimitError(ValueError):
    """A request over one of the limits; the message names the limit."""


def _option(name: str, default: int):
    return field(default=default, metadata={"option": name})


@dataclass(frozen=True)
class ServiceLimits:
    """What one request (and one user) may ask of the service."""

    #: numberOfJobs of one calibration
    maxWorkers: int = _option("MaxWorkersPerCalibration", 1000)
    #: calibrations one user may have running at once
    maxRunningCalibrations: int = _option("MaxRunningCalibrationsPerUser", 10)
    #: entries of any list or dict in an argument (sample file lists, job IDs, ...)
    maxListLength: int = _option("MaxListLength", 10000)
    #: characters of any string in an argument (file names, LFNs, versions, ...)
    maxStringLength: int = _option("MaxStringLength", 1024)
    #: values (strings, numbers, list and dict entries) in one argument
    maxValues: int = _option("MaxValuesPerArgument", 100000)
    #: input files (steering, Pandora settings, ...) of one calibration
    maxInputFiles: int = _option("MaxInputFiles", 100)
    #: bytes of one input file
    maxFileSize: int = _option("MaxFileSize", 16 * 1024 * 1024)
    #: bytes of one worker report, as sent (compact JSON)
    maxReportSize: int = _option("MaxReportSize", 8 * 1024 * 1024)
    #: distinct calibration IDs in one status call
    maxStatusIDs: int = _option("MaxIDsPerStatusCall", 20)
    #: calibrations a status call without IDs lists (the newest)
    maxListedCalibrations: int = _option("MaxListedCalibrations", 100)

    @classmethod
    def from_options(cls, get: Callable[[str, object], Any]) -> ServiceLimits:
        """The limits from a configuration (``get(option, default)``, e.g. ``srv_getCSOption``)."""
        values = {}
        for spec in fields(cls):
            value = get(spec.metadata["option"], spec.default)
            try:
                values[spec.name] = int(value)
            except (TypeError, ValueError):
                raise LimitError(f"{spec.metadata['option']} must be a whole number, not {shown(value)}") from None
            if values[spec.name] < 1:
                raise LimitError(f"{spec.metadata['option']} must be at least 1, not {values[spec.name]}")
        return cls(**values)

    def name(self, attribute: str) -> str:
        """``Option = value`` of one limit, as a refusal names it."""
        spec = next(f for f in fields(self) if f.name == attribute)
        return f"{spec.metadata['option']} = {getattr(self, attribute)}"


class _Short(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        return super().repr_int(x, level) if x.bit_length() < 200 else f"<{x.bit_length()}-bit integer>"


def _short_repr() -> reprlib.Repr:
    short = _Short()
    short.maxstring = short.maxother = short.maxlong = SHOWN_LENGTH
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    short.maxlevel = 3
    return short


_SHORT = _short_repr()


def shown(value: Any) -> str:
    """repr(value) cut short (reprlib): what a message may repeat of a caller's input."""
    text = _SHORT.repr(value)
    return text if len(text) <= 2 * SHOWN_LENGTH else text[: 2 * SHOWN_LENGTH] + "..."


def check_argument(value: Any, limits: ServiceLimits, what: str) -> None:
    """Refuse an argument that breaks a limit or is not plain data (str, int, float, bool, None,
    lists and dicts with string keys)."""
    stack = [(value, 0)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > limits.maxValues:
            raise LimitError(f"{what} holds more than {limits.name('maxValues')} values")
        if isinstance(item, str):
            if len(item) > limits.maxStringLength:
                raise LimitError(f"{what} has a string of {len(item)} characters, more than "
                                 f"{limits.name('maxStringLength')}: {shown(item)}")
        elif isinstance(item, (list, tuple, dict)):
            if len(item) > limits.maxListLength:
                raise LimitError(f"{what} has a list of {len(item)} entries, more than {limits.name('maxListLength')}")
            if depth >= MAX_DEPTH:
                raise LimitError(f"{what} is nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, dict):
                bad = next((k for k in item if not isinstance(k, str)), None)
                if bad is not None:
                    raise LimitError(f"{what} has a key that is not a string: {shown(bad)}")
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if abs(item) >= 2**63:
                raise LimitError(f"{what} has an integer outside the 64-bit range: {shown(item)}")
        elif not (item is None or isinstance(item, (bool, float))):
            raise LimitError(f"{what} holds a {type(item).__name__}, which is not plain data")


def payload_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON: the size of a worker report as sent, whatever its structure."""
    try:
        return len(json.dumps(value, separators=(",", ":"), allow_nan=True))
    except (TypeError, ValueError, RecursionError) as exc:
        raise LimitError(f"the report is not plain data: {type(exc).__name__}") from None


__all__ = ["LimitError", "ServiceLimits", "check_argument", "payload_size", "shown"]
