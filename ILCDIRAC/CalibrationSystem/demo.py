"""``make demo``: a complete calibration on this machine, start to finish, for a person to watch.

A throwaway local DIRAC (CA, certificates, proxies, the Calibration service and agent on
127.0.0.1, MariaDB if it answers, else an SQLite file), emulated samples (10 GeV photons,
50 GeV K0L, 10 GeV muons, Z->uds) of a CLD-like detector whose true constants lie 13-20 % away
from the model's starting constants, then what a physicist types: submit, status until it
ends, results. All three stages run with four local workers and the default ``fast``
strategy. The work folder (settings, samples, worker logs, results) stays in ``demo-run/``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ILCDIRAC.CalibrationSystem.localdirac import mariadb
from ILCDIRAC.CalibrationSystem.localdirac.configurations import (
    ACCURACY,
    CONFIGURATIONS,
    SAMPLES,
    true_starting_constants,
)
from ILCDIRAC.CalibrationSystem.localdirac.scenario import Scenario, ScenarioError
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed

FAST_WORKERS = {"WorkerPollMinimum": 0.5, "WorkerPollMaximum": 3, "WorkerPatience": 300}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="demo-run", help="where settings, samples and logs go (default demo-run)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--strategy", default="fast", choices=("fast", "legacy"))
    args = parser.parse_args(argv)

    folder = Path(args.folder).resolve()
    shutil.rmtree(folder, ignore_errors=True)
    configuration = CONFIGURATIONS[0]
    truth = configuration.truth()
    database = "mariadb" if mariadb.available() else "sqlite"
    print(f"Local DIRAC: Calibration service and agent on 127.0.0.1, {database} CalibrationDB; work folder {folder}")
    with Testbed(database=database, service_options=FAST_WORKERS, polling_time=2) as testbed:
        testbed.start_service()
        testbed.start_agent()
        scenario = Scenario(
            testbed,
            folder,
            truth,
            samples=SAMPLES,
            settings={"numberOfJobs": args.workers, "fractionOfFinishedJobsNeededToStartNextStep": 0.75,
                      "strategy": args.strategy, **ACCURACY},
        )
        print(f"Detector {configuration.model}, emulated samples {dict(SAMPLES)} (files, events per file)")
        print("$ dirac-clic-calibration-submit settings.yaml")
        try:
            calibrationID = scenario.submit()
        except ScenarioError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 1
        print(f"calibration {calibrationID} submitted: {args.workers} local workers, strategy {args.strategy}")
        started, last = time.monotonic(), None
        while True:
            status = scenario.status(calibrationID)
            line = (f"  step {status['step']:2d}  phases {','.join(status['phases']):14s} "
                    f"{status['resultsThisStep']}/{status['resultsNeeded']} results  {status['status']}")
            if line != last:
                print(line, flush=True)
                last = line
            if status["status"] != "running":
                break
            if time.monotonic() - started > 900:
                print("ERROR: the calibration did not end within 15 minutes", file=sys.stderr)
                print(scenario.logs(calibrationID), file=sys.stderr)
                return 1
            time.sleep(1)
        elapsed = time.monotonic() - started
        print(f"$ dirac-clic-calibration-status {calibrationID}")
        print(scenario.run_command("dirac-clic-calibration-status", str(calibrationID)).stdout.strip())
        if status["status"] != "finished":
            print(f"ERROR: calibration {status['status']}: {status['reason']}", file=sys.stderr)
            print(scenario.logs(calibrationID), file=sys.stderr)
            return 1
        results = folder / "results"
        print(f"$ dirac-clic-calibration-results {calibrationID} --dir {results}")
        print(
            scenario.run_command(
                "dirac-clic-calibration-results", "--dir", str(results), str(calibrationID)
            ).stdout.strip()
        )
        start = scenario.history(calibrationID)[0]["constants"]
        true = true_starting_constants(truth)
        print(f"\nFinished in {status['step']} passes, {elapsed:.0f} s. Start and result against the emulator's truth:")
        for name in sorted(true):
            final, expected, initial = (_first(v) for v in (status["constants"][name], true[name], start[name]))
            print(
                f"  {name:30s} start {100 * (initial / expected - 1):+6.1f} %   "
                f"result {100 * (final / expected - 1):+6.2f} %"
            )
        print("(the result sits where the estimators settle for this detector, within the requested accuracy;")
        print(" the generator truth is not exactly reachable by the original estimators)")
    return 0


def _first(value):
    return value[0] if isinstance(value, list) else value


if __name__ == "__main__":
    sys.exit(main())
