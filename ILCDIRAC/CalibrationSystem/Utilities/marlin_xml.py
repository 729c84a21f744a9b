"""Marlin's XML files located byte by byte, and edited by splicing those bytes.

The user's files are the reference: whatever the calibration does not set must reach Marlin
exactly as the user wrote it, comments and layout included. So a file is parsed only to
*locate* its elements (offsets of tags, attribute values and text in its UTF-8 bytes), and every
change is a splice of those bytes; nothing is ever re-serialised.

Marlin reads its files with TinyXML, which is more lenient than an XML parser: a comment may
contain ``--`` (CLDConfig's licence header does), and an included file is a fragment with any
number of top-level elements (ILDConfig's ``Calibration/*.xml`` are lists of ``<constant>``).
Both are accepted here: comment contents are blanked before expat sees them (same length, so
the offsets and line numbers stay those of the file), and a fragment is read inside a synthetic
root element, its own XML declaration blanked.
"""
from __future__ import annotations

import math
import numbers
import re
import xml.parsers.expat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Deepest element nesting accepted (steering files nest a handful of levels; the bound keeps the
#: recursive walks over the tree safe on files nobody checked).
MAX_DEPTH = 100
_FRAGMENT_ROOT = b"<marlin-include>"
_FRAGMENT_END = b"</marlin-include>"
_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")


class XmlError(ValueError):
    """A file that Marlin could not read (not XML even by TinyXML's lenient rules)."""


@dataclass(eq=False)
class Element:
    """One element of a file: its tag, attributes and where its parts are in the file's bytes."""

    tag: str
    attrs: dict[str, str]
    start: int  # offset of "<"
    startEnd: int  # offset just after the start tag's ">"
    parent: Element | None
    selfClosing: bool
    line: int
    endStart: int = -1  # offset of "</" (the start-tag end for a self-closing element)
    end: int = -1  # offset just after the element
    children: list[Element] = field(default_factory=list)
    textParts: list[str] = field(default_factory=list)

    def iter(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            yield from child.iter()

    def text(self) -> str:
        """The text content as Marlin joins it: text pieces separated by a space where a comment
        or child element interrupts them (TinyXML gives those as separate child nodes)."""
        return "".join(self.textParts)


@dataclass
class XmlFile:
    """One parsed file: its name (a relative path), bytes and located elements.

    ``root`` is the document element, or for a fragment a synthetic element whose children are
    the fragment's top-level elements."""

    name: str
    data: bytes
    root: Element


def parse(name: str, text: str, *, fragment: bool = False) -> XmlFile:
    """Locate the elements of ``text`` (a whole document, or a fragment Marlin includes)."""
    if not isinstance(text, str):
        raise XmlError(f"{name}: a steering file must be text, not {type(text).__name__}")
    data = text.encode("utf-8")
    masked = without_comments(data)
    offset = 0
    if fragment:
        declaration = _DECLARATION.match(masked)
        if declaration:
            masked = b" " * declaration.end() + masked[declaration.end():]
        masked = _FRAGMENT_ROOT + masked + _FRAGMENT_END
        offset = len(_FRAGMENT_ROOT)
    stack: list[Element] = []
    roots: list[Element] = []
    parser = xml.parsers.expat.ParserCreate(encoding="UTF-8")

    def start(tag: str, attrs: dict[str, str]) -> None:
        if len(stack) >= MAX_DEPTH:
            raise XmlError(
                f"{name}: elements are nested deeper than {MAX_DEPTH} levels (line {parser.CurrentLineNumber})"
            )
        begin = parser.CurrentByteIndex
        close = _tag_end(masked, begin)
        parent = stack[-1] if stack else None
        element = Element(tag, attrs, begin - offset, close - offset, parent, masked[close - 2] == ord("/"),
                          parser.CurrentLineNumber)
        (parent.children if parent else roots).append(element)
        if parent is not None and parent.textParts:
            parent.textParts.append(" ")
        stack.append(element)

    def end(tag: str) -> None:
        element = stack.pop()
        if element.selfClosing:
            element.endStart = element.end = element.startEnd
        else:
            element.endStart = parser.CurrentByteIndex - offset
            element.end = masked.index(b">", parser.CurrentByteIndex) + 1 - offset

    def characters(chars: str) -> None:
        if stack:
            stack[-1].textParts.append(chars)

    def comment(_: str) -> None:
        if stack:
            stack[-1].textParts.append(" ")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.CommentHandler = comment
    try:
        parser.Parse(masked, True)
    except xml.parsers.expat.ExpatError as exc:
        raise XmlError(
            f"{name} is not well-formed XML (line {exc.lineno}): {xml.parsers.expat.ErrorString(exc.code)}"
        ) from None
    if fragment:
        wrapper = roots[0]
        for child in wrapper.children:
            child.parent = None
        return XmlFile(name, data, wrapper)
    return XmlFile(name, data, roots[0])


def without_comments(data: bytes) -> bytes:
    """``data`` with every comment's content blanked (newlines kept), as TinyXML ends a comment
    at the first ``-->`` whatever it contains; CDATA sections are left alone."""
    out = bytearray(data)
    i = 0
    while True:
        comment, cdata = data.find(b"<!--", i), data.find(b"<![CDATA[", i)
        if comment < 0:
            return bytes(out)
        if 0 <= cdata < comment:
            close = data.find(b"]]>", cdata)
            if close < 0:
                return bytes(out)
            i = close + 3
            continue
        close = data.find(b"-->", comment + 4)
        if close < 0:
            return bytes(out)
        for k in range(comment + 4, close):
            if out[k] not in b"\r\n":
                out[k] = 0x20
        i = close + 3


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
    raise XmlError("unterminated start tag")  # expat refuses such text first


_ATTRIBUTE = re.compile(rb"""([^\s=/>]+)\s*=\s*("[^"]*"|'[^']*')""")


def attribute_span(data: bytes, element: Element, name: str) -> tuple[int, int, int] | None:
    """(start, end, quote) of an attribute value between its quotes, or None."""
    tag = re.match(rb"<[^\s/>]+", data[element.start : element.startEnd])
    assert tag is not None, "the parser records an element's span from its '<name'"
    for match in _ATTRIBUTE.finditer(data, element.start + tag.end(), element.startEnd):
        if match.group(1).decode() == name:
            return match.start(2) + 1, match.end(2) - 1, match.group(2)[0]
    return None


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
            raise XmlError(f"cannot write the non-finite number {value!r} into a steering file")
        return repr(number)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return " ".join(format_value(v) for v in value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return format_value(value.tolist())
    raise XmlError(f"cannot write a {type(value).__name__} ({value!r}) into a steering file")


def escape(text: str, quote: int | None = None) -> bytes:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote == ord('"'):
        text = text.replace('"', "&quot;")
    elif quote == ord("'"):
        text = text.replace("'", "&apos;")
    return text.encode("utf-8")


# ------------------------------------------------------------------------------------ edits
Edit = tuple[int, int, bytes]


def indent_of(data: bytes, offset: int) -> bytes | None:
    """The whitespace before ``offset`` on its line, if only whitespace precedes it there."""
    i = offset
    while i > 0 and data[i - 1] in b" \t":
        i -= 1
    return data[i:offset] if i == 0 or data[i - 1] == ord("\n") else None


def set_value(data: bytes, element: Element, text: str, valueName: str = "value") -> list[Edit]:
    """Edits that give an element (a <parameter> or <constant>) the value ``text`` in the form it
    already uses: its ``value`` attribute if it has one, else its text."""
    span = attribute_span(data, element, valueName)
    if span is not None:
        begin, end, quote = span
        return [(begin, end, escape(text, quote))]
    if element.selfClosing:
        slash = element.startEnd - 2
        spaced = data[slash - 1 : slash].isspace()
        insertion = (b"" if spaced else b" ") + f'{valueName}="'.encode() + escape(text, ord('"')) + b'"'
        return [(slash, slash, insertion + (b" " if spaced else b""))]
    inner = data[element.startEnd : element.endStart]
    if b"<" in inner:  # comments or CDATA inside: replace the whole content
        return [(element.startEnd, element.endStart, escape(text))]
    lead = len(inner) - len(inner.lstrip())
    trail = len(inner) - len(inner.rstrip())
    if lead == len(inner):
        return [(element.startEnd, element.endStart, escape(text))]
    return [(element.startEnd + lead, element.endStart - trail, escape(text))]


def remove(data: bytes, element: Element) -> Edit:
    """An edit that removes the element, and its line when it stands alone on it."""
    begin, end = element.start, element.end
    indent = indent_of(data, begin)
    newline = data.find(b"\n", end)
    rest = data[end : newline if newline >= 0 else len(data)]
    if indent is not None and not rest.strip():
        return begin - len(indent), (newline + 1 if newline >= 0 else len(data)), b""
    return begin, end, b""


def append_children(data: bytes, owner: Element, lines: list[bytes]) -> Edit:
    """One edit that appends ``lines`` (each one element's XML) as the last children of
    ``owner``, one per line, indented like its existing children."""
    ownerIndent = indent_of(data, owner.start) or b""
    if owner.children:
        last = owner.children[-1]
        indent = indent_of(data, last.start)
        if indent is None:
            indent = ownerIndent + b"  "
        return last.end, last.end, b"".join(b"\n" + indent + line for line in lines)
    indent = ownerIndent + b"  "
    text = b"".join(b"\n" + indent + line for line in lines)
    if owner.selfClosing:
        slash = owner.startEnd - 2
        while data[slash - 1 : slash].isspace():
            slash -= 1
        return slash, owner.startEnd, b">" + text + b"\n" + ownerIndent + f"</{owner.tag}>".encode()
    inner = data[owner.startEnd : owner.endStart]
    trail = len(inner) - len(inner.rstrip())
    position = owner.endStart - trail
    suffix = b"" if b"\n" in inner[len(inner) - trail :] else b"\n" + ownerIndent
    return position, position, text + suffix


def insert_after(data: bytes, sibling: Element, line: bytes) -> Edit:
    """An edit that puts ``line`` (one element's XML) right after ``sibling``, on its own line
    with the sibling's indentation."""
    indent = indent_of(data, sibling.start)
    return sibling.end, sibling.end, (b"\n" + indent if indent is not None else b" ") + line


def apply(data: bytes, edits: Iterable[Edit]) -> str:
    """The text after the edits; edits must not overlap (insertions at one offset keep their order)."""
    ordered = sorted(enumerate(edits), key=lambda item: (item[1][0], item[1][1], item[0]))
    pieces, cursor = [], 0
    for _, (begin, end, text) in ordered:
        if begin < cursor:
            raise XmlError("internal error: overlapping steering edits")
        pieces += [data[cursor:begin], text]
        cursor = end
    pieces.append(data[cursor:])
    return b"".join(pieces).decode("utf-8")


__all__ = [
    "Edit",
    "Element",
    "XmlError",
    "XmlFile",
    "append_children",
    "apply",
    "attribute_span",
    "escape",
    "format_value",
    "indent_of",
    "insert_after",
    "parse",
    "remove",
    "set_value",
    "without_comments",
]
