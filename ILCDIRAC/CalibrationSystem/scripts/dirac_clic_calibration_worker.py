#!/usr/bin/env python
"""Run one calibration worker: the loop a calibration job executes.

Asks the Calibration service for its set-up, then per step runs the reconstruction with the
step's constants, submits the histogram summary and waits for the next step.

A worker the CalibrationAgent restarts on its own machine (single-user installations) gets
--owner-dn and --owner-group: it then uses the host certificate on the owner's behalf.

Example:
  $ dirac-clic-calibration-worker --calibration 12 --worker 3 --workdir ./worker3
"""
from pathlib import Path

from DIRAC import S_OK
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script


@Script()
def main():
    options = {"workdir": "."}

    def setter(key, convert):
        def callback(value):
            options[key] = convert(value)
            return S_OK()

        return callback

    Script.registerSwitch("", "calibration=", "calibration ID", setter("calibration", int))
    Script.registerSwitch("", "worker=", "worker ID", setter("worker", int))
    Script.registerSwitch("", "workdir=", "work directory (default: current)", setter("workdir", str))
    Script.registerSwitch(
        "", "owner-dn=", "act for this owner with the host certificate (agent only)", setter("dn", str)
    )
    Script.registerSwitch("", "owner-group=", "the owner's group (with --owner-dn)", setter("group", str))
    Script.parseCommandLine(ignoreErrors=False)
    missing = [key for key in ("calibration", "worker") if key not in options]
    if missing or ("dn" in options) != ("group" in options):
        Script.showHelp(exitCode=1)

    from ILCDIRAC.CalibrationSystem.Client.WorkerMain import run_worker

    owner = (options["dn"], options["group"]) if "dn" in options else None
    DIRACExit(run_worker(options["calibration"], options["worker"], Path(options["workdir"]), owner))


if __name__ == "__main__":
    main()
