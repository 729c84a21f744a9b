#!/usr/bin/env python
"""Show the status of your calibrations.

Without an ID: one line per calibration you own. With IDs: those calibrations, with the
constants of the current step. --json prints the service's answer as JSON.

Example:
  $ dirac-clic-calibration-status
  $ dirac-clic-calibration-status 12 --json
"""
from DIRAC import S_OK
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script


@Script()
def main():
    options = {"json": False}

    def setJson(_):
        options["json"] = True
        return S_OK()

    Script.registerSwitch("j", "json", "print JSON", setJson)
    Script.registerArgument(["calibrationID: calibration ID(s)"], mandatory=False)
    Script.parseCommandLine()
    args = Script.getPositionalArgs()

    from ILCDIRAC.CalibrationSystem.Client.Status import show_status

    DIRACExit(show_status(args, asJson=options["json"]))


if __name__ == "__main__":
    main()
