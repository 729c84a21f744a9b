"""Relative file names that may travel with a calibration, checked in one place.

A calibration's input files keep the layout of the user's reconstruction folder
(``PandoraSettingsCLD/PandoraSettingsDefault.xml``, ``Calibration/Calibration_ILD.xml``): the
service stores them under these names and every worker writes them below its work directory.
A name is therefore only ever a normalised relative POSIX path that stays inside the folder it
is written to: no absolute path, no ``..``, no empty or control characters, and bounded length
and depth (the database stores file names in 255 characters, with room for the ``result_``
prefix of the delivered copies).
"""
from __future__ import annotations

from pathlib import PurePosixPath

#: Longest relative path (characters) and deepest folder nesting an input file may have.
MAX_PATH_LENGTH = 200
MAX_PATH_DEPTH = 8


class PathError(ValueError):
    """A file name that cannot be used as a relative path inside a calibration's folder."""


def relative_path(name: object) -> str:
    """``name`` as a normalised relative POSIX path (``a//./b`` -> ``a/b``), or PathError saying why not."""
    if not isinstance(name, str):
        raise PathError(f"a file name must be text, not {type(name).__name__}")
    shown = name if len(name) <= 80 else name[:77] + "..."
    if not name.strip():
        raise PathError("a file name must not be empty")
    if len(name) > MAX_PATH_LENGTH:
        raise PathError(f"file name {shown!r} is longer than {MAX_PATH_LENGTH} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in name) or "\\" in name:
        raise PathError(f"file name {shown!r} contains control characters or backslashes")
    if name.startswith("/"):
        raise PathError(f"file name {shown!r} is an absolute path; only paths relative to the steering file's folder travel")
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if ".." in parts:
        raise PathError(f"file name {shown!r} leaves its folder ('..'); only files below the steering file's folder travel")
    if not parts:
        raise PathError(f"file name {shown!r} names no file")
    if len(parts) > MAX_PATH_DEPTH:
        raise PathError(f"file name {shown!r} is nested deeper than {MAX_PATH_DEPTH} folders")
    return "/".join(parts)


def path_problem(name: object) -> str | None:
    """Why ``name`` is not a usable relative path, or None."""
    try:
        relative_path(name)
    except PathError as exc:
        return str(exc)
    return None


__all__ = ["MAX_PATH_DEPTH", "MAX_PATH_LENGTH", "PathError", "path_problem", "relative_path"]
