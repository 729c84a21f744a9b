"""The service's closer computes in a spawned child; a service killed with SIGKILL runs no cleanup,
so unless the child ends itself it is left behind (with multiprocessing's resource tracker),
holding memory and a CPU for a service that is gone. This starts a real parent process with the
closer on an SQLite CalibrationDB, kills it and watches what it started."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ILCDIRAC.CalibrationSystem.logic import closer

PARENT = """
import os, sys, time
from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.logic.closer import StepCloser

service = StepCloser(CalibrationDB(sys.argv[1]), interval=3600, process=True).start()
print(service.compute(os.getpid), flush=True)
time.sleep(600)
"""


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie: an orphan's zombie waits for an init that may never reap it."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_closers_child_ends_when_the_service_is_killed(tmp_path):
    root = Path(closer.__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}"],
                              env=env, stdout=subprocess.PIPE, text=True)
    started: list[psutil.Process] = []
    try:
        child = int(parent.stdout.readline())
        started = psutil.Process(parent.pid).children(recursive=True)
        assert child in {p.pid for p in started}
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 3 * closer.PARENT_CHECK + 2
        while any(alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [f"{p.pid} {' '.join(p.cmdline())}" for p in started if alive(p)]
        assert not left, f"still running after the service was killed: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        for process in started:
            if alive(process):
                process.kill()
