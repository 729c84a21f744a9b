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

from ILCDIRAC.CalibrationSystem.Client.CommandLine import parse_command_line, usage_error


@Script()
def main():
    options = {"workdir": "."}

    def setter(key):
        def callback(value):
            options[key] = value
            return S_OK()

        return callback

    Script.registerSwitch("", "calibration=", "calibration ID", setter("calibration"))
    Script.registerSwitch("", "worker=", "worker ID", setter("worker"))
    Script.registerSwitch("", "workdir=", "work directory (default: current)", setter("workdir"))
    Script.registerSwitch("", "owner-dn=", "act for this owner with the host certificate (agent only)", setter("dn"))
    Script.registerSwitch("", "owner-group=", "the owner's group (with --owner-dn)", setter("group"))
    parse_command_line(maxArguments=0, quiet=False)
    for key in ("calibration", "worker"):
        if key not in options:
            usage_error(f"--{key} is required")
        if not options[key].isdigit():
            usage_error(f"--{key} takes a whole number, not {options[key]!r}")
    if ("dn" in options) != ("group" in options):
        usage_error("--owner-dn and --owner-group go together")

    from ILCDIRAC.CalibrationSystem.Client.WorkerMain import run_worker

    owner = (options["dn"], options["group"]) if "dn" in options else None
    DIRACExit(run_worker(int(options["calibration"]), int(options["worker"]), Path(options["workdir"]), owner))


if __name__ == "__main__":
    main()
