"""``make demo``: a calibration on this machine, start to finish, for a person to watch.

A throwaway local DIRAC (CA, certificates, proxies, the Calibration service and agent on
127.0.0.1, MariaDB if it answers, else an SQLite file), emulated sample files for a detector
whose true constants are known, then the user's commands: submit, status until it ends, and the
result compared with the truth. The work folder (settings, samples, worker logs) stays in
``demo-run/`` for inspection.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ILCDIRAC.CalibrationSystem.test import mariadb
from ILCDIRAC.CalibrationSystem.test.scenario import Scenario, ScenarioError, shifted_truth
from ILCDIRAC.CalibrationSystem.test.testbed import Testbed

TRUTH_FACTORS = {"CalibrECAL": 1.15, "ECALEndcapCorrectionFactor": 0.96}
FAST_WORKERS = {"WorkerPollMinimum": 0.5, "WorkerPollMaximum": 3, "WorkerPatience": 300}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="demo-run", help="where settings, samples and logs go (default demo-run)")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)

    folder = Path(args.folder).resolve()
    shutil.rmtree(folder, ignore_errors=True)
    database = "mariadb" if mariadb.available() else "sqlite"
    print(f"Local DIRAC test bed with a {database} CalibrationDB; work folder {folder}")
    truth = shifted_truth("FCCee_o1_v04", TRUTH_FACTORS)
    with Testbed(database=database, service_options=FAST_WORKERS) as testbed:
        testbed.start_service()
        testbed.start_agent()
        scenario = Scenario(
            testbed,
            folder,
            truth,
            samples={"gamma": (4, 600)},
            settings={
                "numberOfJobs": args.workers,
                "fractionOfFinishedJobsNeededToStartNextStep": 0.75,
                "phaseSequence": ["1.0"],
            },
        )
        print("$ dirac-clic-calibration-submit settings.yaml")
        try:
            calibrationID = scenario.submit()
        except ScenarioError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 1
        print(f"calibration {calibrationID} submitted with {args.workers} local workers")
        started, last = time.monotonic(), None
        while True:
            status = scenario.status(calibrationID)
            line = f"  step {status['step']}  stage {status['stage']} phase {status['phase']}  " \
                   f"{status['resultsThisStep']}/{status['resultsNeeded']} results  {status['status']}"
            if line != last:
                print(line)
                last = line
            if status["status"] != "running":
                break
            if time.monotonic() - started > 600:
                print("ERROR: the calibration did not end within 10 minutes", file=sys.stderr)
                print(scenario.logs(calibrationID), file=sys.stderr)
                return 1
            time.sleep(1)
        print(f"$ dirac-clic-calibration-status {calibrationID}")
        print(scenario.run_command("dirac-clic-calibration-status", str(calibrationID)).stdout)
        if status["status"] != "finished":
            print(f"ERROR: calibration {status['status']}: {status['reason']}", file=sys.stderr)
            print(scenario.logs(calibrationID), file=sys.stderr)
            return 1
        final = status["constants"]
        true = truth.trueConstants
        print(f"Finished in {status['step']} steps ({time.monotonic() - started:.0f} s). Result vs emulator truth:")
        for name, value, expected in (
            ("CalibrECAL (barrel)", final["CalibrECAL"][0], true.CalibrECAL[0]),
            ("ECALEndcapCorrectionFactor", final["ECALEndcapCorrectionFactor"], true.ECALEndcapCorrectionFactor),
        ):
            print(f"  {name:28s} {value:10.4f}   truth {expected:10.4f}   ({100 * (value / expected - 1):+.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
