"""The local backend watches and kills only a calibration's own worker processes, and writes its
folders and logs without following links. Real processes: stand-in worker commands are scripts
named like the worker command, started exactly as the backend starts workers."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ILCDIRAC.CalibrationSystem.Client.Backends import WORKER_SCRIPT, LocalBackend, worker_arguments
from ILCDIRAC.CalibrationSystem.Utilities.paths import PathError


@pytest.fixture
def processes():
    """Processes a test starts; each is killed and reaped afterwards."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def start(processes, command: list[str]) -> int:
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    processes.append(process)
    wait_for_command_line(process.pid, command[-1])
    return process.pid


def wait_for_command_line(pid: int, last: str, timeout: float = 60.0) -> None:
    """Wait (without sleeping blindly) until the process has exec'd its final command line, whose
    last argument is ``last``: between fork and exec it shows its parent's, or none."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).cmdline()[-1:] == [last]:
                return
        except psutil.Error:
            pass
        psutil.wait_procs([], timeout=0.01)
    raise AssertionError(f"process {pid} did not start a command ending in {last!r}")


def fake_worker(folder: Path) -> Path:
    """A program named like the worker command that just waits (a worker between steps)."""
    script = folder / WORKER_SCRIPT
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    script.chmod(0o755)
    return script


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_only_that_calibrations_and_that_workers_process_counts_and_is_killed(tmp_path, processes):
    script = fake_worker(tmp_path)
    mine = start(processes, [str(script), *worker_arguments(7, 0), "--workdir", str(tmp_path)])
    otherWorker = start(processes, [str(script), *worker_arguments(7, 1), "--workdir", str(tmp_path)])
    otherCalibration = start(processes, [str(script), *worker_arguments(8, 0), "--workdir", str(tmp_path)])
    # a process that only mentions the worker command in its arguments is not one
    mention = start(processes, [sys.executable, "-c", "import time; time.sleep(300)", WORKER_SCRIPT,
                                *worker_arguments(7, 0)])
    bystander = start(processes, ["sleep", "300"])
    backend = LocalBackend(None)
    jobs = {0: f"local:{mine}"}
    assert backend.states(7, jobs) == {f"local:{mine}": "running"}
    # registered as worker 0 of calibration 7, none of the others is that worker
    for pid in (otherWorker, otherCalibration, mention, bystander):
        assert backend.states(7, {0: f"local:{pid}"}) == {f"local:{pid}": "done"}, pid
        backend.kill(7, {0: f"local:{pid}"})
    assert all(alive(pid) for pid in (mine, otherWorker, otherCalibration, mention, bystander))
    # malformed and foreign job IDs are unknown, never a PID to signal
    assert backend.states(7, {0: "12345", 1: "local:-1", 2: "local:1x", 3: "local:0"}) == {
        "12345": "unknown", "local:-1": "unknown", "local:1x": "unknown", "local:0": "unknown"}
    backend.kill(7, {0: "local:1"})  # PID 1 is not a worker: nothing happens
    # taken before the kill: the backend reaps its child at once, the PID may be gone right after
    worker = psutil.Process(mine)
    backend.kill(7, jobs)
    psutil.wait_procs([worker], timeout=10)
    assert not alive(mine)
    assert all(alive(pid) for pid in (otherWorker, otherCalibration, mention, bystander))


def worker_command_in(folder: Path, monkeypatch) -> None:
    """Make the backend start the stand-in worker command (it runs the one next to the interpreter)."""
    folder.mkdir()
    fake_worker(folder)
    monkeypatch.setattr(sys, "executable", str(folder / "python"))


def test_worker_folders_and_logs_follow_no_planted_link(tmp_path, monkeypatch):
    worker_command_in(tmp_path / "bin", monkeypatch)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    work = tmp_path / "work"
    (work / "calibration_3" / "worker_0").mkdir(parents=True)
    (work / "calibration_3" / "worker_0" / "worker.log").symlink_to(victim)
    backend = LocalBackend(work)
    with pytest.raises(PathError, match="worker.log .* is a symbolic link"):
        backend.submit(3, [0])
    (work / "calibration_4").symlink_to(tmp_path)
    with pytest.raises(PathError, match="calibration_4 is a symbolic link"):
        backend.submit(4, [0])
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "victim.txt", "work"]


def test_a_restarted_worker_acts_for_its_owner_with_the_starters_own_environment(tmp_path, monkeypatch, processes):
    worker_command_in(tmp_path / "bin", monkeypatch)
    monkeypatch.setenv("PYTHONPATH", "/the/agents/own/path")
    backend = LocalBackend(tmp_path / "agent", owner=("/CN=alice", "calibration_user"))
    jobs = backend.submit(5, [2])
    pid = int(jobs[2].removeprefix("local:"))
    process = psutil.Process(pid)
    try:
        wait_for_command_line(pid, "calibration_user")
        cmdline = process.cmdline()
        assert cmdline[-10:] == ["--calibration", "5", "--worker", "2", "--workdir",
                                 str(tmp_path / "agent" / "calibration_5" / "worker_2"),
                                 "--owner-dn", "/CN=alice", "--owner-group", "calibration_user"]
        assert process.environ()["PYTHONPATH"] == "/the/agents/own/path"
        assert process.cwd() == str(tmp_path / "agent" / "calibration_5" / "worker_2")
        assert backend.states(5, jobs) == {jobs[2]: "running"}
    finally:
        backend.kill(5, jobs)
    assert psutil.wait_procs([process], timeout=10)[1] == []
    assert oct((tmp_path / "agent" / "calibration_5").stat().st_mode & 0o777) == "0o700"
    assert os.path.isfile(tmp_path / "agent" / "calibration_5" / "worker_2" / "worker.log")
