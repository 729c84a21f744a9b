#!/usr/bin/env python
"""Fetch the results of a finished calibration.

Prints the calibrated constants with their statistical uncertainties and downloads the result
files (ready-to-run reconstruction folder, constants, per-step history and three plots) into a
folder. The plots: convergence.png (each phase's observables against their targets per step,
with the requested accuracy band), constants.png (each constant per step with its uncertainty)
and workers.png (when each worker reported per step: stragglers, resubmitted workers).
--plots downloads only the plots.

DIRAC's own log messages show only with -d.

Example:
  $ dirac-clic-calibration-results 12
  $ dirac-clic-calibration-results 12 --dir ./calib12
  $ dirac-clic-calibration-results 12 --plots
"""
from DIRAC import S_OK
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script

from ILCDIRAC.CalibrationSystem.Client.CommandLine import parse_command_line
from ILCDIRAC.CalibrationSystem.Client.Status import fetch_results


@Script()
def main():
    options = {"dir": None, "plots": False}

    def setDir(value):
        options["dir"] = value
        return S_OK()

    def setPlots(_):
        options["plots"] = True
        return S_OK()

    Script.registerSwitch("", "dir=", "folder for the result files (default ./calibration_<ID>)", setDir)
    Script.registerSwitch("p", "plots", "download only the plots (convergence, constants, workers)", setPlots)
    Script.registerArgument("calibrationID: calibration ID")
    (calibrationID,) = parse_command_line(maxArguments=1)

    DIRACExit(fetch_results(calibrationID, options["dir"], options["plots"]))


if __name__ == "__main__":
    main()
