#!/usr/bin/env python
"""Load on one Calibration service: N simulated workers over DISET/TLS, through complete steps.

A real test bed (``localdirac/testbed.py``: CA, proxies, ``dirac-service`` over TLS, MariaDB) runs one
hadronic-scale calibration (phase 1.4, ``--strategy``, ``pandoraPFAAccuracy`` from
``--accuracy``) with N workers. The workers are the project's own ``Client/Worker.py`` loop
(``Worker.run``: set-up, waitForNextStep, submitResult, following the service's
``retryAfter``; worker N starts N / START_RATE seconds late, as in a job) in ``--clients``
processes of threads; only the reconstruction is simulated: it
sleeps a random time (``--reconstruction LO HI`` seconds) and returns one of a few real reports,
made once by the project's worker code from emulator output (``--events`` K0L each, like
``benchmarks/close.py``), so every close runs the real estimators on N x events K0L.

After ``--steps`` closed steps the calibration is killed and the workers end. Printed: p50/p99
latency and count of every RPC (``waitForNextStep`` only where it was answered without being
held: the calls held until a step opened are measured as the notification instead), calls per
second, the step-close latency (the report that reached the threshold acknowledged -> the first
worker served the next step), the notification latency (the next step committed, from the
service log -> each held worker answered), the close compute time (from the service log), the
service's CPU and peak memory (psutil), errors (lock waits among them), and the check that
every acknowledged report is stored and counted exactly once.
Then the status command (``dirac-clic-calibration-status``, and its RPC alone) with N workers,
and with 50 calibrations in the database.

Usage: .venv/bin/python benchmarks/load.py --workers 100 [--steps 3] [--clients 4]
       [--reconstruction 20 60] [--events 1000] [--accuracy 0.02 0.005] [--poll-rate 20] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BIN = Path(sys.prefix) / "bin"
PHASES = ["1.4"]


# ------------------------------------------------------------------------------------ client processes
def client_main(specPath: str) -> int:
    """One client process: its share of the workers as threads, each a real ``Worker`` loop."""
    from DIRAC.Core.Base.Script import Script

    sys.argv = sys.argv[:1]
    Script.parseCommandLine(ignoreErrors=True)
    from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient
    from ILCDIRAC.CalibrationSystem.Client.Worker import Polling, Worker

    spec = json.loads(Path(specPath).read_text())
    reports = json.loads(Path(spec["reports"]).read_text())
    lo, hi = spec["reconstruction"]
    calls: list[tuple] = []
    lock = threading.Lock()

    class TimedRPC:
        """The CalibrationClient a worker uses, timing each call and noting what it was told."""

        def __init__(self, workerID: int):
            self.client, self.workerID = CalibrationClient(), workerID

        def __getattr__(self, method):
            def call(*args):
                began = time.time()
                result = getattr(self.client, method)(*args)
                ended = time.time()
                value = result.get("Value") if result["OK"] else None
                note: Any = None
                if method == "waitForNextStep" and value:
                    note = [value["action"], value.get("step"), value.get("retryAfter")]
                elif method == "submitResult" and value:
                    note = [args[1], value["verdict"], value.get("ready", False)]
                with lock:
                    calls.append((method, began, ended - began, result["OK"], result.get("Message", ""),
                                  self.workerID, note))
                return result

            return call

    class SimulatedWorker(Worker):
        """``Worker`` with the reconstruction replaced by a sleep and a prepared report."""

        def prepare(self, setup):
            self.settings = setup["settings"]
            self.polling = Polling.from_dict(setup.get("polling"))

        def reconstruct(self, params):
            self.sleep(self.rng.uniform(lo, hi))
            report = reports[(self.workerID + params["step"]) % len(reports)]
            return {"phases": {key: report[key] for key in params["phases"]}}

    codes: dict[int, int] = {}

    def run(workerID: int) -> None:
        worker = SimulatedWorker(TimedRPC(workerID), spec["calibrationID"], workerID, Path(spec["workDir"]),
                                 rng=random.Random(workerID))
        codes[workerID] = worker.run()

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in spec["workers"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(spec["out"]).write_text(json.dumps({"calls": calls, "codes": codes}))
    return 0


# ------------------------------------------------------------------------------------ the run
def make_reports(folder: Path, count: int, events: int, accuracy: tuple[float, float]) -> tuple[dict, list]:
    """Real reports of ``count`` emulated workers (``events`` K0L, photons and muons each)."""
    from close import worker_reports

    settings, stored, _ = worker_reports(folder, count, events, accuracy)
    return settings, [report["phases"] for _, report in stored]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


class ServiceMonitor(threading.Thread):
    """Samples the service process: CPU seconds and peak resident memory."""

    def __init__(self, pid: int):
        import psutil

        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak = 0
        times = self.process.cpu_times()
        self.cpu0, self.t0 = times.user + times.system, time.time()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def result(self) -> dict[str, float]:
        times = self.process.cpu_times()
        wall = time.time() - self.t0
        return {"cpuSeconds": times.user + times.system - self.cpu0, "wallSeconds": wall,
                "cpuPercentOfOneCore": 100 * (times.user + times.system - self.cpu0) / wall,
                "peakRssMB": self.peak / 2**20}


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB
    from ILCDIRAC.CalibrationSystem.localdirac.inprocess import input_files
    from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed
    from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict
    from marlin_emulator import STEERING

    scratch = Path(tempfile.mkdtemp(prefix="load-"))
    began = time.time()
    settings, reports = make_reports(scratch / "reports", args.reports, args.events, tuple(args.accuracy))
    reportsFile = scratch / "reports.json"
    reportsFile.write_text(json.dumps(reports))
    made = time.time() - began
    resolved = settings_from_dict({
        **settings, "steeringFile": str(STEERING), "backend": "local", "numberOfJobs": args.workers,
        "phaseSequence": PHASES, "strategy": args.strategy, "maxIterationsPerPhase": args.steps + 10,
    }).to_dict()
    options = {"WorkerPollMinimum": 1, "WorkerPollMaximum": 120, "WorkerPollRate": args.poll_rate,
               "WorkerPatience": 900}
    with Testbed(service_options=options) as testbed:
        testbed.start_service()
        created = testbed.rpc("alice").createCalibration(resolved, input_files(resolved, STEERING))
        if not created["OK"]:
            raise RuntimeError(f"createCalibration: {created['Message']}")
        calibrationID = created["Value"]
        db = CalibrationDB(testbed.db_url)
        monitor = ServiceMonitor(testbed.service.pid)
        monitor.start()
        clients = []
        for n in range(args.clients):
            spec = {"calibrationID": calibrationID, "workers": list(range(n, args.workers, args.clients)),
                    "reports": str(reportsFile), "reconstruction": args.reconstruction,
                    "workDir": str(scratch / "work"), "out": str(scratch / f"client{n}.json")}
            specPath = scratch / f"client{n}.spec.json"
            specPath.write_text(json.dumps(spec))
            clients.append(subprocess.Popen([sys.executable, __file__, "--client", str(specPath)],
                                            env=testbed.env("alice"), cwd=scratch,
                                            stdout=open(scratch / f"client{n}.log", "w"), stderr=subprocess.STDOUT))
        loadStart = time.time()
        stop = threading.Event()
        while not stop.wait(0.5):
            calibration = db.getCalibration(calibrationID, full=False)
            if calibration["Status"] != "running" or all(c.poll() is not None for c in clients):
                break
            if calibration["Step"] > args.steps:
                testbed.rpc("alice").killCalibration(calibrationID)
                break
            if time.time() - loadStart > args.timeout:
                testbed.rpc("alice").killCalibration(calibrationID)
                break
        for n, client in enumerate(clients):
            if client.wait(timeout=args.timeout) != 0:
                raise RuntimeError(f"client {n} failed: {(scratch / f'client{n}.log').read_text()[-2000:]}")
        loadEnd = time.time()
        service = monitor.result()
        monitor.stop.set()
        outputs = [json.loads((scratch / f"client{n}.json").read_text()) for n in range(args.clients)]
        result = analyse(db, calibrationID, outputs, loadStart, loadEnd, testbed.service_log.read_text())
        sizes = [len(json.dumps({"phases": {k: r[k] for k in PHASES}})) for r in reports]
        result.update(service=service, reportsMadeSeconds=made, workers=args.workers,
                      reportBytes=statistics.mean(sizes))
        result["status"] = time_status(testbed, calibrationID, resolved, args)
    return result


def log_time(line: str) -> float:
    """The UNIX time of a DIRAC log line ("2026-11-30 04:40:03,547 UTC ...")."""
    import datetime

    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.replace(tzinfo=datetime.UTC).timestamp()


def stats(values: list[float]) -> dict[str, float]:
    return {"count": len(values), "p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
            "max": max(values) if values else float("nan")}


def analyse(db, calibrationID: int, outputs: list[dict], start: float, end: float, serviceLog: str) -> dict:
    calls = [tuple(c) for out in outputs for c in out["calls"]]
    errors = [f"{method}: {message}" for method, _, _, ok, message, _, _ in calls if not ok]
    # when each step opened: the closer's log line after it committed the previous step's close
    closeLines = [(log_time(line), int(m.group(1)), float(m.group(2)), float(m.group(3)))
                  for line in serviceLog.splitlines()
                  if (m := re.search(rf"closed step (\d+) of calibration {calibrationID} \(\w+\) in ([0-9.]+) s "
                                     rf"\(computation ([0-9.]+) CPU s\)", line))]
    opened = {step + 1: at for at, step, _, _ in closeLines}
    # latency of the calls that were answered at once; waitForNextStep calls that began before
    # the step they were answered opened were held for it: their wait is the notification's
    byMethod: dict[str, list[float]] = {}
    notified: dict[int, list[float]] = {}
    holdsRunOut = endings = 0
    for method, began, seconds, ok, _, _, note in calls:
        if method == "waitForNextStep" and ok:
            action, step, retryAfter = note
            if action == "run" and step in opened and began < opened[step]:
                notified.setdefault(step, []).append(began + seconds - opened[step])
                continue
            if action == "wait" and retryAfter == 0:
                holdsRunOut += 1
                continue
            if action in ("finished", "killed", "failed"):
                endings += 1  # one per worker: held until the calibration ended, or asked after
                continue
        byMethod.setdefault(method, []).append(seconds)
    latency = {m: stats(v) for m, v in byMethod.items()}
    # the same notification as the service saw it (its log: each call's peer, method and time),
    # without the clients' own waits for the CPU they share with it here
    executing: dict[str, str] = {}
    answered: dict[int, list[float]] = {}
    for line in serviceLog.splitlines():
        if m := re.search(r"Executing action \(([^)]*)\)\[[^\]]*\] RPC/(\w+)\(", line):
            executing[m.group(1)] = m.group(2)
        elif (m := re.search(r"Returning response \(([^)]*)\)\[[^\]]*\] \(([0-9.]+) secs\)", line)) and \
                executing.pop(m.group(1), None) == "waitForNextStep":
            at = log_time(line)
            for step, openedAt in opened.items():
                if at - float(m.group(2)) < openedAt <= at:
                    answered.setdefault(step, []).append(at - openedAt)
    settled = max(began + seconds for method, began, seconds, *_ in calls if method == "getWorkerSetup")
    # step-close latency: threshold report acknowledged -> first worker served the next step
    ready = {}
    served: dict[int, float] = {}
    for method, began, seconds, ok, _, _, note in calls:
        if method == "submitResult" and ok and note[2]:
            ready[note[0]] = began + seconds
        if method == "waitForNextStep" and ok and note[0] == "run":
            served[note[1]] = min(served.get(note[1], float("inf")), began + seconds)
    closeLatency = {step: served[step + 1] - at for step, at in sorted(ready.items()) if step + 1 in served}
    # nothing lost, nothing twice: acknowledged 'accepted' reports are exactly the stored rows
    # (a report whose answer was lost in transit is sent again and answered 'duplicate')
    accepted: dict[int, list[int]] = {}
    duplicate: dict[int, set[int]] = {}
    for method, _, _, ok, _, worker, note in calls:
        if method == "submitResult" and ok and note[1] in ("accepted", "duplicate"):
            (accepted.setdefault(note[0], []).append(worker) if note[1] == "accepted"
             else duplicate.setdefault(note[0], set()).add(worker))
    lost, twice, uncounted = 0, 0, 0
    for step in db.getSteps(calibrationID):
        stored = [w for w, _ in db.getResults(calibrationID, step["Step"])]
        acked = accepted.get(step["Step"], [])
        twice += len(acked) - len(set(acked))
        repeated = duplicate.get(step["Step"], set())
        lost += len((set(acked) | repeated) - set(stored))
        uncounted += abs(step["NResults"] - len(stored)) + len(set(stored) - set(acked) - repeated)
    return {
        "calibrationID": calibrationID,
        "seconds": end - start,
        "calls": len(calls),
        "callsPerSecond": len(calls) / (end - start),
        "latency": latency,
        "startSeconds": settled - start,
        "holdsRunOut": holdsRunOut,
        "endAnswers": endings,
        "errors": len(errors),
        "lockWaitErrors": sum("Lock wait" in e for e in errors) + serviceLog.count("Lock wait timeout"),
        "errorSamples": sorted(set(errors))[:5],
        "stepCloseLatency": closeLatency,
        "notifiedAfterOpening": {s: stats(v) for s, v in notified.items()},
        "answeredAfterOpening": {s: stats(v) for s, v in answered.items()},
        "closeComputeSeconds": [wall for _, _, wall, _ in closeLines],
        "closeComputeCpuSeconds": [cpu for _, _, _, cpu in closeLines],
        "lost": lost,
        "countedTwice": twice,
        "storedButNotAcknowledgedOrMiscounted": uncounted,
        "exitCodes": sorted({c for out in outputs for c in out["codes"].values()}),
    }


def time_status(testbed, calibrationID: int, resolved: dict, args) -> dict[str, float]:
    """The status command (process and RPC) for the calibration with N workers, then with 50
    calibrations in the database (killed ones: a user may have only 10 running)."""
    from ILCDIRAC.CalibrationSystem.localdirac.inprocess import input_files
    from marlin_emulator import STEERING

    def command(*extra: str) -> float:
        began = time.perf_counter()
        done = subprocess.run([str(BIN / "dirac-clic-calibration-status"), *extra], env=testbed.env("alice"),
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"status command: {done.stdout}{done.stderr}")
        return time.perf_counter() - began

    def rpc(ids: list[int]) -> float:
        client = testbed.rpc("alice")
        began = time.perf_counter()
        answer = client.getCalibrationStatus(ids)
        if not answer["OK"]:
            raise RuntimeError(answer["Message"])
        return time.perf_counter() - began

    timings = {"commandWithWorkers": command(str(calibrationID)), "rpcWithWorkers": rpc([calibrationID])}
    small = {**resolved, "numberOfJobs": 10}
    files = input_files(small, STEERING)
    for _ in range(49):
        created = testbed.rpc("alice").createCalibration(small, files)
        if not created["OK"]:
            raise RuntimeError(created["Message"])
        testbed.rpc("alice").killCalibration(created["Value"])
    timings["commandWith50Calibrations"] = command()
    timings["rpcWith50Calibrations"] = rpc([])
    return timings


def show(result: dict) -> None:
    service = result["service"]
    print(f"{result['workers']} workers, {result['calls']} calls in {result['seconds']:.0f} s = "
          f"{result['callsPerSecond']:.1f} calls/s; report {result['reportBytes'] / 1000:.1f} KB as JSON")
    for method, row in sorted(result["latency"].items()):
        print(f"  {method:18s} n={row['count']:6d}  p50 {row['p50'] * 1000:7.0f} ms  p99 {row['p99'] * 1000:7.0f} ms  "
              f"max {row['max'] * 1000:7.0f} ms")
    print(f"  ({result['startSeconds']:.0f} s until every worker had its set-up; "
          f"{result['holdsRunOut']} held calls ran out of hold time; {result['endAnswers']} answers "
          f"of the calibration's end left out)")
    print("  step close (threshold report acknowledged -> first worker served the next step): "
          + ", ".join(f"step {s}: {v:.2f} s" for s, v in result["stepCloseLatency"].items()))
    print("  held workers answered after the step opened (n, p50/p99/max s): "
          + ", ".join(f"step {s}: {v['count']}, {v['p50']:.2f}/{v['p99']:.2f}/{v['max']:.2f}"
                      for s, v in result["notifiedAfterOpening"].items()))
    print("  the same, sent by the service (its log): "
          + ", ".join(f"step {s}: {v['count']}, {v['p50']:.2f}/{v['p99']:.2f}/{v['max']:.2f}"
                      for s, v in result["answeredAfterOpening"].items()))
    print("  close (claim, snapshot, estimators, commit) s: "
          + ", ".join(f"{s:.2f}" for s in result["closeComputeSeconds"])
          + "; its computation alone, CPU s: "
          + ", ".join(f"{s:.2f}" for s in result.get("closeComputeCpuSeconds", [])))
    print(f"  service: {service['cpuSeconds']:.0f} CPU s in {service['wallSeconds']:.0f} s = "
          f"{service['cpuPercentOfOneCore']:.0f} % of a core, peak RSS {service['peakRssMB']:.0f} MB")
    print(f"  errors {result['errors']} (lock waits {result['lockWaitErrors']}) {result['errorSamples']}")
    print(f"  acknowledged reports lost {result['lost']}, counted twice {result['countedTwice']}, "
          f"stored but not acknowledged or miscounted {result['storedButNotAcknowledgedOrMiscounted']}; "
          f"worker exit codes {result['exitCodes']}")
    status = result["status"]
    print(f"  status command with {result['workers']} workers: {status['commandWithWorkers']:.2f} s "
          f"(RPC {status['rpcWithWorkers']:.3f} s); with 50 calibrations: {status['commandWith50Calibrations']:.2f} s "
          f"(RPC {status['rpcWith50Calibrations']:.3f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3, help="closed steps before the calibration is killed")
    parser.add_argument("--clients", type=int, default=4, help="client processes the worker threads run in")
    parser.add_argument("--reconstruction", nargs=2, type=float, default=(20.0, 60.0), metavar=("LO", "HI"),
                        help="simulated reconstruction time per step, seconds (uniform)")
    parser.add_argument("--reports", type=int, default=8, help="distinct emulated reports the workers send")
    parser.add_argument("--events", type=int, default=1000, help="K0L (and photons, muons) per report")
    parser.add_argument("--accuracy", nargs=2, type=float, default=(0.02, 0.005),
                        metavar=("DIGITISATION", "PANDORAPFA"))
    parser.add_argument("--strategy", default="fast", choices=("fast", "legacy"))
    parser.add_argument("--poll-rate", type=float, default=20.0, help="the service's WorkerPollRate")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args.client)
    result = run_load(args)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        show(result)
    return 0 if result["lost"] == result["countedTwice"] == result["storedButNotAcknowledgedOrMiscounted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
