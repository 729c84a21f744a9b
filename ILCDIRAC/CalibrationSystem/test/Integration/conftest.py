"""Fixtures of the integration tests: a real local DIRAC (service, optional agent, MariaDB database).

MariaDB is required: CI has it (``make test`` starts it). Only with ``CALIBRATION_ALLOW_SKIP=1``
does a missing server skip these tests instead of failing them.
"""
from __future__ import annotations

import os

import pytest

from ILCDIRAC.CalibrationSystem.localdirac import mariadb
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed

#: Workers poll every 0.2-2 s (not minutes) so steps follow each other quickly in tests.
FAST_WORKERS = {"WorkerPollMinimum": 0.2, "WorkerPollMaximum": 2, "WorkerPatience": 120}


def require_mariadb() -> None:
    """Fail (or, with CALIBRATION_ALLOW_SKIP=1, skip) the calling test if MariaDB does not answer."""
    if mariadb.available():
        return
    where = f"{mariadb.HOST}:{mariadb.PORT} as {mariadb.USER}"
    reason = f"MariaDB does not answer on {where} (start it with `make mariadb`)"
    if os.environ.get("CALIBRATION_ALLOW_SKIP") == "1":
        pytest.skip(reason)
    pytest.fail(f"{reason}; set CALIBRATION_ALLOW_SKIP=1 to skip these tests instead", pytrace=False)


@pytest.fixture(scope="module")
def testbed():
    """A test bed per test module with the Calibration service running (start the agent yourself if needed)."""
    require_mariadb()
    with Testbed(service_options=FAST_WORKERS) as tb:
        tb.start_service()
        yield tb
