"""The agent acts on the grid with the owner's proxy: ``CalibrationAgent.as_owner`` through DIRAC's
``executeWithUserProxy``, against the test bed's real ProxyManager (``Testbed(wms=True)``).

The agent runs with the host certificate, as DIRAC runs agents; every grid operation of a user's
calibration must run with that user's proxy, downloaded from the ProxyManager (which logs who took
whose proxy), and the host's own identity must be back afterwards. An owner whose proxy the
ProxyManager does not hold is a clear error naming the owner, not an operation done as the host.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ILCDIRAC.CalibrationSystem.localdirac import mariadb, wms
from ILCDIRAC.CalibrationSystem.localdirac.testbed import UNREGISTERED, Testbed, dn_string
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import require_mariadb

#: Runs as the host, like the agent: one operation as alice, one as an owner without a proxy.
PROBE = """
import json, os, sys
owners = json.loads(sys.argv[1])
sys.argv = [sys.argv[0], "-o", "/DIRAC/Security/UseServerCertificate=yes"]
from DIRAC.Core.Base.Script import Script
Script.parseCommandLine(ignoreErrors=True)
from DIRAC.Core.Security.ProxyInfo import getProxyInfo
from ILCDIRAC.CalibrationSystem.Agent.CalibrationAgent import AgentError, CalibrationAgent

def identity():
    info = getProxyInfo()["Value"]
    return {"username": info.get("username"), "group": info.get("group"), "proxy": os.environ.get("X509_USER_PROXY")}

agent = CalibrationAgent("Calibration/CalibrationAgent", "Calibration/CalibrationAgent")
out = {"before": os.environ.get("X509_USER_PROXY")}
out["alice"] = agent.as_owner(owners["alice"], identity)
try:
    out["stranger"] = agent.as_owner(owners["stranger"], identity)
except AgentError as exc:
    out["refused"] = str(exc)
out["after"] = os.environ.get("X509_USER_PROXY")
print("PROBE-RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def grid():
    require_mariadb()
    with Testbed(wms=True) as testbed:
        testbed.start_wms()
        yield testbed


def _downloads(grid) -> set[tuple[str, str, str]]:
    """(issuer DN, target DN, group) of every proxy download the ProxyManager logged."""
    conn = mariadb.connect(database=grid.wms.databases["ProxyDB"])
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT IssuerDN, TargetDN, TargetGroup FROM ProxyDB_Log WHERE Action = 'download proxy'")
            return set(cursor.fetchall())
    finally:
        conn.close()


def test_the_agent_acts_with_the_owners_proxy_and_only_with_it(grid):
    owners = {
        "alice": {"owner": "alice", "ownerDN": dn_string("alice"), "ownerGroup": wms.USER_GROUP},
        "stranger": {"owner": UNREGISTERED, "ownerDN": dn_string(UNREGISTERED), "ownerGroup": wms.USER_GROUP},
    }
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(owners)], env=grid.env("host"),
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE-RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1][len("PROBE-RESULT "):])

    assert result["alice"]["username"] == "alice" and result["alice"]["group"] == wms.USER_GROUP
    assert result["alice"]["proxy"], "the operation ran with a downloaded proxy file"
    assert "stranger" not in result, result
    assert result["refused"].startswith(f"as {UNREGISTERED}: "), result["refused"]
    assert result["before"] is None and result["after"] is None, "the host's own identity is back"
    hostDN = grid.identity("host").dn
    assert (hostDN, dn_string("alice"), wms.USER_GROUP) in _downloads(grid)
