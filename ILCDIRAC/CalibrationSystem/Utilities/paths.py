"""Rules for path names that come from users, applied where the names are used.

Users are untrusted, and a name they chose must never lead a worker, the service or the agent
out of the place meant for it. The rules are general, not a list of bad examples:
- a name is split on ``/``; empty and ``.`` components are dropped (they change nothing), a
  ``..`` component is refused (it is the only way out), and so are control characters and
  components or names longer than the file system allows;
- an LFN is absolute (``/vo/...``), optionally written ``LFN:/vo/...``, and is compared in that
  normal form, so ``/ilc/user/a/alice/../bob`` can never pass as one of alice's folders;
- a file is written below a folder only through ``open_below``/``folder_below``, which create
  the folders themselves and never follow a symbolic link, whoever planted it;
- the files of a user's reconstruction folder travel with a calibration under their paths
  relative to the steering file's folder (``relative_path``): normal form, never absolute, never
  ``..``, and bounded in length and depth (the service stores names in 255 characters, with room
  for the ``result_`` prefix of the delivered copies).
Pure: no DIRAC, no network.
"""
from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from pathlib import Path

LFN_PREFIX = "LFN:"
#: Longest path (PATH_MAX) and file name (NAME_MAX) of Linux file systems.
MAX_PATH_LENGTH = 4096
MAX_NAME_LENGTH = 255
#: Longest relative path (characters) and deepest folder nesting of an input file.
MAX_INPUT_PATH_LENGTH = 200
MAX_INPUT_PATH_DEPTH = 8
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PathError(ValueError):
    """A path name that breaks the rules; the message says which rule (never the whole name)."""


def components(path: str, what: str = "path") -> list[str]:
    """The components of ``path`` with empty and ``.`` ones dropped; ``..`` is refused."""
    if not isinstance(path, str) or not path:
        raise PathError(f"{what} must be a non-empty string")
    if len(path) > MAX_PATH_LENGTH:
        raise PathError(f"{what} is {len(path)} characters long, more than {MAX_PATH_LENGTH}")
    if _CONTROL.search(path):
        raise PathError(f"{what} contains control characters")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathError(f"{what} contains '..'")
    if any(len(part.encode()) > MAX_NAME_LENGTH for part in parts):
        raise PathError(f"{what} has a component longer than {MAX_NAME_LENGTH} bytes")
    return parts


def normal_lfn(text: str, what: str = "LFN") -> str:
    """An LFN (``/vo/...`` or ``LFN:/vo/...``) in normal form: ``/vo/...``, no trailing slash."""
    if not isinstance(text, str):
        raise PathError(f"{what} must be a string")
    path = text.removeprefix(LFN_PREFIX)
    if not path.startswith("/"):
        raise PathError(f"{what} must be an absolute LFN such as /ilc/user/a/alice/folder")
    parts = components(path, what)
    if not parts:
        raise PathError(f"{what} names no folder")
    return "/" + "/".join(parts)


def lfn_within(lfn: str, folder: str) -> bool:
    """Whether the normal-form ``lfn`` is ``folder`` or below it."""
    return lfn == folder or lfn.startswith(folder.rstrip("/") + "/")


def user_home(vo: str, prefix: str, username: str) -> str:
    """A user's grid folder by DIRAC's convention (the job wrapper's): /<vo>/<LFNUserPrefix>/<u>/<username>."""
    return normal_lfn(f"/{vo}/{prefix}/{username[:1]}/{username}", "user folder")


def is_url(name: str) -> bool:
    return bool(_URL.match(name))


def sample_file(name: str, what: str = "sample file") -> str:
    """A sample file name in normal form, or PathError.

    ``LFN:/...`` is an LFN; a URL (``root://...``) is passed to the reconstruction unchanged; any
    other name is a path: absolute (an LFN on the grid, a file of the submitting machine for the
    local backend) or relative to the worker's folder, and never climbs out with ``..``."""
    if not isinstance(name, str) or not name.strip():
        raise PathError(f"{what} must be a non-empty string")
    name = name.strip()
    if is_url(name):
        if len(name) > MAX_PATH_LENGTH or _CONTROL.search(name):
            raise PathError(f"{what} is not a usable URL (too long or control characters)")
        return name
    if name.startswith(LFN_PREFIX):
        return LFN_PREFIX + normal_lfn(name, what)
    parts = components(name, what)
    if not parts:
        raise PathError(f"{what} names no file")
    return ("/" if name.startswith("/") else "") + "/".join(parts)


def relative_path(name: object, what: str = "file name") -> str:
    """An input file's name as a normalised relative POSIX path (``a//./b`` -> ``a/b``), or
    PathError saying why it cannot travel with a calibration."""
    if not isinstance(name, str):
        raise PathError(f"a {what} must be text, not {type(name).__name__}")
    shown = f"{what} {name if len(name) <= 80 else name[:77] + '...'!r}"
    if name.startswith("/"):
        raise PathError(f"{shown} is an absolute path; only paths relative to the steering file's folder travel")
    if len(name) > MAX_INPUT_PATH_LENGTH:
        raise PathError(f"{shown} is longer than {MAX_INPUT_PATH_LENGTH} characters")
    if "\\" in name:
        raise PathError(f"{shown} contains backslashes")
    parts = components(name, shown)
    if not parts:
        raise PathError(f"{shown} names no file")
    if len(parts) > MAX_INPUT_PATH_DEPTH:
        raise PathError(f"{shown} is nested deeper than {MAX_INPUT_PATH_DEPTH} folders")
    return "/".join(parts)


def path_problem(name: object) -> str | None:
    """Why ``name`` is not a usable input file name, or None."""
    try:
        relative_path(name)
    except PathError as exc:
        return str(exc)
    return None


def confined(root: Path, relative: str, what: str = "path") -> Path:
    """``root``/``relative``, refused if it would end up outside ``root`` (``..`` or a link on the way)."""
    parts = components(relative.lstrip("/"), what)
    path = Path(root).joinpath(*parts)
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise PathError(f"{what} leads out of {root}")
    return path


# ------------------------------------------------------------------------------------ safe writes
def _open_folder(parent: int, name: str) -> int:
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PathError(f"{name} is a symbolic link or not a folder: refused") from None
        raise


def _walk(root: Path, folders: Sequence[str]) -> int:
    """A descriptor of root/folders..., each folder created if missing and none a link."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in folders:
            if name in ("", ".", "..") or "/" in name:
                raise PathError(f"{name!r} is not a plain folder name")
            child = _open_folder(fd, name)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def folder_below(root: Path, folders: Sequence[str]) -> Path:
    """root/folders..., created (mode 700) where missing, refused if any of them is a link."""
    os.close(_walk(root, folders))
    return Path(root).joinpath(*folders)


def open_below(root: Path, folders: Sequence[str], name: str, flags: int, mode: int = 0o600) -> int:
    """Open root/folders.../name with ``flags`` (the folders created as in ``folder_below``),
    never following a link, not even a planted ``name``."""
    if name in ("", ".", "..") or "/" in name:
        raise PathError(f"{name!r} is not a plain file name")
    fd = _walk(root, folders)
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathError(f"{name} in {Path(root).joinpath(*folders)} is a symbolic link: refused") from None
        raise
    finally:
        os.close(fd)


__all__ = [
    "LFN_PREFIX",
    "PathError",
    "components",
    "confined",
    "folder_below",
    "is_url",
    "lfn_within",
    "normal_lfn",
    "open_below",
    "path_problem",
    "relative_path",
    "sample_file",
    "user_home",
]
