"""The lifecycle tables: the architecture document shows exactly them, and the check refuses the rest."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from ILCDIRAC.CalibrationSystem.Utilities import lifecycle
from ILCDIRAC.CalibrationSystem.Utilities.lifecycle import (
    CALIBRATION,
    LIFECYCLES,
    STEP,
    WORKER,
    Change,
    IllegalTransition,
    announce,
    observe,
    transition,
)
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import CalibrationStatus, StepStatus, WorkerStatus

ARCHITECTURE = Path(__file__).resolve().parents[4] / "docs" / "ARCHITECTURE.md"


def documented() -> dict[str, tuple[str, set[tuple[str, str]]]]:
    """Per lifecycle heading of the "Lifecycles" section: its initial status and the (from, to)
    pairs its table lists (a row with several statuses on a side stands for every pair)."""
    section = ARCHITECTURE.read_text().split("\n## Lifecycles\n", 1)[1].split("\n## ", 1)[0]
    tables = {}
    for block in section.split("\n### ")[1:]:
        name, body = block.split("\n", 1)
        initial = re.search(r"Starts as `(\w+)`", body)[1]
        pairs = set()
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 2 or cells[0] in ("from", "---") or not line.startswith("|"):
                continue
            sources, targets = ([s.strip() for s in cell.split(",")] for cell in cells[:2])
            pairs |= {(a, b) for a, b in itertools.product(sources, targets) if a != b}
        tables[name.strip()] = (initial, pairs)
    return tables


def test_the_architecture_document_shows_the_code_tables():
    tables = documented()
    assert set(tables) == {lc.name for lc in LIFECYCLES}
    for lc in LIFECYCLES:
        assert tables[lc.name] == (lc.initial, set(lc.transitions)), lc.name


def test_every_status_is_reachable_and_named_in_its_enum():
    for lc, enum in ((CALIBRATION, CalibrationStatus), (STEP, StepStatus), (WORKER, WorkerStatus)):
        statuses = {lc.initial} | {s for pair in lc.transitions for s in pair}
        assert statuses == set(enum), lc.name
        reached = {lc.initial} | {new for _, new in lc.transitions}
        assert reached == set(enum), lc.name


@pytest.mark.parametrize("lc, old, new", [
    (CALIBRATION, "finished", "running"), (CALIBRATION, "killed", "failed"), (CALIBRATION, "failed", "finished"),
    (STEP, "closed", "open"), (STEP, "open", "closed"), (STEP, "closed", "closing"),
    (WORKER, "dead", "running"), (WORKER, "dead", "waiting"), (WORKER, "finished", "running"),
    (WORKER, "running", "created"), (WORKER, "running", "submitted"), (WORKER, "created", "resubmitted"),
    (WORKER, "killed", "dead"),
])
def test_illegal_changes_are_refused(lc, old, new):
    with pytest.raises(IllegalTransition, match=f"cannot go from {old} to {new}"):
        transition(lc, old, new, "the thing")


@pytest.mark.parametrize("lc, old, new", [
    (CALIBRATION, "running", "killed"), (STEP, "open", "closing"), (STEP, "closing", "closed"), (STEP, "closing", "open"),
    (WORKER, "created", "running"),
    (WORKER, "waiting", "resubmitted"), (WORKER, "dead", "failed"), (WORKER, "killed", "failed"),
])
def test_legal_changes_pass(lc, old, new):
    assert transition(lc, old, new, "x") == Change(lc.name, "x", old, new)


def test_staying_is_no_change_and_is_not_announced(monkeypatch):
    monkeypatch.setattr(lifecycle, "_observers", [])
    seen = []
    observe(seen.append)
    assert transition(WORKER, "dead", "dead", "w") is None
    change = transition(CALIBRATION, CalibrationStatus.RUNNING, CalibrationStatus.FINISHED, "calibration 1 step 9")
    announce([None, change])
    assert seen == [Change("calibration", "calibration 1 step 9", "running", "finished")]
    assert type(seen[0].old) is str and type(seen[0].new) is str
