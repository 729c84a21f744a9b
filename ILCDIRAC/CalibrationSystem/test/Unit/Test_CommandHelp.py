"""Every console script answers ``--help`` and ``-h``, and a wrong option or argument is one line.

The scripts are the ones setup.py installs (read from it, so a new script is tested too), each run
as its console-script wrapper runs it: a fresh process calling the entry point with the script's
name as ``argv[0]``, against a minimal DIRAC configuration (no service needed).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]


def console_scripts() -> dict[str, str]:
    """name -> "module:function" from setup.py's entry points."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            entry = node.value.values[0]
            for item in entry.elts:
                text = ast.literal_eval(item) if isinstance(item, ast.Constant) else _fstring(item)
                name, target = (part.strip() for part in text.split("="))
                scripts[name] = target
    return scripts


def _fstring(node: ast.JoinedStr) -> str:
    """The f-strings of setup.py use the module-level SCRIPTS constant only."""
    scripts = "ILCDIRAC.CalibrationSystem.scripts"
    return "".join(scripts if isinstance(part, ast.FormattedValue) else part.value for part in node.values)


SCRIPTS = console_scripts()
#: The positional arguments each script needs, so that a test of one wrong thing has only that wrong.
VALID_ARGUMENTS = {
    "dirac-clic-calibration-submit": ["settings.yaml"],
    "dirac-clic-calibration-results": ["12"],
    "dirac-clic-calibration-kill": ["12"],
    "dirac-clic-calibration-worker": ["--calibration", "12", "--worker", "3"],
    "marlin-emulator": ["steering.xml"],
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "dirac.cfg").write_text("DIRAC\n{\n  Setup = Test\n}\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("X509", "DIRAC"))}
    environment.update(DIRACSYSCONFIG=str(folder / "dirac.cfg"), DIRAC_NO_CFG="1",
                       PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return environment


def run_script(name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    module, function = SCRIPTS[name].split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; sys.exit({function}())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=120)


def run_all(cases: list[tuple[str, list[str]]], env, cwd) -> list[subprocess.CompletedProcess]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda case: run_script(*case, env, cwd), cases))


def test_setup_installs_the_expected_scripts():
    assert {"dirac-clic-calibration-submit", "dirac-clic-calibration-status", "dirac-clic-calibration-results",
            "dirac-clic-calibration-kill", "dirac-clic-calibration-worker", "marlin-emulator",
            "marlin-emulator-samples"} <= set(SCRIPTS)


def test_every_script_answers_help_with_purpose_options_and_an_example(env, tmp_path):
    cases = [(name, [flag]) for name in SCRIPTS for flag in ("--help", "-h")]
    for (name, args), done in zip(cases, run_all(cases, env, tmp_path), strict=True):
        shown = f"{name} {args}: rc={done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        assert done.returncode == 0, shown
        text = done.stdout
        assert len(text.splitlines()) > 8, shown
        assert text.lower().count("example") >= 1 and f"{name} " in text.split("xample", 1)[1], shown
        assert "--help" in text and "options" in text.lower(), shown
        assert "Traceback" not in text + done.stderr, shown


def test_a_wrong_option_is_one_line_and_a_non_zero_exit(env, tmp_path):
    cases = [(name, [*VALID_ARGUMENTS.get(name, []), "--no-such-option"]) for name in SCRIPTS]
    cases += [(name, [*VALID_ARGUMENTS[name], "surplus"]) for name in VALID_ARGUMENTS]
    cases += [(name, []) for name in VALID_ARGUMENTS]  # a mandatory argument missing
    cases += [("dirac-clic-calibration-status", ["12", "--watch", "--interval", "0.1"]),
              ("dirac-clic-calibration-status", ["12", "13", "--watch"]),
              ("dirac-clic-calibration-status", ["12", "--interval", "5"]),
              ("dirac-clic-calibration-worker", ["--calibration", "x", "--worker", "3"]),
              ("dirac-clic-calibration-worker", ["--calibration", "12", "--worker", "3", "--owner-dn", "/CN=a"])]
    for (name, args), done in zip(cases, run_all(cases, env, tmp_path), strict=True):
        shown = f"{name} {args}: rc={done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        assert done.returncode != 0, shown
        lines = (done.stdout + done.stderr).splitlines()
        assert len(lines) == 1, shown
        assert "Traceback" not in lines[0], shown
