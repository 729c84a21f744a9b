#!/usr/bin/env python
"""How long the WMS test bed takes: build, start, one iLCDirac job from submission to Done, close.

Each run builds ``Testbed(wms=True)`` (CA, certificates, proxies, databases, configuration),
starts the WMS (services, optimizers, pilot, site mask, proxies in the ProxyManager), submits one
iLCDirac ``UserJob`` as alice (a ``GenericApplication`` that depends on the stand-in Marlin
release, through ``DiracILC``), waits until the job is Done, closes the test bed and checks that
no process, database or folder of it is left.

Usage: .venv/bin/python benchmarks/wms_startup.py [--runs N] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ILCDIRAC.CalibrationSystem.localdirac import (
    mariadb,  # noqa: E402
    wms,  # noqa: E402
)
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed  # noqa: E402
from ILCDIRAC.CalibrationSystem.test.grid import job_states, wait_for  # noqa: E402


def one_job(testbed: Testbed, folder: Path) -> int:
    """Submit one iLCDirac user job as alice; its job ID."""
    from ILCDIRAC.Interfaces.API.DiracILC import DiracILC
    from ILCDIRAC.Interfaces.API.NewInterface.Applications import GenericApplication
    from ILCDIRAC.Interfaces.API.NewInterface.UserJob import UserJob

    script = folder / "hello.sh"
    script.write_text("#!/bin/sh\nwhich Marlin\n")
    script.chmod(0o755)
    with testbed.as_user("alice"):
        job = UserJob()
        job.check = False
        job.setName("wms-startup-benchmark")
        job.setPlatform(wms.PLATFORM)
        job.setInputSandbox([str(script)])
        application = GenericApplication()
        application.setScript(str(script))
        application.setDependency({"marlin": wms.MARLIN_VERSION})
        job.append(application)
        result = job.submit(DiracILC(True, str(folder / "jobs.rep")), mode="wms")
    if not result["OK"]:
        raise RuntimeError(f"submission failed: {result['Message']}")
    return int(result["Value"])


def run_once() -> dict[str, float]:
    times: dict[str, float] = {}
    started = time.monotonic()
    testbed = Testbed(wms=True)
    databases = list(testbed.wms.databases.values()) + [testbed.db_name]
    root = testbed.root
    try:
        times["build"] = time.monotonic() - started
        mark = time.monotonic()
        testbed.start_wms()
        times["start_wms"] = time.monotonic() - mark
        mark = time.monotonic()
        with tempfile.TemporaryDirectory() as folder:
            jobID = one_job(testbed, Path(folder))
            wait_for(lambda: job_states(testbed, [jobID])[jobID]["Status"] in wms.FINAL_JOB_STATES, 300,
                     f"job {jobID} ending")
        status = job_states(testbed, [jobID])[jobID]["Status"]
        if status != "Done":
            raise RuntimeError(f"job {jobID} ended {status}")
        times["job_to_done"] = time.monotonic() - mark
    finally:
        pids = testbed.pids
        mark = time.monotonic()
        testbed.close()
        times["close"] = time.monotonic() - mark
    times["total"] = time.monotonic() - started
    left = [d for d in databases if d in mariadb.databases(d)]
    import psutil

    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    if left or alive or root.exists():
        raise RuntimeError(f"left behind: databases {left}, processes {alive}, folder {root.exists()}")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = [run_once() for _ in range(args.runs)]
    if args.json:
        print(json.dumps(runs))
        return 0
    print(f"{'seconds':<12}" + "".join(f"{key:>12}" for key in runs[0]))
    for label, pick in (("median", statistics.median), ("min", min), ("max", max)):
        print(f"{label:<12}" + "".join(f"{pick(r[key] for r in runs):>12.1f}" for key in runs[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
