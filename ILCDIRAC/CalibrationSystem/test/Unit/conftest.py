"""The unit tests: the pure logic, the worker, and the database logic on SQLite, in seconds.

They need no MariaDB, and a guard makes that a checked fact rather than a habit: while they run,
every MySQL connection (direct or through SQLAlchemy) fails at once with a clear message. A test
that needs MariaDB belongs in test/Integration.
"""
from __future__ import annotations

import MySQLdb
import pytest


class MariaDBInUnitTest(AssertionError):
    """A unit test tried to reach MariaDB."""


def _refuse(*args, **kwargs):
    raise MariaDBInUnitTest("a unit test tried to connect to MariaDB: use SQLite, or move it to test/Integration")


@pytest.fixture(scope="package", autouse=True)
def no_mariadb():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MySQLdb, "connect", _refuse)
        yield
