"""A real DIRAC Workload Management System inside the test bed: ``Testbed(wms=True)``.

Everything is DIRAC's own code from the wheel, configured and not patched:
- services (each its own ``dirac-service`` process on a free port): WorkloadManagement's
  JobManager, JobMonitoring, JobStateUpdate, SandboxStore, Matcher, OptimizationMind,
  WMSAdministrator and PilotManager; Framework/ProxyManager (users' proxies for pilots and for
  the Calibration agent); DataManagement/FileCatalog (a DIRAC File Catalog for LFNs);
- the optimizers (``dirac-executor WorkloadManagement/Optimizers``);
- a pilot: ``dirac-agent WorkloadManagement/JobAgent`` with a ``Pool`` computing element, run
  with a generic pilot proxy (group ``ilc_pilot``), so each job runs through the real JobWrapper
  with its owner's proxy fetched from the ProxyManager;
- a storage element on a local folder (DIRAC's ``File`` plugin) and the sandbox SE (``dips`` to the
  SandboxStore);
- a folder standing in for CVMFS: ``<root>/cvmfs/<platform>/marlin/<version>/init.sh`` puts a
  ``Marlin`` on PATH that is the detector emulator, and the Operations section lists it as the
  release's CVMFS installation, so iLCDirac's software check and ``getEnvironmentScript`` find it.

Each database (JobDB, JobLoggingDB, PilotAgentsDB, TaskQueueDB, SandboxMetadataDB, ProxyDB,
FileCatalogDB) is a fresh MariaDB database of this run, dropped at ``close()``. The schemas DIRAC
ships as SQL are loaded with the ``mysql`` client; every DB class is then opened once in one
process before the services start (services starting together race on creating tables).

Test-only choices, each because a test cannot wait as long as production does: the JobWrapper
looks for kill commands every 5 s (``CheckingTime``, 30 min by default); the JobAgent polls every
second and keeps going after failed payloads and empty matches.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diraccfg import CFG

from ILCDIRAC.CalibrationSystem.localdirac import mariadb

if TYPE_CHECKING:  # pragma: no cover
    from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed

#: The components started, by DIRAC system.
SERVICES: dict[str, tuple[str, ...]] = {
    "WorkloadManagement": (
        "JobManager",
        "JobMonitoring",
        "JobStateUpdate",
        "SandboxStore",
        "Matcher",
        "OptimizationMind",
        "WMSAdministrator",
        "PilotManager",
    ),
    "Framework": ("ProxyManager",),
    "DataManagement": ("FileCatalog",),
}
DATABASES: dict[str, tuple[str, ...]] = {
    "WorkloadManagement": ("JobDB", "JobLoggingDB", "PilotAgentsDB", "TaskQueueDB", "SandboxMetadataDB"),
    "Framework": ("ProxyDB",),
    "DataManagement": ("FileCatalogDB",),
}
#: Databases whose tables DIRAC ships as SQL (the others create their tables when first opened).
SQL_SCHEMAS = {"JobDB", "JobLoggingDB", "PilotAgentsDB", "FileCatalogDB"}
EXECUTOR = "WorkloadManagement/Optimizers"
PILOT_AGENT = "WorkloadManagement/JobAgent"

#: Group names as the ILC VO has them: iLCDirac submits user jobs only with an ilc_user proxy.
USER_GROUP, ADMIN_GROUP, PILOT_GROUP = "ilc_user", "ilc_admin", "ilc_pilot"
GROUPS: dict[str, tuple[str, ...]] = {
    USER_GROUP: ("NormalUser",),
    ADMIN_GROUP: ("NormalUser", "JobAdministrator", "Operator"),
    PILOT_GROUP: ("GenericPilot", "LimitedDelegation"),
}
PILOT = "pilot"
#: What the Calibration agent's host needs besides TrustedHost: full proxies of job owners from
#: the ProxyManager (the JobManager refuses to take jobs from a limited proxy).
HOST_PROPERTIES = ("TrustedHost", "FullDelegation")

VO = "ilc"
SITE = "DIRAC.CalibrationTestbed.ch"
PLATFORM = "x86_64-el9-gcc13-opt"
#: iLCDirac's Job() sets this platform first; the CS must know it.
ILCDIRAC_DEFAULT_PLATFORM = "x86_64-slc5-gcc43-opt"
MARLIN_VERSION = "ILCSoft-2019-07-09_gcc62"
STORAGE_ELEMENT = "CALIB-LOCAL-SE"
SANDBOX_SE = "ProductionSandboxSE"
CATALOG = "FileCatalog"
#: Job slots of the pilot's Pool computing element.
SLOTS = 6

#: DIRAC job states that do not change any more (a killed running job flickers Killed -> Running
#: -> Failed before it settles; only Done, Failed and a killed *waiting* job's Killed are final).
FINAL_JOB_STATES = ("Done", "Failed", "Killed", "Deleted")


class WMSError(RuntimeError):
    """The WMS of the test bed could not be built or started."""


@dataclass(frozen=True)
class Software:
    """The stand-in CVMFS installation of one Marlin release."""

    platform: str
    version: str
    folder: Path
    initScript: Path


def _dirac_dir() -> Path:
    import DIRAC

    return Path(DIRAC.__file__).resolve().parent


def _template(system: str) -> CFG:
    return CFG().loadFromFile(str(_dirac_dir() / f"{system}System" / "ConfigTemplate.cfg"))


def _section(template: CFG, path: str) -> CFG:
    node = template
    for part in path.split("/"):
        if not node.isSection(part):
            raise WMSError(f"DIRAC's ConfigTemplate.cfg has no section {path}")
        node = node[part]
    return node.clone()


class LocalWMS:
    """The WMS part of a test bed (``testbed.wms``); built with it, started by ``testbed.start_wms()``."""

    def __init__(self, testbed: Testbed):
        self.testbed = testbed
        root = testbed.root
        self.ports = {f"{system}/{name}": testbed.free_port() for system, names in SERVICES.items() for name in names}
        self.storage = root / "storage" / STORAGE_ELEMENT
        self.sandboxes = root / "storage" / "sandboxes"
        self.pilotDir = root / "pilot"
        self.cvmfs = root / "cvmfs"
        self.serviceLogs = {c: testbed.log_dir / f"{c.replace('/', '-')}.log" for c in self.ports}
        self.executorLog = testbed.log_dir / "wms-optimizers.log"
        self.pilotLog = testbed.log_dir / "pilot.log"
        self.databases: dict[str, str] = {}
        self.services: dict[str, subprocess.Popen] = {}
        self.executor: subprocess.Popen | None = None
        self.pilot: subprocess.Popen | None = None

    def build(self) -> None:
        """Folders, the CVMFS stand-in and the databases (recorded as made, so ``drop`` finds them)."""
        for folder in (self.storage, self.sandboxes, self.pilotDir):
            folder.mkdir(parents=True)
        # The JobAgent writes the CPU time left into this file; the job wrappers load it.
        (self.pilotDir / "pilot.cfg").write_text("")
        self.software = self.install_software(PLATFORM, MARLIN_VERSION)
        for names in DATABASES.values():
            for name in names:
                self.databases[name] = mariadb.create_database(f"calib_{name.lower()[:12]}")
        for name in SQL_SCHEMAS:
            self.load_schema(name)

    # ------------------------------------------------------------------ building
    def install_software(self, platform: str, version: str) -> Software:
        """The stand-in CVMFS folder of a Marlin release whose ``Marlin`` is the emulator."""
        folder = self.cvmfs / platform / "marlin" / version
        (folder / "bin").mkdir(parents=True)
        marlin = folder / "bin" / "Marlin"
        marlin.write_text(f'#!/bin/sh\nexec "{Path(sys.executable).parent / "marlin-emulator"}" "$@"\n')
        marlin.chmod(0o755)
        init = folder / "init.sh"
        init.write_text(f'export PATH="{folder / "bin"}:$PATH"\nexport MARLIN="{folder}"\n')
        return Software(platform, version, folder, init)

    def load_schema(self, name: str) -> None:
        """Load DIRAC's ``<name>.sql`` into this run's database (the file's own USE line retargeted)."""
        system = next(s for s, names in DATABASES.items() if name in names)
        sql = (_dirac_dir() / f"{system}System" / "DB" / f"{name}.sql").read_text()
        sql, count = re.subn(rf"^\s*USE\s+{name}\s*;", f"USE `{self.databases[name]}`;", sql, flags=re.M | re.I)
        if count != 1:
            raise WMSError(f"{name}.sql has {count} 'USE {name};' lines, expected one")
        sql = re.sub(r"^\s*FLUSH PRIVILEGES\s*;", "", sql, flags=re.M | re.I)
        done = subprocess.run(
            ["mysql", "-h", mariadb.HOST, "-P", str(mariadb.PORT), "-u", mariadb.USER, "--batch"],
            input=sql, capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise WMSError(f"loading {name}.sql into {self.databases[name]} failed: {done.stderr.strip()}")

    def url(self, component: str) -> str:
        return f"dips://localhost:{self.ports[component]}/{component}"

    def config(self, instance: str) -> CFG:
        """The dirac.cfg sections the WMS adds (merged on top of the test bed's own)."""
        systems: dict[str, Any] = {}
        for system, names in SERVICES.items():
            template = _template(system)
            services = CFG()
            for name in names:
                services.createNewSection(name, contents=_section(template, f"Services/{name}"))
            section = CFG()
            section.createNewSection("Services", contents=services)
            systems[system] = section
        overrides: dict[str, Any] = {
            "WorkloadManagement": {
                "Services": {
                    "SandboxStore": {"BasePath": str(self.sandboxes), "LocalSE": SANDBOX_SE},
                },
                "Executors": {"Optimizers": {"Load": "JobPath, JobSanity, InputData, JobScheduling"}},
                "JobWrapper": {"CheckingTime": 5, "MinCheckingTime": 5, "PollingTime": 2, "CheckCPUConsumedFlag": 0},
                "Agents": {
                    "JobAgent": {
                        "PollingTime": 1,
                        "CEType": "Pool",
                        "SubmissionDelay": 0,
                        "FillingModeFlag": True,
                        "StopOnApplicationFailure": False,
                        "StopAfterFailedMatches": 100000,
                        "StopAfterHostFailures": 100000,
                        "JobWrapperTemplate": "DIRAC/WorkloadManagementSystem/JobWrapper/JobWrapperTemplate.py",
                    }
                },
            },
            "Framework": {},
            "DataManagement": {},
        }
        for component, port in self.ports.items():
            system, name = component.split("/")
            overrides[system].setdefault("Services", {}).setdefault(name, {})["Port"] = port
            overrides[system].setdefault("URLs", {})[name] = self.url(component)
        for system, names in DATABASES.items():
            for name in names:
                overrides[system].setdefault("Databases", {})[name] = {
                    "DBName": self.databases[name],
                    "Host": mariadb.HOST,
                    "Port": mariadb.PORT,
                    "User": mariadb.USER,
                    "Password": mariadb.PASSWORD,
                }
        from ILCDIRAC.CalibrationSystem.localdirac.testbed import _cfg, _nested

        cfg = _cfg(self._global_sections())
        cfg.createNewSection("Systems")
        for system, section in systems.items():
            cfg["Systems"].createNewSection(system)
            contents = section.mergeWith(_cfg(_nested(overrides[system])))
            cfg["Systems"][system].createNewSection(instance, contents=contents)
        return cfg

    def _global_sections(self) -> dict[str, Any]:
        """LocalSite (the pilot's site), Resources (CE, storage elements, catalog) and Operations."""
        return {
            "DIRAC": {"VirtualOrganization": VO},
            "LocalSite": {
                "Site": SITE,
                "GridCE": "localhost",
                "CEQueue": "default",
                "LocalCE": "Pool",
                "NumberOfProcessors": SLOTS,
                "Platform": PLATFORM,
                "Architecture": PLATFORM,
                "CPUNormalizationFactor": 10,
                "DisableAccounting": True,
                "LocalSE": STORAGE_ELEMENT,
            },
            "Resources": {
                "Computing": {
                    "CEDefaults": {"MaxCPUTime": 1000000, "CPUTime": 1000000, "NumberOfProcessors": SLOTS},
                    "OSCompatibility": {PLATFORM: PLATFORM, ILCDIRAC_DEFAULT_PLATFORM: ILCDIRAC_DEFAULT_PLATFORM},
                },
                "StorageElements": {
                    SANDBOX_SE: {
                        "BackendType": "DISET",
                        **dict.fromkeys(("ReadAccess", "WriteAccess", "RemoveAccess", "CheckAccess"), "Active"),
                        "AccessProtocol.1": {
                            "Host": "localhost",
                            "Port": self.ports["WorkloadManagement/SandboxStore"],
                            "PluginName": "DIP",
                            "Protocol": "dips",
                            "Path": "/WorkloadManagement/SandboxStore",
                            "Access": "remote",
                        },
                    },
                    STORAGE_ELEMENT: {
                        "BackendType": "File",
                        **dict.fromkeys(("ReadAccess", "WriteAccess", "RemoveAccess", "CheckAccess"), "Active"),
                        # every node of the test bed sees the folder: the plain-file protocol
                        # serves remote (any site's) reads and writes too
                        "AccessProtocol.1": {
                            "Host": "localhost",
                            "PluginName": "File",
                            "Protocol": "file",
                            "Path": str(self.storage),
                            "Access": "remote",
                        },
                    },
                },
                "FileCatalogs": {CATALOG: {"AccessType": "Read-Write", "Status": "Active", "Master": True}},
                "Sites": {"DIRAC": {SITE: {"Name": "CalibrationTestbed", "SE": STORAGE_ELEMENT,
                                           "CE": "localhost", "CEs": {"localhost": {"CEType": "Pool"}}}}},
            },
            "Operations": {
                "Defaults": {
                    "ResourceStatus": {"Config": {"State": "InActive"}},
                    "SoftwareDistModule": "ILCDIRAC.Core.Utilities.CombinedSoftwareInstallation",
                    "Services": {"Catalogs": {"CatalogList": CATALOG}},
                    "DataManagement": {
                        "AccessProtocols": "file, dips",
                        "WriteProtocols": "file, dips",
                        "RegistrationProtocols": "file, dips",
                    },
                    "AvailableTarBalls": {
                        self.software.platform: {
                            "marlin": {
                                self.software.version: {
                                    "CVMFSPath": str(self.software.folder),
                                    "CVMFSEnvScript": str(self.software.initScript),
                                }
                            }
                        }
                    },
                }
            },
        }

    @property
    def systems(self) -> tuple[str, ...]:
        return tuple(SERVICES)

    # ------------------------------------------------------------------ running
    def start(self, timeout: float) -> None:
        """Open every DB once, start services, optimizers and pilot, allow the site, upload the proxies."""
        testbed = self.testbed
        started = time.monotonic()
        self._run_python(_OPEN_DATABASES, "creating the WMS tables", timeout)
        # one process per service, as a DIRAC server runs them: a busy SandboxStore or
        # JobStateUpdate then cannot starve the others' TLS handshakes of the interpreter
        for component, log in self.serviceLogs.items():
            self.services[component] = testbed._spawn([str(testbed.bin_dir / "dirac-service"), component], log)
        self.wait_for_services(started + timeout)
        # the optimizers give up if OptimizationMind does not answer within a few seconds
        self.executor = testbed._spawn([str(testbed.bin_dir / "dirac-executor"), EXECUTOR], self.executorLog)
        users = {
            name: [str(identity.cert), str(identity.key), str(identity.proxy.with_name("uploaded-proxy.pem"))]
            for name, identity in testbed.identities.items()
            if identity.proxy is not None and name in testbed.users
        }
        left = max(5.0, started + timeout - time.monotonic())
        self._run_python(_PREPARE % {"site": SITE, "users": json.dumps(users), "timeout": left},
                         "allowing the site, warming up the optimizers and uploading the users' proxies",
                         left, user="admin")
        self.start_pilot()

    def start_pilot(self) -> subprocess.Popen:
        """The pilot: a JobAgent with a generic pilot proxy, in its own folder."""
        testbed = self.testbed
        env = testbed.env(PILOT)
        # a pilot has DIRAC's commands on PATH (the job wrapper runs dirac-jobexec from there)
        # and only DIRAC and iLCDirac on PYTHONPATH: this project reaches jobs in their sandbox
        env["PATH"] = os.pathsep.join([str(testbed.bin_dir), env.get("PATH", "")])
        env["PYTHONPATH"] = _site_packages()
        self.pilot = testbed._spawn(
            [
                str(testbed.bin_dir / "dirac-agent"),
                PILOT_AGENT,
                "-o", "/DIRAC/Security/UseServerCertificate=no",
                "-o", "/AgentJobRequirements/ExtraOptions=pilot.cfg",
            ],
            self.pilotLog,
            cwd=self.pilotDir,
            env=env,
        )
        return self.pilot

    def stop_pilot(self) -> None:
        """Stop the pilot and the jobs it runs (new jobs then wait in the task queue)."""
        from ILCDIRAC.CalibrationSystem.localdirac.testbed import _terminate

        _terminate(self.pilot)

    def wait_for_services(self, deadline: float) -> None:
        """Until every service answers ping over TLS (as the host)."""
        import socket

        pending = dict(self.ports)
        while pending:
            watched = [(self.services[c], self.serviceLogs[c]) for c in self.services]
            for process, log in watched + [(self.executor, self.executorLog)]:
                if process is not None and process.poll() is not None:
                    from ILCDIRAC.CalibrationSystem.localdirac.testbed import _tail

                    raise WMSError(f"{process.args[0]} exited with {process.returncode}; end of {log}:\n{_tail(log)}")
            for component, port in list(pending.items()):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        pending.pop(component)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                from ILCDIRAC.CalibrationSystem.localdirac.testbed import _tail

                tails = "\n".join(f"--- {self.serviceLogs[c]}\n{_tail(self.serviceLogs[c], 10)}" for c in pending)
                raise WMSError(f"WMS services not listening: {sorted(pending)}\n{tails}")
            if pending:
                time.sleep(0.2)

    def _run_python(self, code: str, what: str, timeout: float, user: str | None = None) -> None:
        env = self.testbed.env(user)
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=self.testbed.root, capture_output=True, text=True,
            timeout=timeout, check=False,
        )
        if done.returncode != 0:
            raise WMSError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [p for p in (self.pilot, self.executor, *self.services.values()) if p is not None]

    def stop(self) -> None:
        from ILCDIRAC.CalibrationSystem.localdirac.testbed import _terminate

        for process in self.processes:
            _terminate(process)

    def drop(self) -> None:
        for name in self.databases.values():
            mariadb.drop_database(name)
        self.databases.clear()

    def se_path(self, lfn: str) -> Path:
        """Where the local storage element keeps ``lfn``."""
        return self.storage / lfn.removeprefix("LFN:").lstrip("/")


def _site_packages() -> str:
    """The interpreter's site-packages: what DIRAC's job wrapper (started with the real, not the
    virtualenv's, Python) needs on PYTHONPATH to find DIRAC and iLCDirac."""
    import sysconfig

    return sysconfig.get_paths()["purelib"]


_OPEN_DATABASES = """
from DIRAC.Core.Base.Script import Script
Script.parseCommandLine(ignoreErrors=True)
from DIRAC.WorkloadManagementSystem.DB.JobDB import JobDB
from DIRAC.WorkloadManagementSystem.DB.JobLoggingDB import JobLoggingDB
from DIRAC.WorkloadManagementSystem.DB.PilotAgentsDB import PilotAgentsDB
from DIRAC.WorkloadManagementSystem.DB.TaskQueueDB import TaskQueueDB
from DIRAC.WorkloadManagementSystem.DB.SandboxMetadataDB import SandboxMetadataDB
from DIRAC.FrameworkSystem.DB.ProxyDB import ProxyDB
from DIRAC.DataManagementSystem.DB.FileCatalogDB import FileCatalogDB
for cls in (JobDB, JobLoggingDB, PilotAgentsDB, TaskQueueDB, SandboxMetadataDB, ProxyDB, FileCatalogDB):
    cls()
"""

#: As an Operator: put the site into the WMS site mask (ResourceStatus is inactive); send one job
#: through the optimizers and delete it before any pilot runs (the first jobs optimized at once
#: race on JobState's lazy database set-up in DIRAC 8.0: one of them fails with "'NoneType' object
#: has no attribute 'getJobAttributes'" and waits a minute for the next reload). Then, as each
#: user, what ``dirac-proxy-init`` does: delegate a group-less proxy to the ProxyManager.
_PREPARE = """
import json, os, sys, time
from DIRAC.Core.Base.Script import Script
Script.parseCommandLine(ignoreErrors=True)
from DIRAC.Core.Security.X509Chain import X509Chain
from DIRAC.FrameworkSystem.Client.ProxyManagerClient import ProxyManagerClient
from DIRAC.Interfaces.API.Dirac import Dirac
from DIRAC.Interfaces.API.Job import Job
from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient
from DIRAC.WorkloadManagementSystem.Client.WMSAdministratorClient import WMSAdministratorClient
from DIRAC.WorkloadManagementSystem.Client.WMSClient import WMSClient
result = WMSAdministratorClient().allowSite(%(site)r, "calibration test bed")
if not result["OK"]:
    sys.exit("allowSite: " + result["Message"])
job = Job()
job.setName("testbed-warm-up")
job.setExecutable("/bin/true")
result = Dirac().submitJob(job)
if not result["OK"]:
    sys.exit("warm-up job: " + result["Message"])
jobID = result["Value"]
deadline = time.monotonic() + %(timeout)r
while True:
    status = JobMonitoringClient().getJobsStatus([jobID])["Value"].get(jobID, {}).get("Status")
    if status not in ("Received", "Checking"):
        break
    if time.monotonic() > deadline:
        sys.exit(f"the optimizers did not process the warm-up job {jobID} within %(timeout)r s")
    time.sleep(0.2)
if status != "Waiting":
    sys.exit(f"the warm-up job {jobID} ended {status} instead of Waiting")
result = WMSClient().deleteJob(jobID)
if not result["OK"]:
    sys.exit("deleting the warm-up job: " + result["Message"])
for user, (cert, key, proxy) in json.loads(%(users)r).items():
    chain = X509Chain()
    chain.loadChainFromFile(cert)
    chain.loadKeyFromFile(key)
    result = chain.generateProxyToFile(proxy, 7 * 24 * 3600)
    if not result["OK"]:
        sys.exit(f"proxy of {user}: " + result["Message"])
    os.environ["X509_USER_PROXY"] = proxy
    loaded = X509Chain()
    loaded.loadProxyFromFile(proxy)
    result = ProxyManagerClient().uploadProxy(loaded)
    if not result["OK"]:
        sys.exit(f"uploading the proxy of {user}: " + result["Message"])
"""
