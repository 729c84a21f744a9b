"""DIRAC's command-line parsing for the calibration commands, with help that shows and usage
errors that take one line.

The commands keep DIRAC's log at ERROR level so that connection retries and configuration
notices neither bury their one-line errors nor break ``--json`` output. DIRAC prints its help
through the same log at NOTICE level, so a quiet log swallowed ``--help``; and on a usage error
DIRAC prints the one-line reason and then the whole help. Both are handled here by wrapping
DIRAC's own ``showHelp``: help asked for is printed in full, a usage error keeps only its line.
"""
from __future__ import annotations

import getopt
import sys
from typing import NoReturn


def usage_error(message: str) -> NoReturn:
    """One line on stderr naming the wrong argument, exit code 2 (as for a wrong option)."""
    from DIRAC import exit as DIRACExit

    print(f"ERROR: {message} (see --help)", file=sys.stderr)
    DIRACExit(2)


def _show_help_only_when_asked() -> None:
    from DIRAC import exit as DIRACExit
    from DIRAC import gLogger
    from DIRAC.Core.Base.Script import Script

    showHelp = Script.localCfg.showHelp

    def help_or_exit(dummy=False, exitCode=0):
        if exitCode:  # a usage error: DIRAC has already logged its one-line reason
            DIRACExit(exitCode)
        gLogger.setLevel("NOTICE")
        showHelp(dummy=dummy, exitCode=exitCode)

    Script.localCfg.showHelp = help_or_exit


def _positional_arguments(argv: list[str], optionList) -> list[str] | None:
    """The positional arguments DIRAC's parser will find (the same getopt call on the registered
    switches), or None when it will stop first (a wrong option, or help)."""
    shortOptions = "".join(option[0] for option in optionList)
    longOptions = [option[1] for option in optionList if option[1]]
    try:
        options, arguments = getopt.gnu_getopt(argv, shortOptions, longOptions)
    except getopt.GetoptError:
        return None
    return None if any(name in ("-h", "--help") for name, _ in options) else arguments


def parse_command_line(*, maxArguments: int | None, quiet: bool = True, ignoreErrors: bool = False) -> list[str]:
    """Parse the switches and arguments registered on DIRAC's ``Script``; return the positional
    arguments. More than ``maxArguments`` of them is a usage error, found before the
    configuration is loaded (DIRAC itself checks only that the mandatory ones are there).
    ``quiet`` keeps showing only DIRAC's errors after parsing; otherwise the log is quiet while
    parsing only (``-d`` shows everything in both cases)."""
    from DIRAC import gLogger
    from DIRAC.Core.Base.Script import Script

    localCfg = Script.localCfg
    arguments = _positional_arguments(sys.argv[localCfg.firstOptionIndex:], localCfg.commandOptionList)
    if arguments is not None and maxArguments is not None and len(arguments) > maxArguments:
        extra = arguments[maxArguments:]
        usage_error(f"unexpected argument{'s' if len(extra) > 1 else ''} {' '.join(map(repr, extra))}")
    _show_help_only_when_asked()
    level = gLogger.getLevel()
    gLogger.setLevel("ERROR")
    Script.parseCommandLine(ignoreErrors=ignoreErrors)
    if not quiet and gLogger.getLevel() == "ERROR":  # -d raises the level itself
        gLogger.setLevel(level)
    return list(Script.getPositionalArgs())
