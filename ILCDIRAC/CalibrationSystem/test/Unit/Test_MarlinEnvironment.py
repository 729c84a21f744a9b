"""marlin_environment: a grid worker finds the iLCSoft release through iLCDirac's own software set-up.

iLCDirac's ``getEnvironmentScript`` reads the release's CVMFS folder and environment script from
the Operations section of the configuration, as on a real grid node; here that section names a
stand-in folder on this machine (no CVMFS).
"""
from __future__ import annotations

import pytest
from DIRAC import gConfig
from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData
from diraccfg import CFG

from ILCDIRAC.CalibrationSystem.Client.Worker import marlin_environment

PLATFORM = "x86_64-slc5-gcc43-opt"
VERSION = "ILCSoft-2020-02-07_gcc62"


def _operations(folder, script) -> CFG:
    release = {"CVMFSPath": str(folder), "CVMFSEnvScript": str(script)}
    return CFG().loadFromDict(
        {"Operations": {"Defaults": {"AvailableTarBalls": {PLATFORM: {"marlin": {VERSION: release}}}}}}
    )


@pytest.fixture
def release(tmp_path):
    """A stand-in CVMFS release of Marlin, listed in the Operations section; the CS is emptied after."""
    folder = tmp_path / "cvmfs" / PLATFORM / "marlin" / VERSION
    folder.mkdir(parents=True)
    script = folder / "init.sh"
    script.write_text("export MARLIN=here\n")
    gConfig.loadCFG(_operations(folder, script))
    yield folder, script
    gConfigurationData.localCFG = CFG()
    gConfigurationData.remoteCFG = CFG()
    gConfigurationData.mergedCFG = CFG()
    gConfigurationData.generateNewVersion()


def test_the_release_on_cvmfs_gives_its_environment_script(release):
    folder, script = release
    assert marlin_environment({"platform": PLATFORM, "marlinVersion": VERSION}) == str(script)


def test_a_release_the_site_does_not_have_is_a_clear_error(release):
    with pytest.raises(RuntimeError, match=f"cannot set up Marlin v99 on {PLATFORM}: no CVMFS environment for Marlin v99"):
        marlin_environment({"platform": PLATFORM, "marlinVersion": "v99"})


def test_a_listed_release_whose_cvmfs_folder_is_missing_is_a_clear_error(release):
    folder, script = release
    script.unlink()
    folder.rmdir()
    with pytest.raises(RuntimeError, match=f"cannot set up Marlin {VERSION} on {PLATFORM}"):
        marlin_environment({"platform": PLATFORM, "marlinVersion": VERSION})
