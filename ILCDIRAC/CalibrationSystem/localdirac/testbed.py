"""A throwaway local DIRAC installation for the Calibration system: integration tests and ``make demo``.

``Testbed()`` builds, in a fresh temporary folder, everything a real DIRAC deployment has, with
nothing shared between runs:
- a CA, a host certificate for ``localhost`` (SAN ``DNS:localhost, IP:127.0.0.1``) and user
  certificates with DIRAC proxies for ``alice`` and ``bob`` (group ``calibration_user``) and
  ``admin`` (group ``calibration_admin``), plus ``mallory``, signed by the same CA but absent from
  the Registry;
- ``<root>/etc/dirac.cfg``: the Registry (every group in VO ``ilc``, so each user has a grid
  folder ``/ilc/user/<initial>/<name>``) and the ``Systems/Calibration/<instance>`` section built
  from this package's ``ConfigTemplate.cfg``, on a free port, with its own database (a fresh
  MariaDB database, or an SQLite file with ``database="sqlite"``); unless ``local_backend=False``
  it is a single-user installation: the registered users may run ``backend: local`` calibrations
  and the agent restarts their workers below ``<root>/work/Calibration/local`` (``local_dir``);
- the real ``dirac-service Calibration/Calibration`` and ``dirac-agent Calibration/CalibrationAgent``
  processes, run from this interpreter's ``bin`` folder with the folder that holds *this*
  ``ILCDIRAC/CalibrationSystem`` first on PYTHONPATH, so the code under test is what DIRAC runs.

The calling process can act as any identity too: ``rpc(user)`` gives a DISET client and
``activate()`` swaps this test bed's configuration into the in-process ``gConfig`` (and
``deactivate()`` swaps the previous one back). ``close()`` (or leaving the ``with`` block) stops
every process, drops the database and removes the folder; an ``atexit`` hook and, for processes
started from the main thread, the kernel's parent-death signal make sure nothing outlives the
caller even when it is interrupted. Set ``keep=True`` or ``CALIBRATION_TESTBED_KEEP=1`` to keep
the folder and the database for debugging.

``Testbed(wms=True)`` adds a real DIRAC Workload Management System, a file catalog, a local
storage element, a pilot and a stand-in CVMFS folder (``localdirac/wms.py``; ``start_wms()`` starts it).
The users' group is then ``ilc_user`` (iLCDirac submits user jobs with no other), the
administrator's ``ilc_admin``, and a ``pilot`` identity holds a generic pilot proxy.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import os
import random
import shutil
import signal as _signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from diraccfg import CFG

from ILCDIRAC.CalibrationSystem.localdirac import mariadb

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The folder that holds ILCDIRAC/CalibrationSystem: the repository root in a checkout.
CODE_ROOT = PACKAGE_DIR.parents[1]
CONFIG_TEMPLATE = PACKAGE_DIR / "ConfigTemplate.cfg"

SYSTEM = "Calibration"
SERVICE = "Calibration/Calibration"
AGENT = "Calibration/CalibrationAgent"
HOST = "host"
HOST_NAME = "localhost"
UNREGISTERED = "mallory"
GROUPS: dict[str, tuple[str, ...]] = {
    "calibration_user": ("NormalUser",),
    "calibration_admin": ("NormalUser", "JobAdministrator"),
}
USERS: dict[str, str] = {"alice": "calibration_user", "bob": "calibration_user", "admin": "calibration_admin"}
HOST_PROPERTIES: tuple[str, ...] = ("TrustedHost",)
VO = "ilc"

_DN_BASE = (("C", "ch"), ("O", "DIRAC"), ("OU", "Calibration Testbed"))
_NAME_OIDS = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME}
_DIRAC_PORTS = range(9130, 9198)
# Below Linux's ephemeral range, so no outgoing connection takes the port between runs or restarts.
_PORT_RANGE = (20000, 32000)
_CERT_DAYS = 7
_PROXY_SECONDS = 7 * 24 * 3600
_STOP_GRACE = 5.0
# Variables that would point DIRAC, OpenSSL or requests at credentials or configuration other than ours.
_FOREIGN_ENV = (
    "DIRACSYSCONFIG",
    "GRID_PROXY_FILE",
    "X509_USER_PROXY",
    "X509_USER_CERT",
    "X509_USER_KEY",
    "X509_VOMS_DIR",
    "DIRAC_X509_HOST_CERT",
    "DIRAC_X509_HOST_KEY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)
_SETPRIV = shutil.which("setpriv")


class TestbedError(RuntimeError):
    """A test bed could not be built, or one of its processes misbehaved."""

    __test__ = False


@dataclass(frozen=True)
class Identity:
    """Who a test bed credential is, as the Registry (and therefore the service) sees it."""

    name: str
    dn: str
    group: str
    properties: tuple[str, ...]
    cert: Path
    key: Path
    proxy: Path | None


def dn_string(cn: str) -> str:
    """The DIRAC form (``/C=ch/O=DIRAC/...``) of the DN the test bed gives ``cn``."""
    return "".join(f"/{attr}={value}" for attr, value in (*_DN_BASE, ("CN", cn)))


# --------------------------------------------------------------------------- credentials
def _x509_name(cn: str) -> x509.Name:
    attrs = [x509.NameAttribute(_NAME_OIDS[attr], value) for attr, value in _DN_BASE]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _key_usage(*, cert_sign: bool = False, non_repudiation: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=non_repudiation,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


class _CA:
    """A minimal CA in the layout DIRAC and OpenSSL expect (``certificates/<hash>.0``)."""

    def __init__(self, folder: Path, certificates: Path):
        self.key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        self.notBefore = now - datetime.timedelta(hours=1)
        self.notAfter = now + datetime.timedelta(days=_CERT_DAYS)
        name = _x509_name("Calibration Testbed CA")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.notBefore)
            .not_valid_after(self.notAfter)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        certificates.mkdir(parents=True, exist_ok=True)
        _write_key(self.key, folder / "ca.key.pem")
        self.certPath = certificates / "ca.cert.pem"
        _write_cert(self.cert, self.certPath)
        (certificates / f"{_subject_hash(self.certPath)}.0").symlink_to(self.certPath.name)

    def issue(self, cn: str, certPath: Path, keyPath: Path, *, server: bool) -> None:
        """Sign a new key for ``cn``: a host certificate (server) or a user certificate."""
        key = _new_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_x509_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.notBefore)
            .not_valid_after(self.notAfter)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server:
            builder = (
                builder.add_extension(_key_usage(), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False,
                )
                .add_extension(
                    x509.SubjectAlternativeName(
                        [x509.DNSName(HOST_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                    ),
                    critical=False,
                )
            )
        else:
            builder = builder.add_extension(_key_usage(non_repudiation=True), critical=True).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        certPath.parent.mkdir(parents=True, exist_ok=True)
        _write_cert(builder.sign(self.key, hashes.SHA256()), certPath)
        _write_key(key, keyPath)


def _subject_hash(certPath: Path) -> str:
    """OpenSSL's subject hash, the name OpenSSL looks a CA up by in a ``-CApath`` folder."""
    out = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(certPath)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise TestbedError(f"openssl could not hash the test CA certificate {certPath}: {out.stderr.strip()}")
    return out.stdout.strip()


def _make_proxy(identity: Identity) -> None:
    """A DIRAC proxy carrying the identity's group (DIRAC's own X509Chain: ~0.15 s, vs ~1.3 s for dirac-proxy-init)."""
    from DIRAC.Core.Security.X509Chain import X509Chain

    chain = X509Chain()
    for result in (chain.loadChainFromFile(str(identity.cert)), chain.loadKeyFromFile(str(identity.key))):
        if not result["OK"]:
            raise TestbedError(f"cannot load the certificate of {identity.name}: {result['Message']}")
    result = chain.generateProxyToFile(str(identity.proxy), _PROXY_SECONDS, diracGroup=identity.group or False)
    if not result["OK"]:
        raise TestbedError(f"cannot create the proxy of {identity.name}: {result['Message']}")


# --------------------------------------------------------------------------- configuration
def _nested(options: Mapping[str, Any]) -> dict[str, Any]:
    """``{"Authorization/Default": "all"}`` -> ``{"Authorization": {"Default": "all"}}``; values become cfg strings."""
    tree: dict[str, Any] = {}
    for path, value in options.items():
        if not isinstance(path, str) or not path.strip("/"):
            raise ValueError(f"option name {path!r} is not a non-empty cfg path")
        *sections, leaf = path.strip("/").split("/")
        node = tree
        for section in sections:
            child = node.setdefault(section, {})
            if not isinstance(child, dict):
                raise ValueError(f"option {path!r} needs {section!r} to be a section, but it is also given as a value")
            node = child
        if isinstance(value, Mapping):
            existing = node.setdefault(leaf, {})
            if not isinstance(existing, dict):
                raise ValueError(f"option {path!r} is given both as a value and as a section")
            existing.update(_nested(value))
        else:
            node[leaf] = _cfg_value(path, value)
    return tree


def _cfg_value(path: str, value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cfg_value(path, item) for item in value)
    if isinstance(value, (str, int, float, Path)):
        text = str(value)
        if "\n" in text or "#" in text:
            raise ValueError(f"option {path!r}: a cfg value cannot hold a newline or '#', got {text!r}")
        return text
    raise ValueError(f"option {path!r}: cannot write a {type(value).__name__} ({value!r}) into a cfg file")


def _cfg(tree: Mapping[str, Any]) -> CFG:
    return CFG().loadFromDict(dict(tree))


def _template_sections() -> CFG:
    """Services, Agents and Databases of this package's ConfigTemplate.cfg (the options an installation gets)."""
    if not CONFIG_TEMPLATE.is_file():
        raise TestbedError(f"the Calibration ConfigTemplate.cfg is missing: {CONFIG_TEMPLATE}")
    template = CFG().loadFromFile(str(CONFIG_TEMPLATE))
    sections = CFG()
    for name in ("Services", "Agents", "Databases"):
        if not template.isSection(name):
            raise TestbedError(f"{CONFIG_TEMPLATE} has no {name} section")
        sections.createNewSection(name, contents=template[name].clone())
    return sections


def _port_is_free(port: int) -> bool:
    for family, address in ((socket.AF_INET, ""), (socket.AF_INET, "127.0.0.1")):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port nothing listens on, outside DIRAC's 9130-9197 and below the ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*_PORT_RANGE)
        if port not in _DIRAC_PORTS and _port_is_free(port):
            return port
    raise TestbedError(f"no free TCP port found in {_PORT_RANGE[0]}-{_PORT_RANGE[1]}")


# --------------------------------------------------------------------------- in-process gConfig
_activeLock = threading.RLock()
_active: Testbed | None = None
_saved: tuple[CFG, CFG] | None = None
_installed: CFG | None = None


# --------------------------------------------------------------------------- processes
def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


_live: weakref.WeakSet[Testbed] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for testbed in list(_live):
        testbed.close()


class Testbed:
    """A local DIRAC with the Calibration service, agent and database; see the module docstring.

    Attributes: root, etc_dir, cfg_path, cfg (the diraccfg CFG written there), ca_dir, host_cert,
    host_key, log_dir, service_log, agent_log, port, url, identities, database, db_name (MariaDB),
    sqlite_path (SQLite), db_url (SQLAlchemy URL of the database), service, agent (Popen or None).

    Arguments (all keyword-only):
      database:        "mariadb" (a fresh database on 127.0.0.1:3306) or "sqlite" (``<root>/CalibrationDB.sqlite``).
      polling_time:    the agent's PollingTime in seconds.
      local_backend:   a single-user installation (default): LocalBackendUsers lists every registered
                       user and the agent's LocalBackendDir is ``local_dir``; False: neither is set.
      service_options: options merged into ``Services/Calibration`` ("Authorization/Default" style keys allowed).
      agent_options:   options merged into ``Agents/CalibrationAgent``.
      database_options: options merged into ``Databases/CalibrationDB``.
      extra_cfg:       cfg text merged on top of the whole generated dirac.cfg, last.
      keep:            keep the folder and the database after ``close()``; default: ``CALIBRATION_TESTBED_KEEP=1``.
      base_dir:        where the temporary folder is made (default: the system temp folder).
      bin_dir:         where ``dirac-service``/``dirac-agent`` live (default: this interpreter's ``bin``).
      instance, setup: the DIRAC instance of the Calibration system and the Setup name.
      start_timeout:   seconds ``start_service`` (and ``start_wms``) wait for the services to answer.
      wms:             also build a DIRAC WMS, file catalog, storage element, pilot and CVMFS stand-in.
    """

    __test__ = False

    def __init__(
        self,
        *,
        database: str = "mariadb",
        polling_time: int = 2,
        local_backend: bool = True,
        service_options: Mapping[str, Any] | None = None,
        agent_options: Mapping[str, Any] | None = None,
        database_options: Mapping[str, Any] | None = None,
        extra_cfg: str = "",
        keep: bool | None = None,
        base_dir: str | os.PathLike | None = None,
        bin_dir: str | os.PathLike | None = None,
        instance: str = "Test",
        setup: str = "CalibrationTestbed",
        start_timeout: float = 60.0,
        wms: bool = False,
    ):
        if database not in ("mariadb", "sqlite"):
            raise ValueError(f"database must be 'mariadb' or 'sqlite', got {database!r}")
        if isinstance(polling_time, bool) or not isinstance(polling_time, int) or polling_time < 1:
            raise ValueError(f"polling_time must be a whole number of seconds >= 1, got {polling_time!r}")
        if not isinstance(extra_cfg, str):
            raise ValueError(f"extra_cfg must be cfg text, got {type(extra_cfg).__name__}")
        if start_timeout <= 0:
            raise ValueError(f"start_timeout must be positive, got {start_timeout!r}")
        # Bad options fail here, before anything is created.
        overrides = {
            "Services": _nested(service_options or {}),
            "Agents": _nested(agent_options or {}),
            "Databases": _nested(database_options or {}),
        }
        try:
            extra = CFG().loadFromBuffer(extra_cfg)
        except Exception as exc:
            raise ValueError(f"extra_cfg is not valid cfg text: {exc}") from exc
        self.database = database
        self.polling_time = polling_time
        self.local_backend = bool(local_backend)
        self.instance = instance
        self.setup = setup
        self.start_timeout = float(start_timeout)
        self.keep = os.environ.get("CALIBRATION_TESTBED_KEEP") == "1" if keep is None else bool(keep)
        self.bin_dir = Path(bin_dir) if bin_dir else Path(sys.prefix) / "bin"
        for script in ("dirac-service", "dirac-agent"):
            if not os.access(self.bin_dir / script, os.X_OK):
                raise TestbedError(f"{script} not found in {self.bin_dir}: is DIRAC installed in this environment?")
        self.db_name: str | None = None
        self.sqlite_path: Path | None = None
        self.wms = None
        self._ports: set[int] = set()
        #: every process ``_spawn`` started and not yet seen stopped: each leads its own process group
        self._leaders: list[subprocess.Popen] = []
        if wms:
            if database != "mariadb":
                raise ValueError("the WMS needs MariaDB: use database='mariadb' with wms=True")
            from ILCDIRAC.CalibrationSystem.localdirac import wms as _wms

            self.groups = {**_wms.GROUPS}
            self.users = {"alice": _wms.USER_GROUP, "bob": _wms.USER_GROUP, "admin": _wms.ADMIN_GROUP,
                          _wms.PILOT: _wms.PILOT_GROUP}
            self.host_properties = _wms.HOST_PROPERTIES
        else:
            self.groups, self.users, self.host_properties = dict(GROUPS), dict(USERS), HOST_PROPERTIES
        self.service: subprocess.Popen | None = None
        self.agent: subprocess.Popen | None = None
        self._closed = False
        self._lock = threading.RLock()
        self.root = Path(tempfile.mkdtemp(prefix="calib-testbed-", dir=base_dir)).resolve()
        _live.add(self)
        try:
            self._build(overrides, extra, wms)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------- building
    def _build(self, overrides: Mapping[str, dict[str, Any]], extra: CFG, wms: bool) -> None:
        self.etc_dir = self.root / "etc"
        self.grid_security = self.etc_dir / "grid-security"
        self.ca_dir = self.grid_security / "certificates"
        self.host_cert = self.grid_security / "hostcert.pem"
        self.host_key = self.grid_security / "hostkey.pem"
        self.cfg_path = self.etc_dir / "dirac.cfg"
        self.log_dir = self.root / "logs"
        self.service_log = self.log_dir / "service.log"
        self.agent_log = self.log_dir / "agent.log"
        self.local_dir = self.root / "work" / SYSTEM / "local"
        self.log_dir.mkdir(parents=True)
        self.port = self.free_port()
        self.url = f"dips://{HOST_NAME}:{self.port}/{SERVICE}"

        ca = _CA(self.root / "ca", self.ca_dir)
        ca.issue(HOST_NAME, self.host_cert, self.host_key, server=True)
        self.identities: dict[str, Identity] = {
            HOST: Identity(
                HOST_NAME, dn_string(HOST_NAME), "hosts", self.host_properties, self.host_cert, self.host_key, None
            )
        }
        for name, group in {**self.users, UNREGISTERED: ""}.items():
            folder = self.root / "users" / name
            identity = Identity(
                name,
                dn_string(name),
                group,
                self.groups.get(group, ()),
                folder / "usercert.pem",
                folder / "userkey.pem",
                folder / "proxy.pem",
            )
            ca.issue(name, identity.cert, identity.key, server=False)
            _make_proxy(identity)
            self.identities[name] = identity

        if self.database == "mariadb":
            if not mariadb.available():
                raise TestbedError(
                    f"MariaDB does not answer on {mariadb.HOST}:{mariadb.PORT} as {mariadb.USER}: start it "
                    "(make mariadb) or use Testbed(database='sqlite')"
                )
            self.db_name = mariadb.create_database("calib_tb")
            self.db_url = mariadb.url(self.db_name)
        else:
            self.sqlite_path = self.root / "CalibrationDB.sqlite"
            self.db_url = f"sqlite+pysqlite:///{self.sqlite_path}"
        cfg = self._config(overrides)
        if wms:
            from ILCDIRAC.CalibrationSystem.localdirac.wms import LocalWMS

            self.wms = LocalWMS(self)
            self.wms.build()
            cfg = cfg.mergeWith(self.wms.config(self.instance))
            for system in self.wms.systems:
                cfg["DIRAC"]["Setups"][self.setup].setOption(system, self.instance)
        self.cfg = cfg.mergeWith(extra)
        self.cfg_path.write_text(str(self.cfg))

    def _config(self, overrides: Mapping[str, dict[str, Any]]) -> CFG:
        """dirac.cfg: DIRAC, Registry and the Calibration system from ConfigTemplate.cfg, then ``overrides`` on top."""
        if self.database == "mariadb":
            db = {
                "DBName": self.db_name,
                "Host": mariadb.HOST,
                "Port": mariadb.PORT,
                "User": mariadb.USER,
                "Password": mariadb.PASSWORD,
            }
        else:
            db = {"DBName": "CalibrationDB", "SQLitePath": str(self.sqlite_path)}
        system = _template_sections()
        if self.database == "sqlite" and system.isSection("Databases/CalibrationDB"):
            system["Databases"]["CalibrationDB"].deleteKey("Host")
        generated = {
            "URLs": {"Calibration": self.url},
            "Services": {"Calibration": {"Port": str(self.port)}},
            "Agents": {"CalibrationAgent": {"PollingTime": str(self.polling_time)}},
            "Databases": {"CalibrationDB": _nested(db)},
        }
        if self.local_backend:
            generated["Services"]["Calibration"]["LocalBackendUsers"] = ", ".join(USERS)
            generated["Agents"]["CalibrationAgent"]["LocalBackendDir"] = str(self.local_dir)
        system = system.mergeWith(_cfg(generated))
        system = system.mergeWith(
            _cfg(
                {
                    "Services": {"Calibration": overrides["Services"]},
                    "Agents": {"CalibrationAgent": overrides["Agents"]},
                    "Databases": {"CalibrationDB": overrides["Databases"]},
                }
            )
        )
        base = {
            "DIRAC": {
                "Setup": self.setup,
                "Hostname": HOST_NAME,
                "Setups": {self.setup: {SYSTEM: self.instance}},
                "Security": {
                    "CALocation": str(self.ca_dir),
                    "CertFile": str(self.host_cert),
                    "KeyFile": str(self.host_key),
                },
            },
            "Registry": {
                "DefaultGroup": self.users["alice"],
                "Users": {name: {"DN": dn_string(name)} for name in self.users},
                "Groups": {
                    group: {
                        "Users": ", ".join(name for name, g in self.users.items() if g == group),
                        "Properties": ", ".join(props),
                        "VO": VO,
                    }
                    for group, props in self.groups.items()
                },
                "Hosts": {HOST_NAME: {"DN": dn_string(HOST_NAME), "Properties": ", ".join(self.host_properties)}},
            },
        }
        cfg = _cfg(base)
        cfg.createNewSection("Systems", contents=_cfg({SYSTEM: {}}))
        cfg["Systems"][SYSTEM].createNewSection(self.instance, contents=system)
        return cfg

    # ----------------------------------------------------------------------- identities and environment
    def identity(self, user: str) -> Identity:
        """The credentials of ``user``: alice, bob, admin, mallory (unregistered) or "host"."""
        try:
            return self.identities[user]
        except KeyError:
            raise KeyError(f"unknown test bed identity {user!r}; known: {', '.join(sorted(self.identities))}") from None

    def proxy(self, user: str) -> Path:
        """Path of ``user``'s proxy file (users only: the host uses its certificate)."""
        identity = self.identity(user)
        if identity.proxy is None:
            raise KeyError(f"{user!r} has no proxy: it authenticates with the host certificate {identity.cert}")
        return identity.proxy

    def env(self, user: str | None = None) -> dict[str, str]:
        """Environment for a subprocess using this DIRAC, as ``user`` (None: no user credentials).

        For "host" the host certificate is exported as DIRAC_X509_HOST_CERT/KEY; DIRAC clients then
        still need ``-o /DIRAC/Security/UseServerCertificate=yes`` to use it (agents do so by themselves).
        """
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        pythonpath = [str(CODE_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env.update(
            DIRAC_ROOT_PATH=str(self.root),
            X509_CERT_DIR=str(self.ca_dir),
            PYTHONPATH=os.pathsep.join(pythonpath),
        )
        if user is not None:
            identity = self.identity(user)
            if identity.proxy is None:
                env.update(DIRAC_X509_HOST_CERT=str(identity.cert), DIRAC_X509_HOST_KEY=str(identity.key))
            else:
                env["X509_USER_PROXY"] = str(identity.proxy)
        return env

    # ----------------------------------------------------------------------- processes
    def _spawn(
        self, args: list[str], log: Path, *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        # setpriv asks the kernel to SIGKILL the process when the thread that started it dies, so
        # even a caller killed with SIGKILL leaves nothing behind (only from the main thread: a
        # worker thread ending must not take the service with it).
        if _SETPRIV and threading.current_thread() is threading.main_thread():
            args = [_SETPRIV, "--pdeathsig", "KILL", "--", *args]
        with open(log, "ab") as out:
            out.write(f"\n=== {datetime.datetime.now().isoformat()} {' '.join(args)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                args,
                cwd=cwd or self.root,
                env=dict(env) if env is not None else self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._leaders.append(process)
        return process

    def start_service(self, *args: str, timeout: float | None = None) -> subprocess.Popen:
        """Start ``dirac-service Calibration/Calibration`` (extra CLI ``args``) and wait until it answers ping."""
        with self._lock:
            self._check_open()
            if self.service_running:
                raise TestbedError(f"the service already runs (PID {self.service.pid})")
            self.service = self._spawn([str(self.bin_dir / "dirac-service"), SERVICE, *args], self.service_log)
        self.wait_for_service(timeout)
        return self.service

    def wait_for_service(self, timeout: float | None = None) -> None:
        """Block until the service answers ``ping`` over TLS (as the host); raise with the log tail otherwise."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        last = "the port never opened"
        while True:
            process = self.service
            if process is None:
                raise TestbedError("the service is not started")
            if process.poll() is not None:
                raise TestbedError(
                    f"dirac-service exited with code {process.returncode} before answering ping; "
                    f"end of {self.service_log}:\n{_tail(self.service_log)}"
                )
            if self._port_open():
                result = self.ping()
                if result["OK"]:
                    return
                last = result["Message"]
            if time.monotonic() >= deadline:
                raise TestbedError(
                    f"dirac-service (PID {process.pid}) did not answer ping on {self.url} "
                    f"({last}); end of {self.service_log}:\n{_tail(self.service_log)}"
                )
            time.sleep(0.2)

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def ping(self, user: str = HOST) -> dict:
        """The service's ``ping`` answer (an S_OK/S_ERROR dict) for ``user``; leaves gConfig as it was."""
        with self.activated():
            return self.rpc(user).ping()

    @property
    def service_running(self) -> bool:
        return self.service is not None and self.service.poll() is None

    @property
    def agent_running(self) -> bool:
        return self.agent is not None and self.agent.poll() is None

    def kill_service(self, signal: int = _signal.SIGKILL, timeout: float = 10.0) -> int:
        """Send ``signal`` to the service process and wait for it to end; returns its exit code."""
        with self._lock:
            if not self.service_running:
                raise TestbedError("the service is not running")
            self.service.send_signal(signal)
            try:
                return self.service.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TestbedError(
                    f"the service (PID {self.service.pid}) survived signal {signal} for {timeout} s"
                ) from None

    def restart_service(self, *args: str, timeout: float | None = None) -> subprocess.Popen:
        """Stop the service if it runs, then start it again on the same port and wait for it."""
        self.stop_service()
        return self.start_service(*args, timeout=timeout)

    def start_agent(self, *args: str) -> subprocess.Popen:
        """Start ``dirac-agent Calibration/CalibrationAgent`` (extra CLI ``args``); it uses the host certificate."""
        with self._lock:
            self._check_open()
            if self.agent_running:
                raise TestbedError(f"the agent already runs (PID {self.agent.pid})")
            self.agent = self._spawn([str(self.bin_dir / "dirac-agent"), AGENT, *args], self.agent_log)
            return self.agent

    def stop_service(self) -> None:
        """Stop the service if it runs (SIGTERM, then SIGKILL after a grace period)."""
        with self._lock:
            _terminate(self.service)

    def stop_agent(self) -> None:
        """Stop the agent if it runs (SIGTERM, then SIGKILL after a grace period)."""
        with self._lock:
            _terminate(self.agent)

    def start_wms(self, timeout: float | None = None) -> None:
        """Start the WMS (``wms=True``): services, optimizers and the pilot, with the site allowed
        and every user's proxy in the ProxyManager; returns once the services listen."""
        with self._lock:
            self._check_open()
            if self.wms is None:
                raise TestbedError("this test bed has no WMS: build it with Testbed(wms=True)")
            self.wms.start(self.start_timeout if timeout is None else timeout)

    def stop(self) -> None:
        """Stop the agent, the service and the WMS (SIGTERM, then SIGKILL after a grace period).

        Then nothing they started may be left: what a process killed earlier (``kill_service``)
        had started is orphaned, out of reach of stopping it, yet still in its process group.
        Whatever remains there after a grace period is killed and reported (``TestbedError``)."""
        with self._lock:
            self.stop_agent()
            if self.wms is not None:
                self.wms.stop()
            self.stop_service()
            groups = {process.pid for process in self._leaders}
            self._leaders = [process for process in self._leaders if process.poll() is None]
            _kill_stragglers(groups)

    @property
    def pids(self) -> list[int]:
        """PIDs of every process this test bed started, running or not."""
        wms = self.wms.processes if self.wms is not None else []
        return [p.pid for p in (self.service, self.agent, *wms) if p is not None]

    def free_port(self) -> int:
        """A free port not yet given to another component of this test bed."""
        while True:
            port = free_port()
            if port not in self._ports:
                self._ports.add(port)
                return port

    # ----------------------------------------------------------------------- in-process clients
    def activate(self) -> None:
        """Make this test bed's dirac.cfg the in-process DIRAC configuration (replacing, not merging).

        The previous configuration is saved the first time and restored by ``deactivate()``;
        activating another test bed switches to it. DIRAC may already be imported. If other code
        replaced the configuration meanwhile (a unit test's fake CS, say), it is installed again.
        """
        global _active, _saved, _installed
        from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

        with _activeLock:
            self._check_open()
            if _active is self and gConfigurationData.localCFG is _installed:
                return
            if _active is None:
                _saved = (gConfigurationData.localCFG, gConfigurationData.remoteCFG)
            _installed = self.cfg.clone()
            gConfigurationData.localCFG = _installed
            gConfigurationData.remoteCFG = CFG()
            gConfigurationData.sync()
            _active = self

    def deactivate(self) -> None:
        """Restore the in-process configuration saved by ``activate()`` (no-op if this one is not active)."""
        global _active, _saved, _installed
        with _activeLock:
            if _active is not self:
                return
            from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

            gConfigurationData.localCFG, gConfigurationData.remoteCFG = _saved
            gConfigurationData.sync()
            _active = _saved = _installed = None

    @property
    def active(self) -> bool:
        return _active is self

    @contextlib.contextmanager
    def activated(self) -> Iterator[Testbed]:
        """Activate for the duration of the block, then put back whatever was active before."""
        with _activeLock:
            previous = _active
            self.activate()
        try:
            yield self
        finally:
            with _activeLock:
                if previous is None or previous._closed:
                    self.deactivate()
                elif previous is not self:
                    previous.activate()

    def rpc(self, user: str, timeout: int = 120):
        """A DISET ``RPCClient`` for the Calibration service acting as ``user`` (activates this test bed).

        Users authenticate with their proxy; "host" with the host certificate (useCertificates=True).
        The client keeps working while this test bed is the active one. DIRAC raises any timeout
        below 120 s to 120 s.
        """
        from DIRAC.Core.DISET.RPCClient import RPCClient

        identity = self.identity(user)
        self.activate()
        if identity.proxy is None:
            return RPCClient(self.url, useCertificates=True, timeout=timeout)
        return RPCClient(self.url, proxyLocation=str(identity.proxy), useCertificates=False, timeout=timeout)

    @contextlib.contextmanager
    def as_user(self, user: str) -> Iterator[Identity]:
        """Within the block, in-process DIRAC clients built without credentials act as ``user``.

        Activates the test bed and points X509_USER_PROXY at the user's proxy (for "host":
        ``/DIRAC/Security/UseServerCertificate = yes``); both are put back afterwards.
        """
        from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

        identity = self.identity(user)
        self.activate()
        before = os.environ.get("X509_USER_PROXY")
        option = "/DIRAC/Security/UseServerCertificate"
        try:
            if identity.proxy is None:
                gConfigurationData.setOptionInCFG(option, "yes")
            else:
                os.environ["X509_USER_PROXY"] = str(identity.proxy)
            yield identity
        finally:
            if before is None:
                os.environ.pop("X509_USER_PROXY", None)
            else:
                os.environ["X509_USER_PROXY"] = before
            if identity.proxy is None and self.active:
                gConfigurationData.deleteOptionInCFG(option)
                gConfigurationData.sync()

    # ----------------------------------------------------------------------- teardown
    def _check_open(self) -> None:
        if self._closed:
            raise TestbedError(f"the test bed in {self.root} is closed")

    def close(self) -> None:
        """Stop every process, restore gConfig, drop the database and remove the folder (unless kept)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.stop()
            finally:
                self.deactivate()
                _live.discard(self)
                if self.keep:
                    kept = f" and database {self.db_name}" if self.db_name else ""
                    print(f"calibration test bed kept: {self.root}{kept}", file=sys.stderr)
                else:
                    try:
                        if self.db_name:
                            mariadb.drop_database(self.db_name)
                        if self.wms is not None:
                            self.wms.drop()
                    finally:
                        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"service {'up' if self.service_running else 'down'}"
        return f"<Testbed {self.root} port={self.port if hasattr(self, 'port') else '?'} {self.database} {state}>"


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_stragglers(groups: set[int]) -> None:
    """Kill what is left in ``groups`` (process groups whose leaders were stopped) once the grace
    period is over, and raise ``TestbedError`` naming it: a process the test bed's components
    started outlived them, which no test should hide (the group's leader itself is never taken:
    its PID is free for reuse once it is reaped)."""
    left = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError, psutil.Error):
            if pid not in groups and os.getpgid(pid) in groups:
                left.append(psutil.Process(pid))
    deadline = time.monotonic() + _STOP_GRACE
    while any(_running(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.1)
    stragglers = []
    for process in left:
        with contextlib.suppress(psutil.Error):
            if _running(process):
                stragglers.append(f"{process.pid} ({' '.join(process.cmdline())})")
                process.kill()
    if stragglers:
        raise TestbedError(f"still running {_STOP_GRACE} s after the test bed stopped, killed: {', '.join(stragglers)}")


def _terminate(process: subprocess.Popen | None) -> None:
    """Stop a process we started and everything it started: SIGTERM, then SIGKILL after a grace period.

    The process leads its own session, so its group is signalled while it is not yet reaped (its
    PID cannot have been reused); descendants that left the group are found with psutil first.
    """
    if process is None or process.returncode is not None:
        return
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    for sig in (_signal.SIGTERM, _signal.SIGKILL):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_STOP_GRACE)
    _, alive = psutil.wait_procs(descendants, timeout=_STOP_GRACE if descendants else 0)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
