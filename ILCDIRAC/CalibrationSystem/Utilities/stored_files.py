"""The names of the files a calibration stores, and how a stored file travels over RPC.

Shared by the service (which names and serves them), the user's commands (which download the
results) and the agent (which delivers them): pure, so that none of them loads the service's
logic or database to know a file name.
"""
from __future__ import annotations

import base64
import re

RESULT_PREFIX = "result_"
CONSTANTS_FILE = RESULT_PREFIX + "constants.json"
HISTORY_FILE = RESULT_PREFIX + "history.json"
PLOT_FILE = RESULT_PREFIX + "convergence.png"
CONSTANTS_PLOT_FILE = RESULT_PREFIX + "constants.png"
WORKERS_PLOT_FILE = RESULT_PREFIX + "workers.png"
PLOT_FILES = (PLOT_FILE, CONSTANTS_PLOT_FILE, WORKERS_PLOT_FILE)
#: Names the user's own files cannot have: in the result folder they would meet these files.
RESULT_NAMES = tuple(name.removeprefix(RESULT_PREFIX) for name in (CONSTANTS_FILE, HISTORY_FILE, *PLOT_FILES))
#: Longest stored file name (the Files table's Name column).
MAX_FILE_NAME = 255


def is_input_file(name: str) -> bool:
    """Files the user submitted (steering, included and Pandora files), as opposed to files the
    calibration made: step artifacts (``step<N>_...``, fetched when a step needs them) and
    results (whose names the user's files must not take in the result set)."""
    return not (name.startswith(RESULT_PREFIX) or re.match(r"step\d+_", name) or name in RESULT_NAMES)


def encode_file(content: bytes) -> dict[str, str]:
    """A stored file as ``getCalibrationFile`` answers it: its text, or base64 for binary files
    such as the convergence plot (DIRAC's encoding carries strings, not bytes)."""
    try:
        return {"encoding": "utf-8", "content": content.decode()}
    except UnicodeDecodeError:
        return {"encoding": "base64", "content": base64.b64encode(content).decode()}


def decode_file(stored: dict[str, str]) -> bytes:
    """The bytes of a file as ``getCalibrationFile`` returns it (``encode_file``'s inverse)."""
    if stored["encoding"] == "base64":
        return base64.b64decode(stored["content"])
    return stored["content"].encode()
