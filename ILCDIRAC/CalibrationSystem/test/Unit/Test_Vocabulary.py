"""The vocabulary is the only place state words are written, and it behaves like plain strings."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ILCDIRAC.CalibrationSystem.Utilities import vocabulary
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import (
    CalibrationStatus,
    JobState,
    PhaseKey,
    ReportVerdict,
    StepStatus,
    StrategyName,
    WorkerAction,
    WorkerStatus,
    plain,
)

PACKAGE = Path(vocabulary.__file__).resolve().parents[1]
ENUMS = (CalibrationStatus, StepStatus, WorkerStatus, JobState, WorkerAction, ReportVerdict, StrategyName)
STATE_WORDS = frozenset(member.value for enum in ENUMS for member in enum)
#: Names that hold a state, an action, a verdict or a strategy when a literal is given to them.
STATE_FIELDS = frozenset({"Status", "status", "action", "verdict", "strategy"})
#: Other vocabularies that happen to share a word: compared with these names, or in these files,
#: the word is not a state. The steering's PFO-analysis action ("run": added to <execute>) and the
#: settings file format ("legacy": ``*** section ***`` headers).
OTHER_VOCABULARIES = frozenset({"pfoAction", "fmt"})
OTHER_VOCABULARY_FILES = {("Utilities/reconstruction.py", "run")}


def production_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "test" not in p.relative_to(PACKAGE).parts
                  and p.name != "vocabulary.py")


def _literals(node: ast.AST) -> list[ast.Constant]:
    """The state-word literals a node is, or lists (a tuple, list or set of literals)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [i for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value in STATE_WORDS]


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    return None


def state_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, word) of every state word used as a state: compared with, given to a status,
    action, verdict or strategy field (keyword or dict entry), assigned, or listed among other
    literals (a set of states, a returned verdict tuple, a list of choices)."""
    found: dict[int, ast.Constant] = {}
    exempt: set[int] = set()
    for node in ast.walk(tree):
        literals: list[ast.Constant] = []
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            hits = [c for side in sides for c in _literals(side)]
            if any(_name(side) in OTHER_VOCABULARIES for side in sides):
                exempt.update(id(c) for c in hits)
            else:
                literals = hits
        elif isinstance(node, ast.keyword) and node.arg in STATE_FIELDS:
            literals = _literals(node.value)
        elif isinstance(node, ast.Dict):
            literals = [c for key, value in zip(node.keys, node.values, strict=True)
                        if isinstance(key, ast.Constant) and key.value in STATE_FIELDS for c in _literals(value)]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            literals = _literals(node.value) if isinstance(node.value, ast.Constant) else []
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            literals = _literals(node)
        found.update((id(c), c) for c in literals)
    return sorted((c.lineno, c.value) for key, c in found.items() if key not in exempt)


def test_no_state_literal_outside_the_vocabulary():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}: {word!r}"
        for path in production_files()
        for line, word in state_literals(ast.parse(path.read_text()))
        if (path.relative_to(PACKAGE).as_posix(), word) not in OTHER_VOCABULARY_FILES
    ]
    assert offenders == []


@pytest.mark.parametrize("source, expected", [
    ('if row["status"] == "running": pass', [(1, "running")]),
    ('ok = action in ("finished", "killed")', [(1, "finished"), (1, "killed")]),
    ('db.updateWorker(1, 2, Status="waiting")', [(1, "waiting")]),
    ('answer = {"action": "wait"}', [(1, "wait")]),
    ('RUNNING, DONE = "running", "done"', [(1, "done"), (1, "running")]),
    ('FINISHED = "finished"', [(1, "finished")]),
    ('ENDED = frozenset({"killed", "dead"})', [(1, "dead"), (1, "killed")]),
    ('def f(): return ("duplicate",) + counts', [(1, "duplicate")]),
    ('if found.pfoAction == "run": pass', []),
    ('if fmt in ("yaml", "legacy"): pass', []),
    ('message = "the step is open"', []),
])
def test_the_scan_finds_state_literals(source, expected):
    assert state_literals(ast.parse(source)) == expected


def test_members_are_plain_strings_to_json_and_comparisons():
    assert CalibrationStatus.RUNNING == "running" and "killed" == WorkerStatus.KILLED
    assert json.dumps({"status": CalibrationStatus.FAILED}) == '{"status": "failed"}'
    assert {CalibrationStatus.RUNNING: 1}["running"] == 1


def test_plain_leaves_no_enum_member_anywhere():
    value = {WorkerAction.RUN: [ReportVerdict.ACCEPTED, (JobState.DONE, PhaseKey(1, 2))], "n": 3}
    result = plain(value)
    assert result == {"run": ["accepted", ("done", (1, 2))], "n": 3}

    def members(v):
        if isinstance(v, dict):
            return [m for k, x in v.items() for m in members(k) + members(x)]
        if isinstance(v, (list, tuple)):
            return [m for x in v for m in members(x)]
        return [v] if type(v) is not str and isinstance(v, str) else []

    assert members(result) == []


def test_dencode_round_trips_plain_answers_and_refuses_members():
    from DIRAC.Core.Utilities.DEncode import decode, encode

    answer = {"action": WorkerAction.RUN, "verdict": ReportVerdict.DUPLICATE, "phases": ["1.0"]}
    assert decode(encode(plain(answer)))[0] == {"action": "run", "verdict": "duplicate", "phases": ["1.0"]}
    with pytest.raises(KeyError):
        encode(answer)


@pytest.mark.parametrize("text, key", [("1.0", PhaseKey(1, 0)), ("3.4", PhaseKey(3, 4)), ("12.5", PhaseKey(12, 5))])
def test_phase_keys_parse_and_format(text, key):
    assert PhaseKey.parse(text) == key and str(key) == text and key.stage == int(text.split(".")[0])


@pytest.mark.parametrize("text", ["1", "1.", ".0", "1.0.2", "a.b", "1.-1", " 1.0", "1.0\n", "١.٠", 7])
def test_malformed_phase_keys_are_refused(text):
    with pytest.raises(ValueError, match="phase key"):
        PhaseKey.parse(text)


def test_strategy_names_are_the_strategies():
    from ILCDIRAC.CalibrationSystem.Utilities.strategies import STRATEGIES

    assert set(STRATEGIES) == set(StrategyName)
    assert all(STRATEGIES[name].name == name for name in StrategyName)


def test_phases_couple_by_names_of_phases_that_exist_and_come_later():
    from ILCDIRAC.CalibrationSystem.Utilities.phases import PHASES

    names = [phase.name for _, phase in sorted(PHASES.items())]
    for number, phase in PHASES.items():
        assert set(phase.companions) <= set(names[number + 1:]), phase.name
    assert [p.name for p in PHASES.values() if p.trainsLikelihood] == ["PhotonTraining"]
