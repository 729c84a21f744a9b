"""docs/ADMINISTRATION.md says only what the WMS test bed, on which grid calibrations run end to
end, actually configures.

Every option of every configuration block of the guide must exist in the test bed's dirac.cfg
(``Testbed(wms=True)``): a ``<...>`` path segment stands for any section name, and a value is
compared (as a set of comma-separated items the test bed must include) unless it is a number or
holds a ``<...>`` placeholder, which are a site's own choices.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from diraccfg import CFG

from ILCDIRAC.CalibrationSystem.localdirac.testbed import CODE_ROOT, Testbed
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import require_mariadb

GUIDE = CODE_ROOT / "docs" / "ADMINISTRATION.md"
PLACEHOLDER = re.compile(r"<[^>]+>")


def guide_options(path: Path = GUIDE) -> list[tuple[tuple[str, ...], str]]:
    """(path, value) of every option in the guide's cfg blocks."""
    blocks = re.findall(r"^```\n(.*?)^```", path.read_text(), flags=re.S | re.M)
    options = []
    for block in blocks:
        cfg = CFG().loadFromBuffer(block)
        options.extend(_walk(cfg, ()))
    return options


def _walk(cfg: CFG, prefix: tuple[str, ...]):
    for key in cfg.listAll():
        if cfg.isSection(key):
            yield from _walk(cfg[key], prefix + (key,))
        else:
            yield prefix + (key,), cfg[key]


def _matches(cfg: CFG, path: tuple[str, ...]) -> list[str]:
    """Values of the options of ``cfg`` at ``path`` (``<...>`` segments match any name)."""
    head, *rest = path
    names = cfg.listSections() if PLACEHOLDER.fullmatch(head) and rest else [head]
    values = []
    for name in names:
        if rest:
            if cfg.isSection(name):
                values.extend(_matches(cfg[name], tuple(rest)))
        elif PLACEHOLDER.fullmatch(head):
            values.extend(cfg[o] for o in cfg.listOptions())
        elif cfg.isOption(name):
            values.append(cfg[name])
    return values


def _items(value: str) -> set[str]:
    return {item.strip() for item in value.split(",") if item.strip()}


@pytest.fixture(scope="module")
def testbed_cfg() -> CFG:
    require_mariadb()
    with Testbed(wms=True) as testbed:
        yield testbed.cfg


def test_the_guide_has_configuration_blocks_for_each_concern():
    paths = {"/".join(path) for path, _ in guide_options()}
    for needed in ("Systems/Calibration/<instance>/Services/Calibration/Port",
                   "Registry/Hosts/<agent host>/Properties",
                   "Operations/Defaults/AvailableTarBalls/<platform>/marlin/<marlinVersion>/CVMFSEnvScript",
                   "Operations/Defaults/Services/Catalogs/CatalogList"):
        assert needed in paths


@pytest.mark.parametrize("path, value", guide_options(), ids=lambda p: "/".join(p) if isinstance(p, tuple) else "")
def test_every_option_of_the_guide_is_one_the_test_bed_sets(testbed_cfg, path, value):
    found = _matches(testbed_cfg, path)
    assert found, f"{'/'.join(path)} is in the guide but not in the test bed's configuration"
    if PLACEHOLDER.search(value) or re.fullmatch(r"\d+", value):
        return
    assert any(_items(value) <= _items(v) for v in found), f"{'/'.join(path)}: guide {value!r}, test bed {found}"
