"""DIRAC's web portal (WebAppDIRAC 5.0, the DIRAC 8.0 line) on a WMS test bed, for ``make test-portal``.

``make portal`` installs, beside the project's virtualenv and never into it, WebAppDIRAC with
the tornado 5.1.1 it needs into ``.portal/webapp``, Playwright into ``.portal/browser``, and
Debian's ``chromium`` (Playwright drives it; no browser is downloaded).

``Portal(testbed)`` runs the portal as DIRAC sites do behind nginx (``/WebApp/Balancer = nginx``,
plain HTTP on a free port) and, in front of it, a small local proxy that adds what nginx adds
after verifying the user's certificate: ``X-Ssl_client_verify: SUCCESS``, ``X-SSL-CERT`` (the
URL-encoded certificate) and ``X-Forwarded-Proto: https``. The portal then calls the WMS services
with the host certificate on the user's behalf, as in production.

PyPI's tornado 5.1.1 is not DIRAC's patched fork and predates Python 3.10, so ``python -m
ILCDIRAC.CalibrationSystem.test.portal`` starts the portal after three run-time adjustments (no
file of WebAppDIRAC or DIRAC is changed): ``SSLIOStream.configure`` becomes a no-op (the fork's
M2Crypto stream is never used behind a balancer), the ``collections`` ABC aliases that tornado
5.1 imports are restored, and the static files' root is ``/`` (WebAppDIRAC serves its static
folder from the installed package, outside DIRAC's root folder).
"""
from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from ILCDIRAC.CalibrationSystem.localdirac.testbed import CODE_ROOT, TestbedError, _tail, _terminate

if TYPE_CHECKING:  # pragma: no cover
    from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed

PORTAL_DIR = CODE_ROOT / ".portal"
WEBAPP_SITE = PORTAL_DIR / "webapp"
BROWSER_SITE = PORTAL_DIR / "browser"
CHROMIUM = Path("/usr/bin/chromium")
ROOT_URL = "/DIRAC"
#: Request headers nginx sets itself: a client must not smuggle them through.
_BALANCER_HEADERS = ("x-ssl_client_verify", "x-ssl-cert", "x-forwarded-proto", "x-real-ip", "x-forwarded-for")
_HOP_HEADERS = ("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection")


def missing() -> str | None:
    """What ``make portal`` has not installed, or None."""
    for path, what in ((WEBAPP_SITE / "WebAppDIRAC", "WebAppDIRAC"), (BROWSER_SITE / "playwright", "Playwright"),
                       (CHROMIUM, "chromium")):
        if not path.exists():
            return f"{what} is not installed ({path} is missing): run `make portal`"
    return None


class _Balancer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream: int, certificate: str):
        self.upstream, self.certificate = upstream, urllib.parse.quote(certificate)
        super().__init__(("127.0.0.1", port), _BalancerHandler)


class _BalancerHandler(http.server.BaseHTTPRequestHandler):
    """What nginx does in front of the portal once it has verified the client's certificate."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _BALANCER_HEADERS + _HOP_HEADERS}
        headers.update({"X-Ssl_client_verify": "SUCCESS", "X-SSL-CERT": self.server.certificate,
                        "X-Forwarded-Proto": "https", "X-Real-IP": self.client_address[0]})
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream, timeout=300)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        except OSError as exc:
            self.send_error(502, f"portal unreachable: {exc}")
            return
        finally:
            upstream.close()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_HEADERS + ("content-length",):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = _forward


class Portal:
    """WebAppDIRAC for one user of a test bed; ``url`` is where a browser opens it."""

    def __init__(self, testbed: Testbed, user: str = "alice"):
        problem = missing()
        if problem:
            raise TestbedError(problem)
        self.testbed, self.user = testbed, user
        self.http_port, self.port = testbed.free_port(), testbed.free_port()
        self.log = testbed.log_dir / "portal.log"
        self.cfg = testbed.etc_dir / "portal.cfg"
        self.cfg.write_text(
            "WebApp\n{\n  Balancer = nginx\n  NumProcesses = 1\n  DevelopMode = False\n"
            f"  HTTP\n  {{\n    Port = {self.http_port}\n  }}\n}}\n"
        )
        self.process = None
        self.balancer: _Balancer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{ROOT_URL}/"

    def job_monitor_url(self) -> str:
        group = self.testbed.identity(self.user).group
        return f"{self.url}s:{self.testbed.setup}/g:{group}/?view=desktop&theme=Crisp&url_state=1|*DIRAC.JobMonitor.classes.JobMonitor:,"

    def start(self, timeout: float = 120) -> None:
        env = self.testbed.env()
        env["PYTHONPATH"] = os.pathsep.join([str(WEBAPP_SITE), env["PYTHONPATH"]])
        self.process = self.testbed._spawn(
            [sys.executable, "-m", "ILCDIRAC.CalibrationSystem.test.portal", str(self.cfg)], self.log, env=env
        )
        certificate = self.testbed.identity(self.user).cert.read_text()
        self.balancer = _Balancer(self.port, self.http_port, certificate)
        threading.Thread(target=self.balancer.serve_forever, name="portal-balancer", daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise TestbedError(f"the portal exited with {self.process.returncode}; end of {self.log}:\n{_tail(self.log)}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=1):
                    return
            if time.monotonic() > deadline:
                raise TestbedError(f"the portal did not listen within {timeout} s; end of {self.log}:\n{_tail(self.log)}")
            time.sleep(0.3)

    def close(self) -> None:
        if self.balancer is not None:
            self.balancer.shutdown()
            self.balancer.server_close()
            self.balancer = None
        _terminate(self.process)

    def __enter__(self) -> Portal:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _serve(cfgFile: str) -> None:
    """Start WebAppDIRAC's own ``dirac-webapp-run`` with the three run-time adjustments."""
    import collections
    import collections.abc

    for name in ("Mapping", "MutableMapping", "Sequence", "MutableSequence", "Set", "MutableSet", "Callable",
                 "Iterable", "Iterator", "Hashable"):
        setattr(collections, name, getattr(collections.abc, name))
    import tornado.iostream

    tornado.iostream.SSLIOStream.configure = classmethod(lambda cls, *args, **kwargs: None)
    import WebAppDIRAC.Core.StaticHandler as staticHandler

    staticHandler.rootPath = "/"
    from WebAppDIRAC.scripts import dirac_webapp_run

    sys.argv = ["dirac-webapp-run", "-i", cfgFile]
    dirac_webapp_run.main()


if __name__ == "__main__":
    _serve(sys.argv[1])
