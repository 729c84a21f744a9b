"""Give parameters of a Marlin steering file (and its includes) the values the calibration sets,
as the *effective* values Marlin will use, while every other byte stays the user's.

How each case is written (docs/STEERING.md says the same for users):

* The processor sets the parameter itself: its (first) ``<parameter>`` gets the new value, in
  the form it already uses (``value`` attribute or text). For a vector parameter further
  ``<parameter>`` elements of the same name, which Marlin would append, are removed.
* The value is written as ``${NAME}``: if every use of ``${NAME}`` in the files is a parameter
  that gets this same value, the ``<constant>`` is changed where it is defined (possibly in an
  included file such as ILDConfig's ``Calibration/*.xml``); otherwise the parameter's text is
  replaced by the number, and the constant stays as it was for its other users.
* The processor does not set it: a ``<parameter>`` is added at the end of the processor. If its
  ``<group>`` sets the parameter, a scalar needs nothing more (Marlin puts the processor's own
  value first and reads the first); for a vector the group's ``<parameter>`` is moved into every
  other processor of the group (appended to their own value, as Marlin would have), so that
  only this processor's value changes.
* Global parameters are set like a processor's own; ``steeringConstants`` change the
  ``<constant>``'s own value where it is defined.
* A processor the calibration adds (PfoAnalysis) goes at the end of the top file, and its entry
  in ``<execute>`` right after the entry (processor, or group reference) that runs the processor
  it must follow.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ILCDIRAC.CalibrationSystem.Utilities.marlin_xml import (
    Edit,
    Element,
    XmlError,
    append_children,
    apply,
    escape,
    format_value,
    insert_after,
    remove,
    set_value,
)
from ILCDIRAC.CalibrationSystem.Utilities.steering import (
    STEERING_FILE,
    Param,
    Processor,
    Steering,
    SteeringError,
    read_text,
)

_WHOLE_CONSTANT = re.compile(r"^\s*\$\{([^}]+)\}\s*$")


@dataclass(frozen=True)
class _Setting:
    processor: str | None  # None: the <global> section
    name: str
    text: str
    vector: bool


class SteeringEditor:
    """Collects the values to set, then writes every file once (``texts``)."""

    def __init__(self, steering: Steering):
        self.steering = steering
        self.settings: dict[tuple[str | None, str], _Setting] = {}
        self.constantValues: dict[str, str] = {}
        self.added: list[tuple[str, str, dict[str, str], str]] = []
        self.runAfter: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ what to set
    def set_parameters(self, processor: str, values: Mapping[str, Any], vectors: Collection[str] = ()) -> None:
        """Make ``values`` the effective parameters of ``processor``; names in ``vectors`` are
        vector parameters (Marlin concatenates a group's value to them)."""
        if processor not in self.steering.processors:
            raise SteeringError(f"processor {processor!r} is not defined in the steering file")
        for name, value in values.items():
            self.settings[processor, name] = _Setting(processor, name, _text(value), name in vectors)

    def set_globals(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            self.settings[None, name] = _Setting(None, name, _text(value), True)

    def set_constants(self, values: Mapping[str, str]) -> None:
        """Give constants new values where they are defined (Marlin's ``--constant.NAME=VALUE``)."""
        for name, value in values.items():
            if name not in self.steering.constants:
                raise SteeringError(f"constant {name!r} is not defined in the steering file")
            self.constantValues[name] = _text(value)

    def add_processor(self, name: str, kind: str, values: Mapping[str, Any], after: str) -> None:
        """Define a new processor and run it right after ``after``."""
        if name in self.steering.processors:
            raise SteeringError(f"cannot add processor {name!r}: the steering file defines one of that name")
        self.added.append((name, kind, {k: _text(v) for k, v in values.items()}, after))
        self.runAfter.append((name, after))

    def run_after(self, name: str, after: str) -> None:
        """Add ``name`` to <execute> right after the entry that runs ``after``."""
        self.runAfter.append((name, after))

    # ------------------------------------------------------------------ writing
    def texts(self) -> dict[str, str]:
        """Every file of the steering (top file and includes) with the changes made."""
        edits: dict[str, list[Edit]] = {name: [] for name in self.steering.files}
        new: dict[str | None, list[tuple[str, str]]] = {}
        sites: list[tuple[Param, str]] = []
        for setting in self.settings.values():
            self._plan(setting, edits, new, sites)
        self._write_sites(sites, edits)
        for name, text in self.constantValues.items():
            constant = self.steering.constants[name]
            edits[constant.file] += self._value_edits(constant.file, constant.element, text)
        for owner, lines in new.items():
            self._append(owner, lines, edits)
        self._added(edits)
        out = {}
        for name, xmlFile in self.steering.files.items():
            try:
                out[name] = apply(xmlFile.data, edits[name]) if edits[name] else xmlFile.data.decode("utf-8")
            except XmlError as exc:
                raise SteeringError(f"{name}: {exc}") from None
        return out

    def _plan(self, setting: _Setting, edits: dict[str, list[Edit]], new: dict, sites: list) -> None:
        processor: Processor | None = None
        if setting.processor is None:
            own = [p for p in self.steering.globals if p.name == setting.name]
            inherited: list[Param] = []
            owner = None
        else:
            processor = self.steering.processors[setting.processor]
            own, inherited = processor.own(setting.name), processor.inherited(setting.name)
            owner = setting.processor
        if own:
            sites.append((own[0], setting.text))
            if setting.vector:
                for extra in own[1:]:
                    edits[extra.file].append(remove(self.steering.files[extra.file].data, extra.element))
        else:
            new.setdefault(owner, []).append((setting.name, setting.text))
        if setting.vector and inherited and processor is not None:
            self._move_group_parameter(processor, setting.name, edits, new)

    def _move_group_parameter(self, processor: Processor, name: str, edits: dict[str, list[Edit]], new: dict) -> None:
        """Take a vector parameter out of the processor's group and give every other processor
        of the group the value it had (its own tokens, then the group's)."""
        groupParams = processor.inherited(name)
        for param in groupParams:
            edits[param.file].append(remove(self.steering.files[param.file].data, param.element))
        raw = " ".join(" ".join(p.raw.split()) for p in groupParams)
        for sibling in self.steering.processors.values():
            if sibling.group is not processor.group or sibling is processor:
                continue
            if (sibling.name, name) in self.settings:
                continue  # it gets its own value from the calibration
            own = sibling.own(name)
            if own:
                last = own[-1]
                joined = f"{' '.join(last.raw.split())} {raw}".strip()
                edits[last.file] += self._value_edits(last.file, last.element, joined)
            else:
                new.setdefault(sibling.name, []).append((name, raw))

    def _write_sites(self, sites: list[tuple[Param, str]], edits: dict[str, list[Edit]]) -> None:
        """Write each value where it is set, or into the constant it is written as when that
        constant serves only parameters that get this same value."""
        byConstant: dict[str, list[tuple[Param, str]]] = {}
        for param, text in sites:
            match = _WHOLE_CONSTANT.match(param.raw)
            if match and match.group(1) in self.steering.constants:
                byConstant.setdefault(match.group(1), []).append((param, text))
            else:
                edits[param.file] += self._value_edits(param.file, param.element, text)
        for name, uses in byConstant.items():
            constant = self.steering.constants[name]
            texts = {text for _, text in uses}
            sole = (len(texts) == 1 and "${" not in constant.raw and name not in self.constantValues
                    and self.steering.constant_uses(name) == len({id(p.element) for p, _ in uses}))
            if sole:
                edits[constant.file] += self._value_edits(constant.file, constant.element, texts.pop())
            else:
                for param, text in uses:
                    edits[param.file] += self._value_edits(param.file, param.element, text)

    def _value_edits(self, fileName: str, element: Element, text: str) -> list[Edit]:
        return set_value(self.steering.files[fileName].data, element, text)

    def _append(self, owner: str | None, lines: list[tuple[str, str]], edits: dict[str, list[Edit]]) -> None:
        if owner is None:
            node = self.steering.globalNode
            element, fileName, siblings = node.element, node.file, self.steering.globals
        else:
            processor = self.steering.processors[owner]
            element, fileName = processor.element, processor.file
            siblings = [p for p in processor.params if p.group is None]
        data = self.steering.files[fileName].data
        useAttribute = siblings[-1].element.attrs.get("value") is not None if siblings else True
        edits[fileName].append(append_children(data, element, [_parameter(n, t, useAttribute) for n, t in lines]))

    def _added(self, edits: dict[str, list[Edit]]) -> None:
        top = self.steering.files[self.steering.top]
        for name, kind, values, _ in self.added:
            body = b"".join(b"\n    " + _parameter(n, t, True) for n, t in values.items())
            block = f'<processor name="{name}" type="{kind}">'.encode() + body + b"\n  </processor>"
            edits[top.name].append(append_children(top.data, top.root, [block]))
        for name, after in self.runAfter:
            entry = self.steering.executed(after)
            if entry is None:
                raise SteeringError(f"cannot run {name!r} after {after!r}: {after!r} is not run by <execute>")
            data = self.steering.files[entry.file].data
            edits[entry.file].append(insert_after(data, entry.element, f'<processor name="{name}"/>'.encode()))


def _parameter(name: str, text: str, useAttribute: bool) -> bytes:
    if useAttribute:
        return f'<parameter name="{name}" value="'.encode() + escape(text, ord('"')) + b'"/>'
    return f'<parameter name="{name}">'.encode() + escape(text) + b"</parameter>"


def _text(value: Any) -> str:
    try:
        return format_value(value)
    except XmlError as exc:
        raise SteeringError(str(exc)) from None


# ------------------------------------------------------------------------------------ one text
def set_processor_parameters(
    text: str, processor: str, values: Mapping[str, Any], vectors: Collection[str] = ()
) -> str:
    """A steering file that includes nothing, given as text, with the processor's values set."""
    editor = SteeringEditor(read_text(text))
    editor.set_parameters(processor, values, vectors)
    return editor.texts()[STEERING_FILE]


def set_global_parameters(text: str, values: Mapping[str, Any]) -> str:
    """A steering file that includes nothing, given as text, with global parameters set."""
    editor = SteeringEditor(read_text(text))
    editor.set_globals(values)
    return editor.texts()[STEERING_FILE]


__all__ = ["SteeringEditor", "set_global_parameters", "set_processor_parameters"]
