"""Read a user's Marlin steering XML and write calibration constants into it, surgically.

The user's file is the reference: everything the calibration does not set must reach Marlin
exactly as the user wrote it, comments and layout included. So the file is parsed with expat
only to *locate* elements (byte offsets of tags, attribute values and text), and each change is
a splice of those bytes; the tree is never re-serialised.

Marlin semantics honoured here (Marlin's XMLParser): a parameter's value is its ``value``
attribute if present, else its text; processors are defined under ``<marlin>`` or inside a
``<group>`` whose ``<parameter>`` children Marlin *appends* to every processor of the group (so a
name set both in a group and in its processor would concatenate: refused here); ``<execute>``
lists processors and group references, possibly inside ``<if>``.
"""
from __future__ import annotations

import difflib
import math
import numbers
import re
import xml.parsers.expat
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

#: DDCaloDigi parameters the calibration may set.
DIGI_CONSTANTS = (
    "CalibrECAL",
    "ECALEndcapCorrectionFactor",
    "CalibrHCALBarrel",
    "CalibrHCALEndcap",
    "CalibrHCALOther",
    "HCALEndcapCorrectionFactor",
)
#: DDMarlinPandora parameters the calibration may set.
PANDORA_CONSTANTS = (
    "ECalToMipCalibration",
    "HCalToMipCalibration",
    "MuonToMipCalibration",
    "ECalToEMGeVCalibration",
    "HCalToEMGeVCalibration",
    "ECalToHadGeVCalibrationBarrel",
    "ECalToHadGeVCalibrationEndCap",
    "HCalToHadGeVCalibration",
    "MaxHCalHitHadronicEnergy",
    "MaxClusterEnergyToApplySoftComp",
)
#: Constant name -> "digi" (DDCaloDigi) or "pandora" (DDMarlinPandora).
CONSTANT_PROCESSOR: dict[str, str] = {
    **{name: "digi" for name in DIGI_CONSTANTS},
    **{name: "pandora" for name in PANDORA_CONSTANTS},
}
#: The constants the procedure fits; every detector model must give a starting value for each.
CALIBRATED_CONSTANTS = (
    "CalibrECAL",
    "ECALEndcapCorrectionFactor",
    "CalibrHCALBarrel",
    "CalibrHCALEndcap",
    "CalibrHCALOther",
    "ECalToMipCalibration",
    "HCalToMipCalibration",
    "MuonToMipCalibration",
    "ECalToEMGeVCalibration",
    "HCalToEMGeVCalibration",
    "ECalToHadGeVCalibrationBarrel",
    "ECalToHadGeVCalibrationEndCap",
    "HCalToHadGeVCalibration",
)
SOFT_COMP = "MaxClusterEnergyToApplySoftComp"
#: DDCaloDigi's layer-group boundaries for CalibrECAL: layer < L0 -> entry 0, L0 <= layer < L1 -> entry 1.
ECAL_LAYERS = "ECALLayers"


class SteeringError(ValueError):
    """The steering text is not usable: not XML, no such processor, an ambiguous parameter."""


# ------------------------------------------------------------------------------------ parsing
@dataclass
class _Element:
    tag: str
    attrs: dict[str, str]
    start: int  # offset of "<"
    startEnd: int  # offset just after the start tag's ">"
    parent: "_Element | None"
    selfClosing: bool
    endStart: int = -1  # offset of "</" (the start-tag end for a self-closing element)
    end: int = -1  # offset just after the element
    children: list["_Element"] = field(default_factory=list)
    textParts: list[str] = field(default_factory=list)

    def ancestors(self) -> Iterator["_Element"]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def iter(self) -> Iterator["_Element"]:
        yield self
        for child in self.children:
            yield from child.iter()

    def params(self) -> list["_Element"]:
        return [c for c in self.children if c.tag == "parameter"]


class _Document:
    """The located elements of one steering text (offsets into its UTF-8 bytes)."""

    def __init__(self, xmlText: str) -> None:
        if not isinstance(xmlText, str):
            raise SteeringError(f"the steering file must be text, not {type(xmlText).__name__}")
        self.data = xmlText.encode("utf-8")
        self.root: _Element | None = None
        stack: list[_Element] = []
        parser = xml.parsers.expat.ParserCreate(encoding="UTF-8")

        def start(tag: str, attrs: dict[str, str]) -> None:
            begin = parser.CurrentByteIndex
            close = _tag_end(self.data, begin)
            element = _Element(tag, attrs, begin, close, stack[-1] if stack else None, self.data[close - 2] == ord("/"))
            if stack:
                stack[-1].children.append(element)
            else:
                self.root = element
            stack.append(element)

        def end(tag: str) -> None:
            element = stack.pop()
            if element.selfClosing:
                element.endStart, element.end = element.startEnd, element.startEnd
            else:
                element.endStart = parser.CurrentByteIndex
                element.end = self.data.index(b">", element.endStart) + 1

        def text(chars: str) -> None:
            if stack:
                stack[-1].textParts.append(chars)

        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = text
        try:
            parser.Parse(self.data, True)
        except xml.parsers.expat.ExpatError as exc:
            raise SteeringError(f"the steering file is not well-formed XML: {exc}") from None
        if self.root is None or self.root.tag != "marlin":
            found = self.root.tag if self.root is not None else "nothing"
            raise SteeringError(f"not a Marlin steering file: the root element is <{found}>, not <marlin>")

    def processors(self) -> list[_Element]:
        """Processor definitions (not the references inside <execute>), in document order."""
        return [
            e for e in self.root.iter()
            if e.tag == "processor" and not any(a.tag == "execute" for a in e.ancestors())
        ]

    def processor(self, name: str) -> _Element:
        matches = [p for p in self.processors() if p.attrs.get("name") == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise SteeringError(f"processor {name!r} is defined {len(matches)} times in the steering file")
        known = [p.attrs.get("name", "") for p in self.processors()]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SteeringError(
            f"processor {name!r} not found in the steering file{hint}; defined processors: {', '.join(known) or 'none'}"
        )

    def section(self, tag: str) -> _Element:
        found = [c for c in self.root.children if c.tag == tag]
        if not found:
            raise SteeringError(f"the steering file has no <{tag}> section")
        return found[0]

    def groups(self) -> dict[str, _Element]:
        return {g.attrs.get("name", ""): g for g in self.root.children if g.tag == "group"}


def _tag_end(data: bytes, begin: int) -> int:
    """Offset just after the ">" closing the start tag at ``begin`` (quotes may hold ">")."""
    quote = None
    for i in range(begin + 1, len(data)):
        c = data[i]
        if quote is not None:
            if c == quote:
                quote = None
        elif c in (0x22, 0x27):
            quote = c
        elif c == 0x3E:
            return i + 1
    raise SteeringError("unterminated start tag")  # expat would have refused the text first


_ATTRIBUTE = re.compile(rb"""([^\s=/>]+)\s*=\s*("[^"]*"|'[^']*')""")


def _attribute_span(data: bytes, element: _Element, name: str) -> tuple[int, int, int] | None:
    """(start, end, quote) of the attribute value between the quotes, or None."""
    tagName = re.match(rb"<[^\s/>]+", data[element.start : element.startEnd])
    for match in _ATTRIBUTE.finditer(data, element.start + tagName.end(), element.startEnd):
        if match.group(1).decode() == name:
            return match.start(2) + 1, match.end(2) - 1, match.group(2)[0]
    return None


def _value(element: _Element) -> str:
    """A parameter's value as Marlin reads it: the value attribute, else the element text."""
    if "value" in element.attrs:
        return element.attrs["value"]
    return "".join(element.textParts).strip()


# ------------------------------------------------------------------------------------ values
def format_value(value: Any) -> str:
    """Marlin's text for a value: floats at repr precision, lists space-separated, bools true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise SteeringError(f"cannot write the non-finite number {value!r} into a steering file")
        return repr(number)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return " ".join(format_value(v) for v in value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return format_value(value.tolist())
    raise SteeringError(f"cannot write a {type(value).__name__} ({value!r}) into a steering file")


def _escape(text: str, quote: int | None) -> bytes:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote == ord('"'):
        text = text.replace('"', "&quot;")
    elif quote == ord("'"):
        text = text.replace("'", "&apos;")
    return text.encode("utf-8")


# ------------------------------------------------------------------------------------ editing
def _indent_of(data: bytes, offset: int) -> bytes | None:
    """The whitespace before ``offset`` on its line, if only whitespace precedes it there."""
    i = offset
    while i > 0 and data[i - 1] in b" \t":
        i -= 1
    return data[i:offset] if i == 0 or data[i - 1] == ord("\n") else None


def _set_value_edits(data: bytes, element: _Element, text: str) -> list[tuple[int, int, bytes]]:
    """Edits that give an existing <parameter> the value ``text`` in the form it already uses."""
    span = _attribute_span(data, element, "value")
    if span is not None:
        begin, end, quote = span
        return [(begin, end, _escape(text, quote))]
    if element.selfClosing:
        slash = element.startEnd - 2
        before = data[slash - 1 : slash]
        insertion = (b"" if before.isspace() else b" ") + b'value="' + _escape(text, ord('"')) + b'"'
        return [(slash, slash, insertion + (b" " if before.isspace() else b""))]
    inner = data[element.startEnd : element.endStart]
    if b"<" in inner:  # comments or CDATA inside: replace the whole content
        return [(element.startEnd, element.endStart, _escape(text, None))]
    lead = len(inner) - len(inner.lstrip())
    trail = len(inner) - len(inner.rstrip())
    if lead == len(inner):
        return [(element.startEnd, element.endStart, _escape(text, None))]
    return [(element.startEnd + lead, element.endStart - trail, _escape(text, None))]


def _new_parameter(name: str, text: str, useAttribute: bool) -> bytes:
    if useAttribute:
        return f'<parameter name="{name}" value="'.encode() + _escape(text, ord('"')) + b'"/>'
    return f'<parameter name="{name}">'.encode() + _escape(text, None) + b"</parameter>"


def _add_parameters_edit(data: bytes, owner: _Element, new: list[tuple[str, str]]) -> tuple[int, int, bytes]:
    """One edit that appends parameters to ``owner`` in the style of its existing parameters."""
    params = owner.params()
    useAttribute = (params[-1].attrs.get("value") is not None) if params else True
    ownerIndent = _indent_of(data, owner.start)
    if owner.children:
        last = owner.children[-1]
        indent = _indent_of(data, last.start)
        if indent is None:
            indent = (ownerIndent or b"") + b"  "
        text = b"".join(b"\n" + indent + _new_parameter(n, v, useAttribute) for n, v in new)
        return last.end, last.end, text
    indent = (ownerIndent or b"") + b"  "
    lines = b"".join(b"\n" + indent + _new_parameter(n, v, useAttribute) for n, v in new)
    if owner.selfClosing:
        slash = owner.startEnd - 2
        while data[slash - 1 : slash].isspace():
            slash -= 1
        closing = b"\n" + (ownerIndent or b"") + f"</{owner.tag}>".encode()
        return slash, owner.startEnd, b">" + lines + closing
    inner = data[owner.startEnd : owner.endStart]
    trail = len(inner) - len(inner.rstrip())
    position = owner.endStart - trail
    suffix = b"" if b"\n" in inner[len(inner) - trail :] else b"\n" + (ownerIndent or b"")
    return position, position, lines + suffix


def _apply(data: bytes, edits: Iterable[tuple[int, int, bytes]]) -> str:
    ordered = sorted(edits, key=lambda e: (e[0], e[1]))
    for (a0, a1, _), (b0, _, _) in zip(ordered, ordered[1:]):
        if b0 < a1:
            raise SteeringError("internal error: overlapping steering edits")
    out, cursor = [], 0
    for begin, end, text in ordered:
        out += [data[cursor:begin], text]
        cursor = end
    out.append(data[cursor:])
    return b"".join(out).decode("utf-8")


def _edit_parameters(doc: _Document, owner: _Element, values: Mapping[str, Any], where: str) -> str:
    edits: list[tuple[int, int, bytes]] = []
    missing: list[tuple[str, str]] = []
    groupParams = {}
    if owner.parent is not None and owner.parent.tag == "group":
        groupParams = {p.attrs.get("name"): p for p in owner.parent.params()}
    for name, value in values.items():
        text = format_value(value)
        found = [p for p in owner.params() if p.attrs.get("name") == name]
        if len(found) > 1:
            raise SteeringError(f"{where} sets parameter {name!r} {len(found)} times (Marlin would concatenate them)")
        if name in groupParams:
            raise SteeringError(
                f"{where}: parameter {name!r} is set in its group {owner.parent.attrs.get('name')!r}, which Marlin "
                f"appends to every processor of the group; move it into the processor to let the calibration set it"
            )
        if found:
            edits += _set_value_edits(doc.data, found[0], text)
        else:
            missing.append((name, text))
    if missing:
        edits.append(_add_parameters_edit(doc.data, owner, missing))
    return _apply(doc.data, edits)


# ------------------------------------------------------------------------------------ public API
def read_parameters(xml_text: str, processor_name: str) -> dict[str, str]:
    """The processor's parameters as Marlin reads them (group parameters included), raw text."""
    doc = _Document(xml_text)
    processor = doc.processor(processor_name)
    params = {p.attrs.get("name", ""): _value(p) for p in processor.params()}
    if processor.parent is not None and processor.parent.tag == "group":
        for p in processor.parent.params():
            name = p.attrs.get("name", "")
            params[name] = f"{params[name]} {_value(p)}".strip() if name in params else _value(p)
    return params


def read_global_parameters(xml_text: str) -> dict[str, str]:
    """The <global> section's parameters, raw text."""
    doc = _Document(xml_text)
    return {p.attrs.get("name", ""): _value(p) for p in doc.section("global").params()}


def set_processor_parameters(xml_text: str, processor_name: str, values: Mapping[str, Any]) -> str:
    """Give the processor's parameters these values; add the parameters it does not have yet."""
    doc = _Document(xml_text)
    return _edit_parameters(doc, doc.processor(processor_name), values, f"processor {processor_name!r}")


def set_global_parameters(xml_text: str, values: Mapping[str, Any]) -> str:
    """Set global parameters such as LCIOInputFiles (a list), MaxRecordNumber and SkipNEvents."""
    doc = _Document(xml_text)
    return _edit_parameters(doc, doc.section("global"), values, "the <global> section")


def processor_names_by_type(xml_text: str, processor_type: str) -> list[str]:
    """Names of the processors of a type (e.g. "DDCaloDigi"), in document order."""
    doc = _Document(xml_text)
    return [p.attrs.get("name", "") for p in doc.processors() if p.attrs.get("type") == processor_type]


def executed_processors(xml_text: str) -> list[str]:
    """The processors <execute> runs, in order, with group references expanded and <if> entered."""
    doc = _Document(xml_text)
    groups = doc.groups()
    names: list[str] = []

    def walk(node: _Element) -> None:
        for child in node.children:
            if child.tag == "processor":
                names.append(child.attrs.get("name", ""))
            elif child.tag == "group":
                name = child.attrs.get("name", "")
                if name not in groups:
                    raise SteeringError(f"<execute> refers to group {name!r}, which is not defined")
                names.extend(p.attrs.get("name", "") for p in groups[name].children if p.tag == "processor")
            elif child.tag == "if":
                walk(child)

    walk(doc.section("execute"))
    return names


def processor_problems(xml_text: str, processor_names: Sequence[str]) -> list[str]:
    """Why the named processors cannot take the calibration's constants (empty when all is well):
    not XML, not defined, or defined but not executed (the constants would silently not act)."""
    try:
        executed = set(executed_processors(xml_text))
        doc = _Document(xml_text)
    except SteeringError as exc:
        return [str(exc)]
    problems = []
    for name in processor_names:
        try:
            doc.processor(name)
        except SteeringError as exc:
            problems.append(str(exc))
            continue
        if name not in executed:
            problems.append(f"processor {name!r} is defined but not run by the <execute> section")
    return problems


def ecal_layers(n_thin_layers: int, n_thick_layers: int, first_layer: int = 1) -> str:
    """DDCaloDigi's ECALLayers for thin layers followed by thick ones.

    DDCaloDigi puts a hit of layer number ``l`` in CalibrECAL group 0 if ``l < L0``, group 1 if
    ``L0 <= l < L1``. With layers numbered from ``first_layer`` (1 in the CLIC/CLD DD4hep drivers),
    the thin layers are first_layer .. first_layer+nThin-1, so L0 = first_layer + nThin and
    L1 = L0 + nThick. (ILCDIRAC wrote "nThin nThin+nThick+1", which is this for 0-based numbering
    and puts the last thin layer into the thick group for 1-based numbering.)
    """
    low = first_layer + n_thin_layers
    return f"{low} {low + n_thick_layers}"


def apply_constants(
    xml_text: str,
    constants: Mapping[str, Any],
    *,
    digi_name: str,
    pandora_name: str,
    n_thin_layers: int | None = None,
    n_thick_layers: int = 0,
    first_ecal_layer: int = 1,
) -> str:
    """Write each constant into its processor (DDCaloDigi or DDMarlinPandora) under its Marlin name.

    ``ECALLayers`` is written only when there are thick layers (as ILCDIRAC did): with one layer
    type both CalibrECAL entries are equal and the user's value does not matter.
    """
    unknown = [name for name in constants if name not in CONSTANT_PROCESSOR]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(CONSTANT_PROCESSOR), n=1, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise SteeringError(f"unknown calibration constants: {', '.join(hints)}")
    digi = {name: v for name, v in constants.items() if CONSTANT_PROCESSOR[name] == "digi"}
    pandora = {name: v for name, v in constants.items() if CONSTANT_PROCESSOR[name] == "pandora"}
    if n_thick_layers:
        if n_thin_layers is None:
            raise SteeringError("ECALLayers needs the number of thin ECAL layers when there are thick layers")
        digi[ECAL_LAYERS] = ecal_layers(n_thin_layers, n_thick_layers, first_ecal_layer)
    if digi:
        xml_text = set_processor_parameters(xml_text, digi_name, digi)
    if pandora:
        xml_text = set_processor_parameters(xml_text, pandora_name, pandora)
    return xml_text


def final_steering(
    xml_text: str,
    constants: Mapping[str, Any],
    settings: Mapping[str, Any],
    user_soft_comp_value: Any = None,
) -> str:
    """The steering file handed back to the user: their file with the calibrated constants.

    The calibration runs with ``MaxClusterEnergyToApplySoftComp = 0`` (software compensation off);
    unlike ILCDIRAC (which left the 0 in), the user's own value comes back: ``user_soft_comp_value``
    if given, else the value in ``xml_text`` (which must then be the user's original file), else
    the parameter is left out. ``settings`` is the resolved settings dict (``Settings.to_dict()``).
    """
    digiName = settings["DDCaloDigiName"]
    pandoraName = settings["DDPandoraPFANewProcessorName"]
    if user_soft_comp_value is None:
        user_soft_comp_value = read_parameters(xml_text, pandoraName).get(SOFT_COMP)
    final = {name: v for name, v in constants.items() if name != SOFT_COMP}
    if user_soft_comp_value is not None:
        final[SOFT_COMP] = user_soft_comp_value
    return apply_constants(
        xml_text,
        final,
        digi_name=digiName,
        pandora_name=pandoraName,
        n_thin_layers=settings["nEcalThinLayers"],
        n_thick_layers=settings["nEcalThickLayers"],
        first_ecal_layer=settings.get("ecalFirstLayerNumber", 1),
    )


__all__ = [
    "CALIBRATED_CONSTANTS",
    "CONSTANT_PROCESSOR",
    "DIGI_CONSTANTS",
    "PANDORA_CONSTANTS",
    "SteeringError",
    "apply_constants",
    "ecal_layers",
    "executed_processors",
    "final_steering",
    "format_value",
    "processor_names_by_type",
    "processor_problems",
    "read_global_parameters",
    "read_parameters",
    "set_global_parameters",
    "set_processor_parameters",
]
