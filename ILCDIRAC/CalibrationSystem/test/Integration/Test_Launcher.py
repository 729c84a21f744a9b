"""The in-job launcher (``Client/calibration_worker.py``) runs the workers of a real calibration.

Each worker starts the way a DIRAC job starts it: in a job folder holding the launcher and the
package bundle the DIRAC backend puts in the input sandbox, with the environment's own iLCDirac
(here the virtualenv's, whose CalibrationSystem may be another version) and not this checkout
on the path. The launcher must unpack the bundle, put it first on ``ILCDIRAC.__path__`` and run
the worker from it to the end of the calibration.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ILCDIRAC.CalibrationSystem.Client.Backends import BUNDLE_ROOT, LAUNCHER, make_worker_bundle
from ILCDIRAC.CalibrationSystem.Client.Worker import EXIT_ENDED
from ILCDIRAC.CalibrationSystem.localdirac.scenario import create_via_rpc, shifted_truth
from ILCDIRAC.CalibrationSystem.localdirac.testbed import CODE_ROOT

WORKERS = 2
#: Runs the launcher file as DIRAC's job wrapper would (as ``__main__``), then says which
#: CalibrationSystem the worker ran from.
DRIVER = """
import json, runpy, sys
launcher, calibrationID, workerID = sys.argv[1:]
sys.argv = [launcher, "--calibration", calibrationID, "--worker", workerID]
try:
    runpy.run_path(launcher, run_name="__main__")
    code = 0
except SystemExit as exc:
    code = exc.code
import ILCDIRAC.CalibrationSystem
print("LAUNCHER-RESULT " + json.dumps({"code": code, "package": ILCDIRAC.CalibrationSystem.__file__}))
"""


def _job_env(testbed) -> dict[str, str]:
    """alice's environment without this checkout on PYTHONPATH: only the bundle can supply our code."""
    env = testbed.env("alice")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != CODE_ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def test_the_launcher_runs_the_workers_from_the_bundle_to_the_end(testbed, tmp_path):
    truth = shifted_truth("FCCee_o1_v04", {"CalibrECAL": 1.1})
    settings = {"numberOfJobs": WORKERS, "phaseSequence": ["1.0"], "strategy": "legacy",
                "fractionOfFinishedJobsNeededToStartNextStep": 1.0}
    calibrationID = create_via_rpc(testbed, tmp_path / "user", truth=truth, samples={"gamma": (WORKERS, 300)},
                                   settings=settings)
    jobs = []
    for workerID in range(WORKERS):
        folder = tmp_path / f"job_{workerID}"
        folder.mkdir()
        shutil.copy2(LAUNCHER, folder / LAUNCHER.name)
        make_worker_bundle(folder)
        command = [sys.executable, "-c", DRIVER, LAUNCHER.name, str(calibrationID), str(workerID)]
        log = (folder / "job.log").open("w")
        jobs.append((folder, log, subprocess.Popen(command, cwd=folder, env=_job_env(testbed), stdout=log,
                                                   stderr=subprocess.STDOUT, text=True)))
    for _, log, process in jobs:
        process.wait(timeout=300)
        log.close()
    for folder, _, _ in jobs:
        output = (folder / "job.log").read_text()
        lines = [line for line in output.splitlines() if line.startswith("LAUNCHER-RESULT ")]
        assert lines, output[-3000:]
        result = json.loads(lines[-1][len("LAUNCHER-RESULT "):])
        assert result["code"] == EXIT_ENDED, output[-3000:]
        assert Path(result["package"]) == folder / BUNDLE_ROOT / "ILCDIRAC" / "CalibrationSystem" / "__init__.py"
        assert (folder / "work").is_dir(), "the worker works below the job folder"

    status = testbed.rpc("alice").getCalibrationStatus([calibrationID])["Value"][0]
    assert status["status"] == "finished", status
    expected = truth.trueConstants.CalibrECAL[0]
    assert abs(status["constants"]["CalibrECAL"][0] / expected - 1) < 0.05, (status["constants"], expected)
