"""The project's documents stand alone: every file they cite exists in the repository, and the
architecture document names every module of the package. Reads files only (no MariaDB)."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
PACKAGE = ROOT / "ILCDIRAC" / "CalibrationSystem"
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
#: Where a relative path in a document may start: the repository, the package, the emulator.
BASES = (ROOT, PACKAGE, ROOT / "marlin_emulator")
#: Files a document may cite by extension (anything else in backquotes is code, not a file).
FILE_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".cfg", ".txt", ".xml", ".root", ".json", ".ini")
#: Generated or per-run names that documents mention but the repository does not hold.
NOT_IN_REPOSITORY = re.compile(
    r"<|\*|\{|^/|^\.|^~|://|^LFN:|^(calib|step|pfoanalysis|photons|results?|dirac)[\w.-]*$|\.venv"
)
#: Citations of documents that are not part of the project, in any text file of the repository.
FOREIGN = re.compile(r"calibration_physics\.md|DESIGN\.md|design card|/work/shared", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
QUOTED = re.compile(r"`([^`\s]+)`")
DOC_IN_CODE = re.compile(r"\bdocs/[A-Za-z0-9_.-]+\.md\b")


def _exists(citation: str, document: Path) -> bool:
    path = citation.rstrip("/").split(":")[0]
    return any((base / path).exists() for base in (document.parent, *BASES))


def _in_a_repository_folder(token: str) -> bool:
    """A path whose first folder is one of the repository's (``data/detectors/x.yaml``), as opposed
    to an example of a user's layout (``PandoraSettingsCLD/PandoraSettingsDefault.xml``)."""
    first = token.split("/")[0]
    return "/" in token.rstrip("/") and any((base / first).is_dir() for base in BASES)


def _cited_files(text: str) -> set[str]:
    """Markdown link targets, backquoted .md names, and backquoted paths into a repository folder."""
    cited = {m for m in LINK.findall(text) if "://" not in m and not m.startswith("mailto:")}
    for token in QUOTED.findall(text):
        looks_like_file = token.endswith(FILE_SUFFIXES) or token.endswith("/")
        if token.endswith(".md") or (looks_like_file and _in_a_repository_folder(token)):
            cited.add(token)
    return {c for c in cited if not NOT_IN_REPOSITORY.search(c)}


@pytest.mark.parametrize("document", DOCS, ids=lambda p: p.name)
def test_every_cited_file_exists(document):
    missing = sorted(c for c in _cited_files(document.read_text()) if not _exists(c, document))
    assert not missing, f"{document.relative_to(ROOT)} cites files the repository does not hold: {missing}"


def _text_files():
    for path in sorted(ROOT.rglob("*")):
        if path.suffix in (".py", ".md", ".yaml", ".cfg", ".txt") and path.is_file() and not any(
                part.startswith(".") for part in path.relative_to(ROOT).parts) and path != Path(__file__):
            yield path


def test_no_text_cites_a_document_outside_the_project():
    foreign, missing = [], []
    for path in _text_files():
        text = path.read_text(errors="replace")
        foreign += [f"{path.relative_to(ROOT)}: {m}" for m in FOREIGN.findall(text)]
        missing += [f"{path.relative_to(ROOT)}: {m}" for m in DOC_IN_CODE.findall(text) if not (ROOT / m).is_file()]
    assert not foreign, f"citations of documents outside the project: {foreign}"
    assert not missing, f"citations of documents that do not exist: {missing}"


def package_modules() -> list[str]:
    """Every module of the package (tests aside) by its path inside the package."""
    return sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and not path.name.startswith("Test_")
    )


def test_the_architecture_names_every_module():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert len(package_modules()) > 40
    unnamed = [module for module in package_modules() if module not in text]
    assert not unnamed, f"docs/ARCHITECTURE.md does not name these modules: {unnamed}"


def test_the_architecture_names_no_module_that_is_gone():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"\b((?:Agent|Client|DB|Service|Utilities|logic|scripts|test)/[\w/]+\.py)\b", text))
    gone = sorted(module for module in named if not (PACKAGE / module).is_file())
    assert not gone, f"docs/ARCHITECTURE.md names modules that do not exist: {gone}"


def test_the_checks_see_citations_and_missing_files():
    """The checks above are not vacuous: they find the README's citations and refuse a missing file."""
    readme = ROOT / "README.md"
    assert {"docs/SETTINGS.md", "docs/ARCHITECTURE.md", "docs/PHYSICS.md"} <= _cited_files(readme.read_text())
    assert "Utilities/nothing.py" in _cited_files("see `Utilities/nothing.py`")
    assert not _exists("Utilities/nothing.py", readme) and _exists("Utilities/phases/base.py", readme)
    assert "PandoraSettingsCLD/PandoraSettingsDefault.xml" not in _cited_files("`PandoraSettingsCLD/PandoraSettingsDefault.xml`")
    assert FOREIGN.search("see docs/calibration_physics.md") and FOREIGN.search("the design card")


PHYSICS_MODULES = (
    *sorted((PACKAGE / "Utilities" / "phases").glob("*.py")),
    PACKAGE / "Utilities" / "estimators.py",
    PACKAGE / "Utilities" / "strategies.py",
    PACKAGE / "logic" / "uncertainties.py",
)


def numeric_constants(path: Path) -> dict[str, list[float]]:
    """The module's UPPER_CASE numbers (and mappings of numbers): name -> values."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not (isinstance(target, ast.Name) and target.id.isupper()):
            continue
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue
        values = list(value.values()) if isinstance(value, dict) else [value]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            found[target.id] = values
    return found


@pytest.mark.parametrize("module", PHYSICS_MODULES, ids=lambda p: p.name)
def test_physics_names_every_constant_with_its_value(module):
    """docs/PHYSICS.md states every number of the physics code; a changed value must change the doc."""
    text = (ROOT / "docs" / "PHYSICS.md").read_text()
    problems = [f"{name} = {values}" for name, values in numeric_constants(module).items()
                if name not in text or not all(f"{v:g}" in text for v in values)]
    assert not problems, f"docs/PHYSICS.md lacks these constants of {module.name} (name and value): {problems}"
