"""A calibration scenario on the local test bed, shared by the integration tests and ``make demo``.

It does what a physicist does: make (emulated) sample files, write a settings file, run
``dirac-clic-calibration-submit`` as a user, watch the calibration through the service, and
finally read back what the service stored.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import STEERING, make_samples
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed
from marlin_emulator.truth import DetectorTruth, load_truth

BIN = Path(sys.executable).parent


class ScenarioError(AssertionError):
    """The calibration did not get where the scenario expected, with the evidence."""


@dataclass
class Scenario:
    """One calibration: its folder, detector truth, samples and settings."""

    testbed: Testbed
    folder: Path
    truth: DetectorTruth
    samples: Mapping[str, tuple[int, int]]
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 1
    user: str = "alice"
    #: The steering file submitted (the files it names are looked up beside it).
    steering: Path = STEERING

    def prepare(self) -> Path:
        """Write the sample files and the settings file; return the settings file's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        values: dict[str, Any] = {
            "detectorModel": self.truth.name,
            "backend": "local",
            "marlinExecutable": str(BIN / "marlin-emulator"),
            "steeringFile": str(self.steering),
        }
        values.update(make_samples(self.truth, self.folder, self.samples, self.seed))
        values.update(self.settings)
        path = self.folder / "settings.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return path

    def run_command(self, *args: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """A dirac-clic-calibration-* command as the scenario's user, in its folder."""
        command = [str(BIN / args[0]), *args[1:]]
        return subprocess.run(
            command, cwd=self.folder, env=self.testbed.env(user or self.user), capture_output=True, text=True,
            timeout=timeout,
        )

    def submit(self) -> int:
        settings = self.prepare()
        done = self.run_command("dirac-clic-calibration-submit", "--workdir", str(self.folder / "work"), str(settings))
        if done.returncode != 0:
            raise ScenarioError(f"submit failed ({done.returncode}): {done.stdout} {done.stderr}")
        return int(done.stdout.strip().splitlines()[-1])

    def status(self, calibrationID: int) -> dict[str, Any]:
        result = self.testbed.rpc(self.user).getCalibrationStatus([calibrationID])
        if not result["OK"]:
            raise ScenarioError(f"status of {calibrationID}: {result['Message']}")
        return result["Value"][0]

    def wait(
        self, calibrationID: int, timeout: float = 600, until: tuple[str, ...] = ("finished", "failed", "killed")
    ) -> dict:
        """Poll the service until the calibration reaches one of ``until``; raise with the logs otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(calibrationID)
            if status["status"] in until:
                return status
            if time.monotonic() > deadline:
                raise ScenarioError(
                    f"calibration {calibrationID} still {status} after {timeout} s\n{self.logs(calibrationID)}"
                )
            time.sleep(1.0)

    def wait_for_workers(self, calibrationID: int, states: set[str], timeout: float = 60) -> list[dict[str, Any]]:
        """Poll the database until every worker is in one of ``states``."""
        db = CalibrationDB(self.testbed.db_url)
        deadline = time.monotonic() + timeout
        while True:
            workers = db.getWorkers(calibrationID)
            if all(w["Status"] in states for w in workers):
                return workers
            if time.monotonic() > deadline:
                seen = {w["WorkerID"]: w["Status"] for w in workers}
                raise ScenarioError(
                    f"workers of {calibrationID} not all in {states}: {seen}\n{self.logs(calibrationID)}"
                )
            time.sleep(0.5)

    def history(self, calibrationID: int) -> list[dict[str, Any]]:
        result = self.testbed.rpc(self.user).getCalibrationHistory(calibrationID)
        if not result["OK"]:
            raise ScenarioError(f"history of {calibrationID}: {result['Message']}")
        return result["Value"]

    def logs(self, calibrationID: int, lines: int = 15) -> str:
        """The tails of the service and agent logs and of every worker log (those the submit
        command started, then those the agent restarted), for failure messages."""
        parts = [f"--- service log\n{_tail(self.testbed.service_log, lines)}",
                 f"--- agent log\n{_tail(self.testbed.agent_log, lines)}"]
        for work in (self.folder / "work", self.testbed.local_dir / "workers"):
            for log in sorted((work / f"calibration_{calibrationID}").glob("worker_*/worker.log")):
                parts.append(f"--- {log.parent.name} ({work})\n{_tail(log, lines)}")
        return "\n".join(parts)


def create_via_rpc(testbed: Testbed, folder: Path, user: str = "alice", *, truth: DetectorTruth,
                   samples: Mapping[str, tuple[int, int]], settings: Mapping[str, Any]) -> int:
    """A calibration created through the RPC exactly as the submit command would, but with no
    workers started: nothing changes it unless a test does."""
    from ILCDIRAC.CalibrationSystem.Client.Submission import collect_input_files
    from ILCDIRAC.CalibrationSystem.Utilities.settings import load_settings

    path = Scenario(testbed, folder, truth, samples, dict(settings), user=user).prepare()
    resolved = load_settings(path).to_dict()
    created = testbed.rpc(user).createCalibration(resolved, collect_input_files(resolved, folder))
    if not created["OK"]:
        raise ScenarioError(f"createCalibration as {user}: {created['Message']}")
    return created["Value"]


def database_rows(testbed: Testbed) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the test bed's database (to show a request changed nothing)."""
    from sqlalchemy import select

    from ILCDIRAC.CalibrationSystem.DB import CalibrationDB as dbModule

    db = dbModule.CalibrationDB(testbed.db_url)
    try:
        with db.engine.connect() as conn:
            return {table.name: [dict(row) for row in conn.execute(select(table)).mappings()]
                    for table in dbModule.metadata.sorted_tables}
    finally:
        db.engine.dispose()


def agent_cycles(testbed: Testbed) -> int:
    """How many cycles the test bed's agent has completed (DIRAC logs a run summary after each)."""
    try:
        return testbed.agent_log.read_text(errors="replace").count("run summary")
    except OSError:
        return 0


def wait_for_agent_cycles(testbed: Testbed, cycles: int, timeout: float = 120) -> None:
    """Block until the agent has completed ``cycles`` more cycles (each one looks at every calibration)."""
    target = agent_cycles(testbed) + cycles
    deadline = time.monotonic() + timeout
    while agent_cycles(testbed) < target:
        if time.monotonic() > deadline:
            raise ScenarioError(f"the agent did not complete {cycles} cycles in {timeout} s:\n"
                                f"{_tail(testbed.agent_log, 30)}")
        time.sleep(0.2)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


def shifted_truth(base: str, factors: Mapping[str, float], name: str | None = None) -> DetectorTruth:
    """A detector whose true constants are ``base``'s multiplied by ``factors`` (so a calibration
    starting from the model's defaults has something to find)."""
    reference = load_truth(base)
    constants = dict(reference.to_mapping()["trueConstants"])
    for key, factor in factors.items():
        value = constants[key]
        constants[key] = [v * factor for v in value] if isinstance(value, list) else value * factor
    mapping = reference.to_mapping()
    mapping["trueConstants"] = constants
    if name:
        mapping["name"] = name
    return load_truth(mapping)
