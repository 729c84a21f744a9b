"""The local MariaDB that tests, the test bed and ``make demo`` use: 127.0.0.1:3306, root, no password.

``python -m ILCDIRAC.CalibrationSystem.localdirac.mariadb [--wait SECONDS]`` exits 0 as soon as the server
answers, else 1 (after waiting, if asked) with one line on stderr: the Makefile uses it to decide
whether to start the server and to wait until it is up. Every test bed works in its own database,
made by ``create_database`` with a unique name and removed by ``drop_database``, so runs never
share state.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import uuid

import MySQLdb

HOST = "127.0.0.1"
PORT = 3306
USER = "root"
PASSWORD = ""

# Names this module creates and is willing to drop: letters, digits and underscores only, so they
# never need quoting beyond backticks and can never smuggle SQL.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_SUFFIX_LENGTH = 12


def connect(timeout: float = 2.0, database: str | None = None) -> MySQLdb.connections.Connection:
    """A new autocommit connection to the local server (raises MySQLdb.Error if it does not answer)."""
    kwargs = {"db": database} if database else {}
    conn = MySQLdb.connect(
        host=HOST, port=PORT, user=USER, passwd=PASSWORD, connect_timeout=max(1, int(round(timeout))), **kwargs
    )
    conn.autocommit(True)
    return conn


def available(timeout: float = 2.0) -> bool:
    """True if the server accepts a connection and answers a query."""
    try:
        conn = connect(timeout)
    except MySQLdb.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except MySQLdb.Error:
        return False
    finally:
        conn.close()


def wait_until_available(seconds: float) -> bool:
    """Poll for up to ``seconds``; True as soon as the server answers."""
    deadline = time.monotonic() + max(0.0, seconds)
    while True:
        if available():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _checked(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{what} {name!r} is not valid: it must start with a letter and hold only letters, "
            "digits and underscores, at most 64 characters"
        )
    return name


def create_database(prefix: str) -> str:
    """Create an empty utf8mb4 database named ``<prefix>_<random>`` and return its name."""
    _checked(prefix, "database prefix")
    if len(prefix) > 64 - 1 - _SUFFIX_LENGTH:
        raise ValueError(f"database prefix {prefix!r} is too long: at most {64 - 1 - _SUFFIX_LENGTH} characters")
    name = f"{prefix}_{uuid.uuid4().hex[:_SUFFIX_LENGTH]}"
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()
    return name


def drop_database(name: str) -> None:
    """Drop the database ``name`` if it exists."""
    _checked(name, "database name")
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def url(name: str) -> str:
    """SQLAlchemy URL of database ``name`` on the local server (the form CalibrationDB builds from the CS)."""
    _checked(name, "database name")
    auth = USER + (f":{PASSWORD}" if PASSWORD else "")
    return f"mysql+mysqldb://{auth}@{HOST}:{PORT}/{name}?charset=utf8mb4"


def databases(prefix: str = "") -> list[str]:
    """Names of the existing databases that start with ``prefix`` (all of them for an empty prefix)."""
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            return sorted(row[0] for row in cur.fetchall() if row[0].startswith(prefix))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="keep trying for this long (default: one try)"
    )
    args = parser.parse_args(argv)
    if args.wait < 0:
        parser.error(f"--wait must not be negative, got {args.wait}")
    if wait_until_available(args.wait):
        return 0
    waited = f" after waiting {args.wait:g} s" if args.wait else ""
    print(f"MariaDB does not answer on {HOST}:{PORT} as {USER}{waited}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
