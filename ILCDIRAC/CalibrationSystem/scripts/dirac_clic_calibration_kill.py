#!/usr/bin/env python
"""Kill a running calibration (its owner, or an administrator).

The workers stop at their next contact with the service; the agent kills their jobs.

DIRAC's own log messages show only with -d.

Example:
  $ dirac-clic-calibration-kill 12
"""
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script

from ILCDIRAC.CalibrationSystem.Client.CommandLine import parse_command_line
from ILCDIRAC.CalibrationSystem.Client.Status import kill


@Script()
def main():
    Script.registerArgument("calibrationID: calibration ID")
    (calibrationID,) = parse_command_line(maxArguments=1)

    DIRACExit(kill(calibrationID))


if __name__ == "__main__":
    main()
