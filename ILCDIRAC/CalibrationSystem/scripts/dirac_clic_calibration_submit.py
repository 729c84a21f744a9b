#!/usr/bin/env python
"""Submit a PandoraPFA calorimeter calibration.

Reads a settings file (YAML, or the legacy "key value" text format), creates the calibration in
the Calibration service, starts its workers through the chosen backend and prints the ID.
With --dry-run only validates the settings file (no service is contacted) and prints the
resolved settings, or every problem found.

DIRAC's own log messages show only with -d.

Example:
  $ dirac-clic-calibration-submit settings.yaml
  $ dirac-clic-calibration-submit --dry-run settings.txt
"""
import sys
from pathlib import Path

from DIRAC import S_OK
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script

from ILCDIRAC.CalibrationSystem.Client.CommandLine import parse_command_line


@Script()
def main():
    options = {"dryRun": False, "workdir": None}

    def setDryRun(_):
        options["dryRun"] = True
        return S_OK()

    def setWorkdir(value):
        options["workdir"] = value
        return S_OK()

    Script.registerSwitch("n", "dry-run", "only validate the settings file and print the resolved settings", setDryRun)
    Script.registerSwitch(
        "", "workdir=", "local backend: folder for the workers (default ./calibration-work)", setWorkdir
    )
    Script.registerArgument("settings: the calibration settings file")
    # a dry run needs no DIRAC installation at all: no configuration service, no dirac.cfg
    dryRun = "--dry-run" in sys.argv or "-n" in sys.argv
    if dryRun:
        Script.disableCS()
    (settingsFile,) = parse_command_line(maxArguments=1, ignoreErrors=dryRun)

    from ILCDIRAC.CalibrationSystem.Client.Submission import dry_run, submit

    if options["dryRun"]:
        DIRACExit(dry_run(settingsFile))
    DIRACExit(submit(settingsFile, Path(options["workdir"] or "calibration-work")))


if __name__ == "__main__":
    main()
