#!/usr/bin/env python
"""Fetch the results of a finished calibration.

Prints the calibrated constants with their statistical uncertainties and downloads the result
files (ready steering file, constants, per-step history, convergence plot) into a folder.

DIRAC's own log messages show only with -d.

Example:
  $ dirac-clic-calibration-results 12
  $ dirac-clic-calibration-results 12 --dir ./calib12
"""
from DIRAC import S_OK
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script

from ILCDIRAC.CalibrationSystem.Client.CommandLine import parse_command_line
from ILCDIRAC.CalibrationSystem.Client.Status import fetch_results


@Script()
def main():
    options = {"dir": None}

    def setDir(value):
        options["dir"] = value
        return S_OK()

    Script.registerSwitch("", "dir=", "folder for the result files (default ./calibration_<ID>)", setDir)
    Script.registerArgument("calibrationID: calibration ID")
    (calibrationID,) = parse_command_line(maxArguments=1)

    DIRACExit(fetch_results(calibrationID, options["dir"]))


if __name__ == "__main__":
    main()
