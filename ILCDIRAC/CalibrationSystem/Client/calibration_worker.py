#!/usr/bin/env python
"""Launcher of a calibration worker inside a DIRAC job (shipped in the input sandbox).

The job's DIRAC/iLCDirac installation is the pilot's; this project's package travels in the
sandbox as ``ilcdirac-calibration.tar.gz`` holding ``calibration_code/ILCDIRAC/CalibrationSystem``.
DIRAC's JobWrapper unpacks sandbox tarballs into the job directory by itself; the launcher
unpacks it again (the same files, so it also works where nothing did), puts the folder first on
``ILCDIRAC.__path__`` (superseding an older CalibrationSystem there), then runs the worker.

Usage (the job's arguments): calibration_worker.py --calibration ID --worker W
"""
import argparse
import os
import sys
import tarfile

BUNDLE = "ilcdirac-calibration.tar.gz"
BUNDLE_ROOT = "calibration_code"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calibration", type=int, required=True)
    parser.add_argument("--worker", type=int, required=True)
    args, _ = parser.parse_known_args()
    here = os.getcwd()
    with tarfile.open(BUNDLE) as bundle:
        bundle.extractall(here, filter="data")
    sys.argv = sys.argv[:1]
    from DIRAC.Core.Base.Script import Script

    Script.parseCommandLine(ignoreErrors=True)
    import ILCDIRAC

    ILCDIRAC.__path__.insert(0, os.path.join(here, BUNDLE_ROOT, "ILCDIRAC"))
    from ILCDIRAC.CalibrationSystem.Client.WorkerMain import run_worker

    return run_worker(args.calibration, args.worker, os.path.join(here, "work"))


if __name__ == "__main__":
    sys.exit(main())
