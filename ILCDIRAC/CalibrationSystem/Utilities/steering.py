"""A Marlin steering file read as Marlin reads it: the one reader of the whole system.

The submission and the service check a user's steering with it, the worker and the final
result edit it through ``steering_editor`` (which builds on it), and the emulator takes its
parameters from it. It follows Marlin's own parser (``XMLParser.cc``), in its order:

* ``<constants>``: each ``<constant>`` (``value`` attribute, else its text) is expanded with the
  constants defined *before* it; a name defined twice is an error. An ``<include ref>`` inside
  ``<constants>`` contributes the ``<constant>`` elements of the included file.
* ``${name}`` is replaced in constant values, include refs, parameter values, the processor
  names and conditions of ``<execute>`` (not in the ``name`` of a processor definition, which
  Marlin takes literally); an unknown name is an error wherever it appears. Marlin has no
  ``$ENV{...}``: such text stays as written.
* ``<include ref="...">`` anywhere else (outside ``<constants>``) is replaced by the top-level
  elements of the included file. The ref must end in ``.xml`` and is relative to the folder of
  the top steering file; an include inside an included file is refused, as Marlin refuses it.
* ``<execute>``: ``<group name>`` references become the group's processors, ``<if condition>``
  blocks are flattened with their conditions combined (``inner && (outer)``); a processor listed
  twice is an error. Conditions are evaluated as far as the file decides them: ``true``/
  ``false`` (after constant substitution) are known, a processor's result is not.
* Processors are the ``<processor>`` elements at the top level, and the processors of the
  ``<group>``s that come *after* ``<execute>`` (Marlin expands only those), each followed by its
  group's ``<parameter>``s. A parameter's tokens are its own, then the group's: a processor's own
  scalar value wins, vector values concatenate. A processor defined twice, or run but not
  defined, is an error.
"""
from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ILCDIRAC.CalibrationSystem.Utilities.marlin_xml import Element, XmlError, XmlFile, parse, without_comments
from ILCDIRAC.CalibrationSystem.Utilities.paths import PathError, relative_path

#: The name under which a calibration stores (and a worker writes) the user's top steering file.
STEERING_FILE = "steering.xml"
#: Longest value a ${...} substitution may produce (characters): constants built from constants
#: could otherwise grow exponentially on the service.
MAX_EXPANDED_LENGTH = 100_000
#: Deepest parenthesis nesting of a processor condition the reader evaluates.
MAX_CONDITION_DEPTH = 50


class SteeringError(ValueError):
    """The steering file (or a file it includes) is one Marlin would refuse, or lacks what the
    calibration needs; the message names the file and line."""


class FileSource(Protocol):
    """Where the reader finds the top steering file and its includes: relative path -> text."""

    def get(self, name: str) -> str | None: ...


class FolderFiles:
    """The files below one folder on this machine, looked up by relative path (only below it)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def get(self, name: str) -> str | None:
        try:
            path = self.folder / relative_path(name)
        except PathError:
            return None
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError):
            return None


# ------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class Param:
    """One ``<parameter>`` as Marlin reads it."""

    name: str
    raw: str  # as written: the value attribute, else the text (XML entities resolved)
    tokens: tuple[str, ...]  # after ${...} substitution, split on white space
    element: Element
    file: str
    group: str | None = None  # the group it is inherited from, if any

    @property
    def value(self) -> str:
        return " ".join(self.tokens)


@dataclass
class Processor:
    """A processor definition with its parameters in Marlin's order (own, then its group's)."""

    name: str
    type: str
    element: Element
    file: str
    group: Element | None
    groupName: str | None
    params: list[Param]

    def own(self, name: str) -> list[Param]:
        return [p for p in self.params if p.name == name and p.group is None]

    def inherited(self, name: str) -> list[Param]:
        return [p for p in self.params if p.name == name and p.group is not None]

    def tokens(self, name: str) -> list[str] | None:
        """The parameter's tokens as the processor receives them, or None if it is not set."""
        found = [p for p in self.params if p.name == name]
        return [t for p in found for t in p.tokens] if found else None

    def value(self, name: str) -> str | None:
        tokens = self.tokens(name)
        return None if tokens is None else " ".join(tokens)

    def values(self) -> dict[str, str]:
        """Every parameter's value (tokens joined by spaces)."""
        tokens: dict[str, list[str]] = {}
        for p in self.params:
            tokens.setdefault(p.name, []).extend(p.tokens)
        return {name: " ".join(found) for name, found in tokens.items()}


@dataclass(frozen=True)
class Constant:
    name: str
    raw: str
    value: str
    element: Element
    file: str


@dataclass(frozen=True)
class Executed:
    """One entry of ``<execute>`` after groups and conditions are resolved."""

    name: str
    condition: str
    runs: bool | None  # False: the condition is false; None: decided at run time
    element: Element  # the <processor> (or <group> reference) of <execute> it comes from
    file: str


@dataclass
class Node:
    """An element of the file set after includes are expanded, with the file it is written in."""

    element: Element
    file: str
    children: list[Node] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return self.element.tag

    def attr(self, name: str) -> str | None:
        return self.element.attrs.get(name)

    def where(self) -> str:
        return f"{self.file}, line {self.element.line}"


@dataclass
class Steering:
    """Everything Marlin takes from a steering file and its includes."""

    top: str
    files: dict[str, XmlFile]
    includes: list[str]
    constants: dict[str, Constant]
    processors: dict[str, Processor]
    execute: list[Executed]
    executeNode: Node
    globalNode: Node
    globals: list[Param]

    def executed(self, name: str) -> Executed | None:
        return next((e for e in self.execute if e.name == name), None)

    def runs(self, name: str) -> bool:
        """Whether ``<execute>`` runs the processor (unless a run-time condition says otherwise)."""
        entry = self.executed(name)
        return entry is not None and entry.runs is not False

    def running(self, processorType: str) -> list[str]:
        """Names of the processors of a type that ``<execute>`` runs, in execution order."""
        return [e.name for e in self.execute
                if e.runs is not False and e.name in self.processors and self.processors[e.name].type == processorType]

    def global_value(self, name: str) -> str | None:
        found = [p for p in self.globals if p.name == name]
        return " ".join(t for p in found for t in p.tokens) if found else None

    def constant_uses(self, name: str) -> int:
        """How often ``${name}`` is written in the parsed files (comments excluded)."""
        needle = f"${{{name}}}".encode()
        return sum(without_comments(f.data).count(needle) for f in self.files.values())


# ------------------------------------------------------------------------------------ reading
def read_steering(files: FileSource, top: str = STEERING_FILE, constants: Mapping[str, str] | None = None) -> Steering:
    """Read the top steering file and everything it includes from ``files``, as Marlin would.

    ``constants`` override the values of constants the files define, as Marlin's command line
    ``--constant.NAME=VALUE`` does (an override of a constant that is not defined is an error)."""
    return _Reader(files, top, constants or {}).read()


class _Reader:
    def __init__(self, files: FileSource, top: str, overrides: Mapping[str, str]):
        self.source, self.top, self.overrides = files, top, dict(overrides)
        self.files: dict[str, XmlFile] = {}
        self.includes: list[str] = []
        self.constants: dict[str, Constant] = {}

    def read(self) -> Steering:
        text = self.source.get(self.top)
        if text is None:
            raise SteeringError(f"steering file {self.top} not found")
        topFile = self._parse(self.top, text, fragment=False)
        root = topFile.root
        if root.tag != "marlin":
            raise SteeringError(
                f"{self.top}: not a Marlin steering file: the root element is <{root.tag}>, not <marlin>"
            )
        constantsSection = next((c for c in root.children if c.tag == "constants"), None)
        if constantsSection is not None:
            self._constants(Node(constantsSection, self.top))
        unused = sorted(set(self.overrides) - set(self.constants))
        if unused:
            raise SteeringError(f"steeringConstants {unused} are not defined in the <constants> of {self.top} or its "
                                f"includes (Marlin only overrides constants the steering file defines)")
        tree = self._expand(Node(root, self.top))
        executeNode = _first(tree, "execute")
        if executeNode is None:
            raise SteeringError(f"{self.top}: no <execute> section")
        globalNode = _first(tree, "global")
        if globalNode is None:
            raise SteeringError(f"{self.top}: no <global> section")
        processors = self._processors(tree, executeNode)
        execute = self._execute(tree, executeNode)
        for entry in execute:
            if entry.name not in processors:
                hint = _group_hint(tree, executeNode, entry.name)
                raise SteeringError(
                    f"{entry.file}, line {entry.element.line}: <execute> runs processor {entry.name!r}, "
                    f"which is not defined{hint}"
                )
        return Steering(
            top=self.top,
            files=self.files,
            includes=self.includes,
            constants=self.constants,
            processors=processors,
            execute=execute,
            executeNode=executeNode,
            globalNode=globalNode,
            globals=self._params(globalNode, None),
        )

    def _parse(self, name: str, text: str, fragment: bool) -> XmlFile:
        try:
            parsed = parse(name, text, fragment=fragment)
        except XmlError as exc:
            raise SteeringError(str(exc)) from None
        self.files.setdefault(name, parsed)
        return parsed

    # -------------------------------------------------------------- constants and includes
    def substitute(self, text: str, where: str) -> str:
        """Marlin's performConstantReplacement: every ``${name}``, left to right, with values
        that were themselves expanded when they were defined (no second pass)."""
        out, pos, length = [], 0, 0
        while True:
            found = text.find("${", pos)
            if found < 0:
                out.append(text[pos:])
                return "".join(out)
            close = text.find("}", found + 2)
            if close < 0:
                raise SteeringError(f"{where}: unterminated ${{...}} in {_short(text)!r}")
            key = text[found + 2 : close]
            if key not in self.constants:
                raise SteeringError(f"{where}: constant ${{{key}}} is not defined (before this point) in <constants>")
            value = self.constants[key].value
            length += found - pos + len(value)
            if length > MAX_EXPANDED_LENGTH:
                raise SteeringError(f"{where}: substituting constants gives more than {MAX_EXPANDED_LENGTH} characters")
            out += [text[pos:found], value]
            pos = close + 1

    def _constants(self, section: Node) -> None:
        for child in section.element.children:
            node = Node(child, section.file)
            if child.tag == "constant":
                self._constant(node)
            elif child.tag == "include":
                included = self._include(node)
                for element in included.root.children:
                    if element.tag == "constant":
                        self._constant(Node(element, included.name))

    def _constant(self, node: Node) -> None:
        name = node.attr("name")
        if not name:
            raise SteeringError(f"{node.where()}: a <constant> has no name")
        if name in self.constants:
            first = self.constants[name]
            raise SteeringError(f"{node.where()}: constant {name!r} is defined twice (first in {first.file}, "
                                f"line {first.element.line})")
        raw = node.attr("value")
        if raw is None:
            raw = " ".join(node.element.text().split())
        raw = self.overrides.get(name, raw)
        self.constants[name] = Constant(name, raw, self.substitute(raw, node.where()), node.element, node.file)

    def _include(self, node: Node) -> XmlFile:
        ref = node.attr("ref")
        if ref is None:
            raise SteeringError(f"{node.where()}: an <include> has no ref attribute")
        if node.file != self.top:
            raise SteeringError(f"{node.where()}: nested includes are not allowed (Marlin reads <include> only in "
                                f"the top steering file)")
        name = self.substitute(ref, node.where())
        if len(name) < 5 or not name.endswith(".xml"):
            raise SteeringError(f"{node.where()}: include ref {name!r} does not name an .xml file")
        if name.startswith("/"):
            raise SteeringError(f"{node.where()}: include ref {name!r} is an absolute path; the calibration ships only "
                                f"files below the steering file's folder: copy it there and refer to it relatively")
        try:
            path = relative_path(posixpath.join(posixpath.dirname(self.top), name))
        except PathError as exc:
            raise SteeringError(f"{node.where()}: include ref {name!r}: {exc}") from None
        text = self.source.get(path)
        if text is None:
            raise SteeringError(f"{node.where()}: included file {path} not found")
        included = self._parse(path, text, fragment=True)
        nested = next((e for top in included.root.children for e in top.iter() if e.tag == "include"), None)
        if nested is not None:
            raise SteeringError(f"{path}, line {nested.line}: nested includes are not allowed (Marlin reads <include> "
                                f"only in the top steering file)")
        if path not in self.includes:
            self.includes.append(path)
        return included

    def _expand(self, node: Node) -> Node:
        """The node with every <include> below it replaced by the included elements (Marlin's
        processIncludeElements: ``<constants>`` sections are left alone)."""
        for child in node.element.children:
            if child.tag == "constants":
                node.children.append(Node(child, node.file))
            elif child.tag == "include":
                included = self._include(Node(child, node.file))
                node.children += [self._plain(Node(e, included.name)) for e in included.root.children]
            else:
                node.children.append(self._expand(Node(child, node.file)))
        return node

    def _plain(self, node: Node) -> Node:
        node.children = [self._plain(Node(c, node.file)) for c in node.element.children]
        return node

    # -------------------------------------------------------------- processors
    def _params(self, owner: Node, group: str | None) -> list[Param]:
        params = []
        for child in owner.children:
            if child.tag != "parameter":
                continue
            name = child.attr("name")
            if name is None:
                raise SteeringError(f"{child.where()}: a <parameter> has no name")
            raw = child.attr("value")
            if raw is None:
                raw = child.element.text()
            tokens = tuple(self.substitute(raw, f"{child.where()} (parameter {name})").split())
            params.append(Param(name, raw, tokens, child.element, child.file, group))
        return params

    def _processors(self, tree: Node, executeNode: Node) -> dict[str, Processor]:
        processors: dict[str, Processor] = {}

        def define(node: Node, group: Node | None) -> None:
            name, kind = node.attr("name"), node.attr("type")
            if name is None or kind is None:
                raise SteeringError(f"{node.where()}: a <processor> needs a name and a type")
            if name in processors:
                first = processors[name]
                raise SteeringError(f"{node.where()}: processor {name!r} is defined twice (first in {first.file}, "
                                    f"line {first.element.line})")
            groupName = group.attr("name") if group is not None else None
            params = self._params(node, None) + (self._params(group, groupName) if group is not None else [])
            processors[name] = Processor(name, kind, node.element, node.file,
                                         group.element if group is not None else None, groupName, params)

        after = False
        for child in tree.children:
            if child is executeNode:
                after = True
            elif child.tag == "processor":
                define(child, None)
            elif child.tag == "group" and after:
                for member in child.children:
                    if member.tag == "processor":
                        define(member, child)
        return processors

    # -------------------------------------------------------------- execute
    def _execute(self, tree: Node, executeNode: Node) -> list[Executed]:
        groups: dict[str, Node] = {}
        for child in tree.children:
            if child.tag == "group":
                groups.setdefault(child.attr("name") or "", child)

        def flatten(node: Node, own: str) -> list[tuple[str, str, Node]]:
            """Marlin's replacegroups + processconditions: the processors of ``node`` in order,
            each with its condition, then `` && `` this level's (parenthesised if compound)."""
            level = f"({own})" if "&" in own or "|" in own else own
            entries = []
            for child in node.children:
                if child.tag == "processor":
                    name = child.attr("name")
                    if name is None:
                        raise SteeringError(f"{child.where()}: a <processor> in <execute> has no name")
                    entries.append((name, child.attr("condition") or "", child))
                elif child.tag == "group":
                    group = groups.get(child.attr("name") or "")
                    entries += [
                        (m.attr("name") or "", "", child)
                        for m in (group.children if group else [])
                        if m.tag == "processor"
                    ]
                elif child.tag == "if":
                    condition = child.attr("condition")
                    if condition is None:
                        raise SteeringError(f"{child.where()}: an <if> has no condition")
                    entries += flatten(child, condition)
            return [
                (name, f"{cond} && {level}" if cond and level else cond + level, where) for name, cond, where in entries
            ]

        executed: list[Executed] = []
        seen: set[str] = set()
        for raw, condition, node in flatten(executeNode, ""):
            name = self.substitute(raw, f"{node.where()} (<execute>)")
            if name in seen:
                raise SteeringError(f"{node.where()}: processor {name!r} is run more than once by <execute>")
            seen.add(name)
            condition = self.substitute(condition, f"{node.where()} (condition)") or "true"
            executed.append(Executed(name, condition, evaluate(condition), node.element, node.file))
        return executed


def _first(tree: Node, tag: str) -> Node | None:
    return next((c for c in tree.children if c.tag == tag), None)


def _group_hint(tree: Node, executeNode: Node, name: str) -> str:
    """Why a processor that <execute> names is undefined, when its definition is in a group
    written before <execute> (which Marlin does not expand)."""
    before = True
    for child in tree.children:
        if child is executeNode:
            before = False
        elif before and child.tag == "group" and any(m.attr("name") == name for m in child.children):
            return (f" (it is in group {child.attr('name')!r}, written before <execute>: Marlin expands only the "
                    f"groups that come after <execute>)")
    return ""


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------ conditions
def evaluate(expression: str, depth: int = 0) -> bool | None:
    """A processor condition as far as the steering file decides it: True or False when it
    depends only on ``true``/``false`` (Marlin's predefined values), else None (a processor's
    result, known only when Marlin runs). Marlin's grammar: ``!``, ``&&``, ``||`` evaluated left
    to right without precedence, parentheses, white space ignored."""
    if depth > MAX_CONDITION_DEPTH:
        raise SteeringError(f"condition {_short(expression)!r} is nested deeper than {MAX_CONDITION_DEPTH} levels")
    tokens = _tokenize(expression)
    if len(tokens) == 1 and "&" not in tokens[0][2] and "|" not in tokens[0][2]:
        _, negated, value = tokens[0]
        known = {"true": True, "True": True, "false": False, "False": False}.get(value)
        return None if known is None else known != negated
    result: bool | None = True
    for operation, negated, value in tokens:
        term = evaluate(value, depth + 1)
        if term is not None and negated:
            term = not term
        result = _and(result, term) if operation == "&&" else _or(result, term)
    return result


def _tokenize(expression: str) -> list[tuple[str, bool, str]]:
    """Marlin's Tokenizer: (operation joining the term to the previous ones, negated, term)."""
    tokens: list[list] = []
    state, need, last, opened, closed = "new", True, "", 0, 0
    for c in expression:
        if c in " \t":
            last = c
            continue
        opened += c == "("
        closed += c == ")"
        if state == "new":
            if need:
                tokens.append(["&&", False, ""])
                need = False
            if c == "!":
                tokens[-1][1] = True
            elif c == "(":
                state = "paren"
            else:
                tokens[-1][2] += c
                state = "op"
        elif state == "paren":
            if opened == closed:
                state = "op"
            else:
                tokens[-1][2] += c
        elif c in "&|":
            if c == last:
                tokens.append([c * 2, False, ""])
                state = "new"
        else:
            tokens[-1][2] += c
        last = c
    return [(op, negated, value) for op, negated, value in tokens] or [("&&", False, "")]


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


# ------------------------------------------------------------------------------------ one text
def read_text(text: str) -> Steering:
    """A steering file that includes nothing, given as text (tests, quick looks)."""
    return read_steering({STEERING_FILE: text})


__all__ = [
    "STEERING_FILE",
    "Constant",
    "Executed",
    "FileSource",
    "FolderFiles",
    "Node",
    "Param",
    "Processor",
    "Steering",
    "SteeringError",
    "evaluate",
    "read_steering",
    "read_text",
]
