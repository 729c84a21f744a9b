"""The local DIRAC test bed itself: TLS, identities, authorization, crash and restart, clean teardown."""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import subprocess
import sys

import psutil
import pytest
from diraccfg import CFG

from ILCDIRAC.CalibrationSystem.localdirac import mariadb
from ILCDIRAC.CalibrationSystem.localdirac.testbed import CODE_ROOT, HOST, USERS, Testbed, TestbedError
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import require_mariadb

BUILTIN = ("ping", "whoami", "echo")
SERVICE_SECTION = "Systems/Calibration/Test/Services/Calibration"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _value(result: dict):
    assert result["OK"], result.get("Message")
    return result["Value"]


def test_service_answers_ping_over_verified_tls(testbed):
    assert testbed.port not in range(9130, 9198) and testbed.port != 9139
    assert testbed.url == f"dips://localhost:{testbed.port}/Calibration/Calibration"
    for user in (*USERS, HOST):
        assert _value(testbed.ping(user))["name"] == "Calibration/Calibration"

    # The service presents the localhost host certificate of the test CA, SAN included ...
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(testbed.ca_dir / "ca.cert.pem"))
    alice = testbed.identity("alice")
    context.load_cert_chain(str(alice.cert), str(alice.key))
    with socket.create_connection(("127.0.0.1", testbed.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            peer = tls.getpeercert()
    assert ("commonName", "localhost") in [rdn[0] for rdn in peer["subject"]]
    assert {("DNS", "localhost"), ("IP Address", "127.0.0.1")} <= set(peer["subjectAltName"])

    # ... that a client trusting other CAs rejects.
    stranger = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", testbed.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            stranger.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("user", ["alice", "bob", "admin", HOST])
def test_whoami_sees_registered_identities(testbed, user):
    identity = testbed.identity(user)
    creds = _value(testbed.rpc(user).whoami())
    assert creds["DN"] == identity.dn
    assert creds["username"] == identity.name
    assert creds["group"] == identity.group
    assert sorted(creds["properties"]) == sorted(identity.properties)
    assert creds["isProxy"] is (user != HOST)


def test_identities_match_the_registry_design(testbed):
    expected = {
        "alice": ("calibration_user", {"NormalUser"}),
        "bob": ("calibration_user", {"NormalUser"}),
        "admin": ("calibration_admin", {"NormalUser", "JobAdministrator"}),
        HOST: ("hosts", {"TrustedHost"}),
    }
    for user, (group, properties) in expected.items():
        identity = testbed.identity(user)
        assert (identity.group, set(identity.properties)) == (group, properties)


def test_unregistered_dn_is_a_visitor_and_refused(testbed):
    mallory = testbed.identity("mallory")
    assert mallory.dn not in {testbed.identity(u).dn for u in (*USERS, HOST)}
    creds = _value(testbed.rpc("mallory").whoami())
    # TLS accepted the certificate (same CA), but the Registry does not know the DN.
    assert creds["DN"] == mallory.dn
    assert (creds["username"], creds["group"], creds["properties"]) == ("anonymous", "visitor", [])
    # Any non-builtin method is refused before it runs (Authorization/Default = authenticated).
    refused = testbed.rpc("mallory").getCalibrationStatus([])
    assert not refused["OK"] and refused.get("Errno") == 1111, refused
    assert "Unauthorized" in refused["Message"]


def test_service_uses_its_own_mariadb_database(testbed):
    conn = mariadb.connect(database=testbed.db_name)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            tables = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    assert tables, f"the service created no table in {testbed.db_name}"
    cfg = CFG().loadFromFile(str(testbed.cfg_path))
    db = cfg.getAsDict("Systems/Calibration/Test/Databases/CalibrationDB")
    assert db == {"DBName": testbed.db_name, "Host": "127.0.0.1", "Port": "3306", "User": "root", "Password": ""}


def test_activation_swaps_and_restores_the_in_process_configuration(testbed):
    from DIRAC import gConfig
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData
    from DIRAC.Core.Base.Client import Client
    from DIRAC.Core.Security import Locations

    testbed.deactivate()
    before = gConfig.getValue("/DIRAC/Setup", "")
    with testbed.activated():
        assert gConfig.getValue("/DIRAC/Setup", "") == testbed.setup
        assert gConfig.getValue("/Systems/Calibration/Test/URLs/Calibration", "") == testbed.url
        assert Locations.getCAsLocation() == str(testbed.ca_dir)
        with testbed.as_user("bob"):
            assert _value(Client(url="Calibration/Calibration").whoami())["username"] == "bob"
        with testbed.as_user(HOST):
            assert _value(Client(url="Calibration/Calibration").whoami())["group"] == "hosts"
    assert not testbed.active
    assert gConfig.getValue("/DIRAC/Setup", "") == before

    # A unit test's fake-CS fixture may reset gConfig behind the test bed's back: rpc() reinstalls it.
    testbed.activate()
    gConfigurationData.localCFG = CFG()
    gConfigurationData.sync()
    assert _value(testbed.rpc("alice").whoami())["username"] == "alice"
    testbed.deactivate()
    assert gConfig.getValue("/DIRAC/Setup", "") == before


def test_env_lets_subprocesses_act_as_a_user(testbed):
    probe = (
        "import json\n"
        "from DIRAC.Core.Base.Script import Script\n"
        "Script.parseCommandLine(ignoreErrors=True)\n"
        "from DIRAC.Core.Base.Client import Client\n"
        "import ILCDIRAC.CalibrationSystem as package\n"
        "creds = Client(url='Calibration/Calibration').whoami()['Value']\n"
        "print('RESULT', json.dumps([creds['username'], creds['group'], package.__file__]))\n"
    )
    for user in ("alice", "bob"):
        done = subprocess.run(
            [sys.executable, "-c", probe], env=testbed.env(user), cwd=testbed.root, capture_output=True, text=True
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert done.returncode == 0 and lines, done.stdout + done.stderr
        username, group, package = json.loads(lines[-1][len("RESULT ") :])
        assert (username, group) == (user, "calibration_user")
        assert package == str(CODE_ROOT / "ILCDIRAC" / "CalibrationSystem" / "__init__.py")


def test_kill_9_and_restart(testbed):
    old = psutil.Process(testbed.service.pid)
    assert testbed.kill_service() == -signal.SIGKILL
    assert not old.is_running()
    assert not _port_open(testbed.port)
    with pytest.raises(TestbedError, match="not running"):
        testbed.kill_service()

    testbed.restart_service()
    assert testbed.service.pid != old.pid
    assert _value(testbed.rpc("alice").whoami())["username"] == "alice"
    # A graceful restart of a running service works as well.
    running = testbed.service.pid
    testbed.restart_service()
    assert testbed.service.pid != running and _value(testbed.ping())["name"] == "Calibration/Calibration"


def test_stop_kills_and_reports_what_a_killed_service_left_behind(testbed):
    """The service's closer child ends itself once the service is gone; one that cannot (stopped
    here, like a child stuck in a computation) keeps the resource tracker alive with it. Nothing
    stops them with the killed service, so the test bed's stop must find them in its process group."""
    service = psutil.Process(testbed.service.pid)
    child = next(p for p in service.children() if "spawn_main" in " ".join(p.cmdline()))
    left = [child, *(p for p in service.children() if p.pid != child.pid)]
    child.suspend()
    testbed.kill_service()
    try:
        with pytest.raises(TestbedError, match=rf"killed: .*\b{child.pid} \(.*spawn_main"):
            testbed.stop()
        _, alive = psutil.wait_procs(left, timeout=5)
        assert alive == []
        testbed.stop()
    finally:
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        testbed.start_service()


def test_close_leaves_no_process_database_or_folder():
    require_mariadb()
    tb = Testbed(polling_time=1, keep=False)
    try:
        tb.start_service()
        tb.start_agent()
        processes = [psutil.Process(pid) for pid in tb.pids]
        assert len(processes) == 2 and all(p.is_running() for p in processes)
        root, db_name = tb.root, tb.db_name
        assert mariadb.databases(db_name) == [db_name]
        _value(tb.rpc("alice").whoami())
        assert tb.active
    finally:
        tb.close()
    assert not tb.active
    assert not any(p.is_running() for p in processes)
    leftovers = []
    for proc in psutil.process_iter(["pid", "environ"]):
        if (proc.info["environ"] or {}).get("DIRAC_ROOT_PATH") == str(root):
            leftovers.append(proc.info["pid"])
    assert leftovers == []
    assert db_name not in mariadb.databases()
    assert not root.exists()
    with pytest.raises(TestbedError, match="closed"):
        tb.start_service()


def test_sqlite_testbed_with_overrides(tmp_path):
    extra = "Operations\n{\n  Defaults\n  {\n    Calibration\n    {\n      Flavour = vanilla\n    }\n  }\n}\n"
    with Testbed(
        database="sqlite",
        polling_time=3,
        service_options={"MaxThreads": 4, "Authorization/whoami": "authenticated"},
        agent_options={"MaxCycles": 1},
        extra_cfg=extra,
        base_dir=tmp_path,
    ) as tb:
        assert tb.root.parent == tmp_path.resolve() and tb.db_name is None
        cfg = CFG().loadFromFile(str(tb.cfg_path))
        system = "Systems/Calibration/Test"
        db = cfg.getAsDict(f"{system}/Databases/CalibrationDB")
        assert "Host" not in db and db["SQLitePath"] == str(tb.root / "CalibrationDB.sqlite")
        assert cfg.getOption(f"{SERVICE_SECTION}/Port") == str(tb.port)
        assert cfg.getOption(f"{SERVICE_SECTION}/MaxThreads") == "4"
        assert cfg.getOption(f"{SERVICE_SECTION}/Authorization/whoami") == "authenticated"
        # Options of ConfigTemplate.cfg are kept where not overridden.
        assert cfg.getOption(f"{SERVICE_SECTION}/Authorization/Default") == "authenticated"
        assert cfg.getOption(f"{SERVICE_SECTION}/HandlerPath").startswith("ILCDIRAC/CalibrationSystem/")
        assert cfg.getOption(f"{system}/Agents/CalibrationAgent/PollingTime") == "3"
        assert cfg.getOption(f"{system}/Agents/CalibrationAgent/MaxCycles") == "1"
        assert cfg.getOption("Operations/Defaults/Calibration/Flavour") == "vanilla"

        tb.start_service()
        assert tb.sqlite_path.is_file()
        # With Authorization/whoami = authenticated, the unregistered DN no longer even gets whoami.
        assert _value(tb.rpc("alice").whoami())["username"] == "alice"
        assert tb.rpc("mallory").whoami().get("Errno") == 1111
    assert not tb.root.exists()


def test_keep_leaves_the_folder_for_debugging(tmp_path):
    tb = Testbed(database="sqlite", keep=True, base_dir=tmp_path)
    tb.close()
    assert (tb.root / "etc" / "dirac.cfg").is_file()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"database": "oracle"}, "database must be 'mariadb' or 'sqlite'"),
        ({"polling_time": 0}, "polling_time must be"),
        ({"service_options": {"Port/": 1, "": 2}}, "not a non-empty cfg path"),
        ({"agent_options": {"Note": "a # b"}}, "cannot hold a newline or '#'"),
        ({"agent_options": {"Bad": object()}}, "cannot write a object"),
        ({"extra_cfg": "Broken\n{\n"}, "extra_cfg is not valid cfg text"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Testbed(database=kwargs.pop("database", "sqlite"), base_dir=tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_mariadb_helper_names_are_unique_and_checked():
    require_mariadb()
    first, second = mariadb.create_database("calib_tb"), mariadb.create_database("calib_tb")
    try:
        assert first != second and first.startswith("calib_tb_")
        assert set(mariadb.databases("calib_tb_")) >= {first, second}
        assert mariadb.url(first) == f"mysql+mysqldb://root@127.0.0.1:3306/{first}?charset=utf8mb4"
    finally:
        mariadb.drop_database(first)
        mariadb.drop_database(second)
    assert not {first, second} & set(mariadb.databases("calib_tb_"))
    for bad in ("1st", "calib-tb", "x`; DROP DATABASE mysql; --", ""):
        with pytest.raises(ValueError, match="must start with a letter"):
            mariadb.create_database(bad)
        with pytest.raises(ValueError, match="must start with a letter"):
            mariadb.drop_database(bad)
    with pytest.raises(ValueError, match="too long"):
        mariadb.create_database("p" * 60)
