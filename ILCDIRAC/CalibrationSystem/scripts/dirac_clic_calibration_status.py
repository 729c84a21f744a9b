#!/usr/bin/env python
"""Show the status of your calibrations.

Without an ID: one line per calibration you own. With IDs: those calibrations, with the
constants of the current step (or the final ones) and every worker's job, state and
ApplicationStatus. --json prints the service's answer as JSON.

DIRAC's own log messages show only with -d.

Example:
  $ dirac-clic-calibration-status
  $ dirac-clic-calibration-status 12 --json
"""
from DIRAC import S_OK
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script

from ILCDIRAC.CalibrationSystem.Client.CommandLine import parse_command_line
from ILCDIRAC.CalibrationSystem.Client.Status import show_status


@Script()
def main():
    options = {"json": False}

    def setJson(_):
        options["json"] = True
        return S_OK()

    Script.registerSwitch("j", "json", "print JSON", setJson)
    Script.registerArgument(["calibrationID: calibration ID(s)"], mandatory=False)
    args = parse_command_line(maxArguments=None)

    DIRACExit(show_status(args, asJson=options["json"]))


if __name__ == "__main__":
    main()
