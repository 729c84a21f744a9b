"""Imports run downward: the user's commands and the grid worker load neither SQLAlchemy nor the
service's logic and database, the agent not the database, and ``make demo`` no test code.

Each module is imported in a fresh interpreter together with every package module it imports
anywhere, also inside functions (the commands import most of what they run lazily), and the
interpreter's ``sys.modules`` is checked afterwards.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2]
ROOT = PACKAGE.parents[1]
PREFIX = "ILCDIRAC.CalibrationSystem"
SERVICE_SIDE = ("sqlalchemy", f"{PREFIX}.logic", f"{PREFIX}.DB")
USER_SIDE = [
    *(f"{PREFIX}.scripts.{path.stem}" for path in sorted((PACKAGE / "scripts").glob("dirac_*.py"))),
    f"{PREFIX}.Client.Submission",
    f"{PREFIX}.Client.Status",
    f"{PREFIX}.Client.CalibrationClient",
    f"{PREFIX}.Client.Backends",
    f"{PREFIX}.Client.Worker",
    f"{PREFIX}.Client.WorkerMain",
    f"{PREFIX}.Client.calibration_worker",
]


def is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.removeprefix(PREFIX + ".").split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(module: str) -> list[str]:
    """``module`` and the package modules its source imports, at any depth of its code."""
    source = PACKAGE.joinpath(*module.removeprefix(PREFIX + ".").split(".")).with_suffix(".py")
    names = [module]
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names if is_module(f"{node.module}.{alias.name}")]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith(PREFIX)]
    return names


def loaded_after_import(modules: list[str]) -> list[str]:
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def service_side(loaded: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return [name for name in loaded if any(name == f or name.startswith(f + ".") for f in forbidden)]


def test_the_check_sees_the_service_side_when_it_is_loaded():
    assert service_side(loaded_after_import([f"{PREFIX}.logic.service"]), SERVICE_SIDE)


@pytest.mark.parametrize("module", USER_SIDE)
def test_user_commands_and_the_worker_load_no_service_code(module):
    modules = imported_modules(module)
    assert service_side(loaded_after_import(modules), SERVICE_SIDE) == []


def test_the_agent_loads_no_database():
    modules = imported_modules(f"{PREFIX}.Agent.CalibrationAgent")
    assert service_side(loaded_after_import(modules), ("sqlalchemy", f"{PREFIX}.DB")) == []


def test_the_demo_the_local_dirac_and_the_makefile_use_no_test_code():
    modules = imported_modules(f"{PREFIX}.demo")
    for path in sorted((PACKAGE / "localdirac").glob("[a-z]*.py")):
        modules += imported_modules(f"{PREFIX}.localdirac.{path.stem}")
    assert service_side(loaded_after_import(modules), (f"{PREFIX}.test",)) == []
    assert f"{PREFIX}.test" not in (ROOT / "Makefile").read_text()
