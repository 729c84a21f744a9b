"""This project's ILCDIRAC.CalibrationSystem is the one DIRAC runs, and iLCDirac keeps working.

Checked in two environments, each in a subprocess that loads the components the way
``dirac-service``/``dirac-agent`` do (DIRAC's ModuleLoader, with the CS section built from
ConfigTemplate.cfg, whose HandlerPath names the module, and again without HandlerPath so the
loader searches the extensions by priority):
- the checkout, with the checkout on PYTHONPATH as the test bed runs services (the environment's
  installed copy, possibly stale, must not win);
- a fresh virtualenv holding iLCDirac as its wheel installs it, with its OLD CalibrationSystem
  folder, into which this project's wheel is installed: our files must replace the old ones
  although the old folder is not deleted. Third-party packages (DIRAC included) come from the
  current environment through a folder of symlinks that leaves out every ILCDIRAC distribution.

Nothing is downloaded (the test runs offline): iLCDirac is copied from the current environment
with its dist-info, and since ``make install`` removed the wheel's old CalibrationSystem there,
that folder is laid out again from the dist-info's RECORD (the old file names, stand-in contents);
the project's wheel is built from a copy of the checkout and installed with ``--no-index``.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from diraccfg import CFG

from ILCDIRAC.CalibrationSystem.localdirac.testbed import CODE_ROOT, CONFIG_TEMPLATE, PACKAGE_DIR

HANDLER = Path("Service") / "CalibrationHandler.py"
AGENT = Path("Agent") / "CalibrationAgent.py"
PACKAGE_PREFIX = "ILCDIRAC/CalibrationSystem/"
SOURCE_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in")
OLD_CONTENT = "# iLCDirac's own CalibrationSystem file (stand-in for the wheel's original)\n"

PROBE = r"""
import hashlib, inspect, json
from DIRAC.ConfigurationSystem.Client import PathFinder
from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData
from DIRAC.Core.Base.AgentModule import AgentModule
from DIRAC.Core.Base.private.ModuleLoader import ModuleLoader
from DIRAC.Core.DISET.RequestHandler import RequestHandler
from DIRAC.Core.Utilities.Extensions import extensionsByPriority


def load(kind, finder, base, name, **kwargs):
    loader = ModuleLoader(kind, finder, base, **kwargs)
    result = loader.loadModules([name])
    if not result["OK"]:
        return {"error": result["Message"]}
    cls = loader.getModules()[name]["classObj"]
    path = inspect.getfile(cls)
    with open(path, "rb") as source:
        digest = hashlib.sha256(source.read()).hexdigest()
    return {"module": cls.__module__, "class": cls.__name__, "file": path, "sha256": digest}


out = {}
section = PathFinder.getServiceSection("Calibration/Calibration")
out["handlerPath"] = gConfigurationData.extractOptionFromCFG(section + "/HandlerPath")
service = ("Service", PathFinder.getServiceSection, RequestHandler, "Calibration/Calibration")
out["service"] = load(*service, moduleSuffix="Handler")
gConfigurationData.deleteOptionInCFG(section + "/HandlerPath")
gConfigurationData.sync()
out["serviceByExtension"] = load(*service, moduleSuffix="Handler")
out["agent"] = load("Agent", PathFinder.getAgentSection, AgentModule, "Calibration/CalibrationAgent")

import ILCDIRAC
import ILCDIRAC.CalibrationSystem
from ILCDIRAC.Interfaces.API.NewInterface.UserJob import UserJob

out["ilcdiracPath"] = list(ILCDIRAC.__path__)
out["package"] = ILCDIRAC.CalibrationSystem.__file__
out["priority"] = ILCDIRAC.extension_metadata()["priority"]
out["extensions"] = list(extensionsByPriority())
out["userJob"] = inspect.getfile(UserJob)
print("PROBE-RESULT " + json.dumps(out))
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("PYTHONPATH", "DIRACSYSCONFIG", "X509_USER_PROXY", "X509_CERT_DIR", "DIRAC_ROOT_PATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("VIRTUAL_ENV")}
    env.update(extra)
    return env


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _dirac_root(folder: Path) -> Path:
    """A DIRAC root whose dirac.cfg has the Calibration system exactly as ConfigTemplate.cfg gives it."""
    template = CFG().loadFromFile(str(CONFIG_TEMPLATE))
    cfg = CFG().loadFromDict({"DIRAC": {"Setup": "Probe", "Setups": {"Probe": {"Calibration": "Test"}}}})
    system = CFG()
    for name in ("Services", "Agents", "Databases"):
        system.createNewSection(name, contents=template[name].clone())
    cfg.createNewSection("Systems", contents=CFG())
    cfg["Systems"].createNewSection("Calibration", contents=CFG())
    cfg["Systems"]["Calibration"].createNewSection("Test", contents=system)
    (folder / "etc").mkdir(parents=True)
    (folder / "etc" / "dirac.cfg").write_text(str(cfg))
    return folder


def _probe(python: str, cwd: Path, **env: str) -> dict:
    done = _run([python, "-c", PROBE], cwd=cwd, env=_clean_env(DIRAC_ROOT_PATH=str(_dirac_root(cwd / "root")), **env))
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE-RESULT ")]
    log = done.stdout[-3000:] + done.stderr[-3000:]
    assert lines, log
    result = json.loads(lines[-1][len("PROBE-RESULT ") :])
    result["log"] = log
    return result


def _assert_ours(result: dict, package_dir: Path) -> None:
    """DIRAC loaded this project's handler and agent (same bytes as the checkout) from ``package_dir``."""
    assert result["handlerPath"] == "ILCDIRAC/CalibrationSystem/Service/CalibrationHandler.py"
    for key, relative, cls in (
        ("service", HANDLER, "CalibrationHandler"),
        ("serviceByExtension", HANDLER, "CalibrationHandler"),
        ("agent", AGENT, "CalibrationAgent"),
    ):
        loaded = result[key]
        assert "error" not in loaded, f"DIRAC could not load {key}: {loaded.get('error')}\n{result['log']}"
        assert loaded["class"] == cls
        assert Path(loaded["file"]) == package_dir / relative
        assert loaded["sha256"] == _sha256(PACKAGE_DIR / relative), f"{key} is not this project's {relative}"
    assert Path(result["package"]) == package_dir / "__init__.py"


def _assert_ilcdirac_intact(result: dict, ilcdirac_dir: Path) -> None:
    assert Path(result["userJob"]) == ilcdirac_dir / "Interfaces" / "API" / "NewInterface" / "UserJob.py"
    assert result["priority"] == 100
    assert result["extensions"][0] == "ILCDIRAC" and "DIRAC" in result["extensions"]


def test_pytest_process_imports_the_checkout():
    import ILCDIRAC
    import ILCDIRAC.CalibrationSystem

    checkout = CODE_ROOT / "ILCDIRAC" / "CalibrationSystem" / "__init__.py"
    assert Path(ILCDIRAC.CalibrationSystem.__file__).resolve() == checkout
    assert Path(ILCDIRAC.__path__[0]).resolve() == CODE_ROOT / "ILCDIRAC"
    assert ILCDIRAC.extension_metadata()["priority"] == 100


def test_dirac_loads_the_checkout_components(tmp_path):
    result = _probe(sys.executable, tmp_path, PYTHONPATH=str(CODE_ROOT))
    _assert_ours(result, CODE_ROOT / "ILCDIRAC" / "CalibrationSystem")
    assert [Path(p) for p in result["ilcdiracPath"]][0] == CODE_ROOT / "ILCDIRAC"
    installed = Path(sysconfig.get_paths()["purelib"]) / "ILCDIRAC"
    _assert_ilcdirac_intact(result, installed)


def _copy_ilcdirac(site: Path) -> set[Path]:
    """Install iLCDirac into ``site`` as its wheel would, offline, from the current environment.

    The package and its dist-info are copied; the old CalibrationSystem folder (which ``make install``
    replaced here by this project) is laid out from the dist-info's RECORD. Returns its files."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    (distInfo,) = purelib.glob(f"ilcdirac-{importlib.metadata.version('ILCDIRAC')}.dist-info")
    shutil.copytree(purelib / "ILCDIRAC", site / "ILCDIRAC",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "CalibrationSystem"))
    shutil.copytree(distInfo, site / distInfo.name)
    oldFiles = set()
    for line in (distInfo / "RECORD").read_text().splitlines():
        path = line.split(",")[0]
        if path.startswith(PACKAGE_PREFIX) and "__pycache__" not in path:
            target = site / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(OLD_CONTENT)
            oldFiles.add(Path(path).relative_to(PACKAGE_PREFIX))
    return oldFiles


@pytest.fixture(scope="module")
def fresh_venv():
    """A new virtualenv: iLCDirac (old CalibrationSystem included), then this project's wheel, all offline."""
    with tempfile.TemporaryDirectory(prefix="calib-freshvenv-") as tmp:
        tmp = Path(tmp)
        _run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")])
        python = str(tmp / "venv" / "bin" / "python")
        site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())

        deps = tmp / "deps"
        deps.mkdir()
        for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
            name = entry.name.lower()
            if name.startswith(("ilcdirac", "__editable__")) or name == "__pycache__" or name.endswith(".pth"):
                continue
            (deps / entry.name).symlink_to(entry)
        (site / "_calibration_test_deps.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
        oldFiles = _copy_ilcdirac(site)
        assert oldFiles, "the iLCDirac dist-info lists no CalibrationSystem files: the test would prove nothing"

        # Build from a copy of the sources: an in-tree build would leave build/ and *.egg-info in the checkout.
        source = tmp / "source"
        (source / "ILCDIRAC").mkdir(parents=True)
        for name in SOURCE_FILES:
            if (CODE_ROOT / name).is_file():
                shutil.copy2(CODE_ROOT / name, source / name)
        shutil.copy2(CODE_ROOT / "ILCDIRAC" / "__init__.py", source / "ILCDIRAC" / "__init__.py")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(PACKAGE_DIR, source / "ILCDIRAC" / "CalibrationSystem", ignore=ignore)
        pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        wheels = tmp / "wheels"
        _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(source)], cwd=tmp)
        (wheel,) = wheels.glob("ilcdirac_calibration-*.whl")
        _run([*pip, "install", "--no-index", "--no-deps", str(wheel)], cwd=tmp)
        yield SimpleNamespace(root=tmp, python=python, site=site, oldFiles=oldFiles)


def test_installed_copy_wins_over_the_old_calibration_system(fresh_venv):
    package = fresh_venv.site / "ILCDIRAC" / "CalibrationSystem"
    result = _probe(fresh_venv.python, fresh_venv.root)
    assert [Path(p) for p in result["ilcdiracPath"]] == [fresh_venv.site / "ILCDIRAC"]
    _assert_ours(result, package)
    _assert_ilcdirac_intact(result, fresh_venv.site / "ILCDIRAC")

    # The old folder was not deleted: files only the old system had are still there ...
    ours = {Path(f).relative_to(PACKAGE_PREFIX) for f in _record_files(fresh_venv)}
    leftovers = {f for f in fresh_venv.oldFiles - ours if (package / f).is_file()}
    assert leftovers, "the fresh iLCDirac had no old CalibrationSystem files: the test proves nothing"
    assert all((package / f).read_text() == OLD_CONTENT for f in leftovers)
    # ... and every file this project installed is byte-identical to the checkout.
    assert {HANDLER, AGENT, Path("ConfigTemplate.cfg")} <= ours
    for relative in ours:
        assert _sha256(package / relative) == _sha256(PACKAGE_DIR / relative), relative


def _record_files(fresh_venv) -> list[str]:
    records = list(fresh_venv.site.glob("ilcdirac_calibration-*.dist-info/RECORD"))
    assert len(records) == 1, records
    files = []
    for line in records[0].read_text().splitlines():
        path = line.split(",")[0]
        if path.startswith(PACKAGE_PREFIX) and "__pycache__" not in path:
            files.append(path)
    return files
