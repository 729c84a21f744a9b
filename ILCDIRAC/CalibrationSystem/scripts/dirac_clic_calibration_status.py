#!/usr/bin/env python
"""Show the status of your calibrations.

Without an ID: one line per calibration you own. With IDs: those calibrations, with the
constants of the current step (or the final ones) and every worker's job, state and
ApplicationStatus. --json prints the service's answer as JSON.

--watch follows one calibration until it ends: on a terminal the view (stage, phase, step,
results in and needed, each phase's latest observable/target against the requested accuracy,
stragglers, elapsed time and an estimate of the time left) is redrawn in place; otherwise one
line is appended per change. Exit code: 0 finished, 3 failed, 4 killed, 1 the command failed.

DIRAC's own log messages show only with -d.

Example:
  $ dirac-clic-calibration-status
  $ dirac-clic-calibration-status 12 --json
  $ dirac-clic-calibration-status 12 --watch
"""
from DIRAC import S_OK
from DIRAC import exit as DIRACExit
from DIRAC.Core.Base.Script import Script

from ILCDIRAC.CalibrationSystem.Client.CommandLine import (
    parse_command_line,
    usage_error,
)
from ILCDIRAC.CalibrationSystem.Client.Status import show_status, watch_status


@Script()
def main():
    options = {"json": False, "watch": False, "interval": None}

    def setter(key, value=None):
        def callback(given):
            options[key] = given if value is None else value
            return S_OK()

        return callback

    Script.registerSwitch("j", "json", "print JSON", setter("json", True))
    Script.registerSwitch("w", "watch", "follow one calibration until it ends", setter("watch", True))
    Script.registerSwitch("", "interval=", "with --watch: seconds between updates (1-600, default 5)",
                          setter("interval"))
    Script.registerArgument(["calibrationID: calibration ID(s)"], mandatory=False)
    args = parse_command_line(maxArguments=None)

    if options["interval"] is not None and not options["watch"]:
        usage_error("--interval goes with --watch")
    if options["watch"]:
        interval = _interval(options["interval"] or "5")
        if len(args) != 1 or options["json"]:
            usage_error("--watch follows exactly one calibration ID, without --json")
        DIRACExit(watch_status(args, interval))
    DIRACExit(show_status(args, asJson=options["json"]))


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        usage_error(f"--interval takes a number of seconds, not {text!r}")
    if not 1 <= value <= 600:
        usage_error(f"--interval must be between 1 and 600 seconds, not {text}")
    return value


if __name__ == "__main__":
    main()
