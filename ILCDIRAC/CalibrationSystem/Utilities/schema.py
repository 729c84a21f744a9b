"""Typed field specs: the one place that says what a value of a settings key, a detector-model
key or an emulator-truth key may be.

Settings, detector models and emulator truths are all YAML written by people. Declaring each key
once as a ``Field`` (type, bounds, default, meaning) gives one check per kind, the same message
for the same mistake in all three, and the documentation tables (docs/SETTINGS.md) from the same
source as the validation. Kinds that need more than a value (sample lists, phase lists, LFNs) are
converted by their owner; ``convert`` handles the scalar and fixed-length kinds. Pure: no DIRAC,
no files. Plain dataclasses rather than a validation library: the grid workers import the
settings, and their Python promises numpy, scipy, uproot, boost-histogram and PyYAML only.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

from ILCDIRAC.CalibrationSystem.Utilities.limits import shown

#: Integers are stored as 32-bit signed numbers.
MAX_INT = 2**31 - 1
#: Names that go into job descriptions (releases, platforms, storage elements): one word.
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class _Marker:
    """A default that is not a value: required, taken from the detector model, or derived."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


REQUIRED = _Marker("required")
MODEL = _Marker("model")
DERIVED = _Marker("derived")

#: The kinds ``convert`` checks itself.
SCALAR_KINDS = ("int", "float", "bool", "str", "optstr", "choice", "numbers", "range")


@dataclass(frozen=True)
class Field:
    """One key: its kind, default, bounds and meaning.

    ``low``/``high`` bound int and float values (``openLow``/``openHigh`` exclude the bound);
    ``length`` is the size of a "numbers" list; ``word`` asks a string to be one word (it goes
    into job descriptions); ``typeDoc``/``defaultDoc`` replace the generated table cells where
    the kind alone says too little."""

    name: str
    kind: str
    default: Any = REQUIRED
    doc: str = ""
    low: float | None = None
    high: float | None = None
    openLow: bool = False
    openHigh: bool = False
    choices: tuple[str, ...] = ()
    length: int = 0
    word: bool = False
    unit: str = ""
    typeDoc: str = ""
    defaultDoc: str = ""


def is_int(value: Any) -> TypeGuard[int]:
    """An integer, and not a bool (``True`` is an ``int`` in Python, never a count in a file)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'X'?)`` for the candidate closest to ``word`` (case-insensitive first), or ""."""
    names = list(candidates)
    lowered = {c.lower(): c for c in names}
    if word.lower() in lowered:
        return f" (did you mean {lowered[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, names, n=1, cutoff=cutoff)
    if not close:
        close = [lowered[c] for c in difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=cutoff)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def bounds_text(field: Field) -> str:
    """The bounds as a reader writes them: ">= 1", "> 0", "in (0, 1]", "0 or 1" ("" if unbounded)."""
    low, high = field.low, field.high
    if low is None:
        return "" if high is None else f"{'<' if field.openHigh else '<='} {_number(high)}"
    if high is None:
        return f"{'>' if field.openLow else '>='} {_number(low)}"
    if field.kind == "int" and not (field.openLow or field.openHigh) and high - low == 1:
        return f"{int(low)} or {int(high)}"
    return f"in {'(' if field.openLow else '['}{_number(low)}, {_number(high)}{')' if field.openHigh else ']'}"


def _number(value: float) -> str:
    return f"{value:g}"


def _in_bounds(field: Field, value: float) -> bool:
    if field.low is not None and (value <= field.low if field.openLow else value < field.low):
        return False
    return field.high is None or (value < field.high if field.openHigh else value <= field.high)


def convert(field: Field, value: Any) -> tuple[Any, str | None]:
    """The checked value of ``field`` (numbers as float, lists as tuples), or a message saying
    what is wrong with it; the message starts with "must" and shows a short piece of the value."""
    kind = field.kind
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not is_int(value):
            return None, f"must be an integer, got {shown(value)}"
        if abs(value) > MAX_INT:
            return None, f"must be at most {MAX_INT} in size, got {shown(value)}"
    elif kind == "float":
        if not is_number(value):
            return None, f"must be a finite number, got {shown(value)}"
        value = float(value)
    elif kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            return None, f"must be True or False, got {shown(value)}"
    elif kind in ("str", "optstr"):
        if value is None and kind == "optstr":
            return None, None
        if not isinstance(value, str) or not value.strip():
            hint = " (quote it in YAML)" if isinstance(value, (int, float)) else ""
            return None, f"must be a non-empty string, got {shown(value)}{hint}"
        value = value.strip()
        if field.word and not _WORD.match(value):
            return None, f"must be one word of letters, digits and ._+- , got {shown(value)}"
    elif kind == "choice":
        if value not in field.choices:
            return None, (f"must be one of {', '.join(field.choices)}, got {shown(value)}"
                          + did_you_mean(str(value), field.choices))
    elif kind == "numbers":
        if not (isinstance(value, (list, tuple)) and len(value) == field.length and all(map(is_number, value))):
            return None, f"must be a list of {field.length} numbers, got {shown(value)}"
        if not all(_in_bounds(field, v) for v in value):
            return None, f"must be a list of {field.length} numbers {bounds_text(field)}, got {shown(value)}"
        return tuple(float(v) for v in value), None
    elif kind == "range":
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_number, value))):
            return None, f"must be two numbers [low, high], got {shown(value)}"
        low, high = float(value[0]), float(value[1])
        if not (0 <= low < high <= 1):
            return None, f"must be increasing and inside [0, 1], got {shown(list(value))}"
        return (low, high), None
    else:
        raise ValueError(f"{field.name}: kind {kind!r} is converted by its owner, not by the schema")
    if kind in ("int", "float") and not _in_bounds(field, value):
        return None, f"must be {bounds_text(field)}, got {shown(value)}"
    return value, None


# ------------------------------------------------------------------------------------ dataclasses
def bounded(**bounds: Any) -> Any:
    """A dataclass field (no default) whose bounds ``dataclass_fields`` reads:
    ``crackProbability: float = bounded(low=0, high=1)``."""
    return dataclasses.field(metadata={"schema": bounds})


def dataclass_fields(cls: type) -> tuple[Field, ...]:
    """The fields of a dataclass whose attributes are bool, int, float or fixed tuples of floats
    (a list of n numbers), with the bounds ``bounded`` gave them: the dataclass stays the one
    statement of its keys."""
    kinds = {bool: "bool", int: "int", float: "float"}
    hints = typing.get_type_hints(cls)
    specs = []
    for attribute in dataclasses.fields(cls):
        hint, bounds = hints[attribute.name], attribute.metadata.get("schema", {})
        if hint in kinds:
            specs.append(Field(attribute.name, kinds[hint], **bounds))
        else:
            specs.append(Field(attribute.name, "numbers", length=len(typing.get_args(hint)), **bounds))
    return tuple(specs)


# ------------------------------------------------------------------------------------ documentation
def type_text(field: Field) -> str:
    """The "Type" cell of a documentation table."""
    if field.typeDoc:
        return field.typeDoc
    if field.kind == "choice":
        return " or ".join(f"`{c}`" for c in field.choices)
    kind = "str" if field.kind == "optstr" else field.kind
    bounds = bounds_text(field)
    text = f"{kind}, {bounds}" if " or " in bounds else f"{kind} {bounds}".strip()
    return f"{text} ({field.unit})" if field.unit else text


def default_text(field: Field) -> str:
    """The "Default" cell of a documentation table."""
    if field.defaultDoc:
        return field.defaultDoc
    default = field.default
    if isinstance(default, _Marker):
        return default.text
    if default is None:
        return "none"
    if isinstance(default, tuple):
        return f"`[{','.join(chr(34) + str(v) + chr(34) for v in default)}]`" if default else "empty"
    if isinstance(default, str):
        return f"`{default}`"
    if isinstance(default, float):
        return _number(default)
    return str(default)


def markdown_table(fields: Iterable[Field]) -> str:
    """The "Key | Type | Default | Meaning" table of ``fields``, one row each, in their order."""
    rows = ["| Key | Type | Default | Meaning |", "|---|---|---|---|"]
    rows += [f"| `{f.name}` | {type_text(f)} | {default_text(f)} | {f.doc} |" for f in fields]
    return "\n".join(rows) + "\n"


__all__ = [
    "DERIVED",
    "MAX_INT",
    "MODEL",
    "REQUIRED",
    "Field",
    "bounded",
    "bounds_text",
    "convert",
    "dataclass_fields",
    "default_text",
    "did_you_mean",
    "is_int",
    "is_number",
    "markdown_table",
    "type_text",
]
