#!/usr/bin/env python
"""Kill a running calibration (its owner, or an administrator).

The workers stop at their next contact with the service; the agent kills their jobs.

Example:
  $ dirac-clic-calibration-kill 12
"""
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script


@Script()
def main():
    Script.registerArgument("calibrationID: calibration ID")
    Script.parseCommandLine()
    calibrationID = Script.getPositionalArgs(group=True)

    from ILCDIRAC.CalibrationSystem.Client.Status import kill

    DIRACExit(kill(calibrationID))


if __name__ == "__main__":
    main()
