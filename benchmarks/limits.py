"""What the limits cost and save: answer sizes and refusal times on the real service.

Builds a throwaway test bed (real dirac-service over TLS, MariaDB, no agent) and measures, as a
user and as the host:
- the size of getCalibrationStatus and getAgentWork answers for one calibration at the largest
  allowed number of workers (MaxWorkersPerCalibration), and how long they take;
- getCalibrationStatus with 2 000 repeats of one ID (deduplicated) and with 21 distinct IDs
  (refused);
- the refusals of a 100 000-worker calibration and of a 10 MB file name (time, message length);
- the client-side settings loader on a YAML alias bomb and on a 54 MB settings file (time until
  the one-line refusal; given up after 120 s).

Usage: .venv/bin/python benchmarks/limits.py [--json] [--loader-code DIR]
(``--loader-code``: run the settings loader from another copy of the code, e.g. an older commit
unpacked with ``git archive``, to compare.)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ILCDIRAC.CalibrationSystem.localdirac.scenario import BIN, Scenario, create_via_rpc, shifted_truth  # noqa: E402
from ILCDIRAC.CalibrationSystem.localdirac.testbed import CODE_ROOT, Testbed  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.limits import ServiceLimits  # noqa: E402

TRUTH = shifted_truth("FCCee_o1_v04", {"CalibrECAL": 1.15})
GRID = {"phaseSequence": ["1.0"], "strategy": "legacy", "backend": "dirac", "marlinVersion": "ILCSoft-2020-02-07_gcc62"}


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def size(value) -> int:
    return len(json.dumps(value, default=str))


LOADER_TIMEOUT = 120


def loader(path: Path, cwd: Path, code: Path) -> tuple[float, str]:
    """The submit command's dry run on ``path`` with the code in ``code``: seconds and the last
    line of its stderr (or that it was given up)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    try:
        done = subprocess.run([str(BIN / "dirac-clic-calibration-submit"), "--dry-run", str(path)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=LOADER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, f"no answer after {LOADER_TIMEOUT} s (killed)"
    lines = done.stderr.strip().splitlines() or [""]
    return time.perf_counter() - started, f"{len(lines)} line(s) on stderr, the last: {lines[-1][:200]}"


def in_process(path: Path) -> float:
    """Seconds this checkout's load_settings takes to refuse ``path`` (without the command's start-up)."""
    from ILCDIRAC.CalibrationSystem.Utilities.settings import SettingsError, load_settings

    started = time.perf_counter()
    try:
        load_settings(path)
    except SettingsError:
        pass
    return time.perf_counter() - started


def measure(folder: Path, loaderCode: Path) -> dict:
    results = {}
    workers = ServiceLimits().maxWorkers
    with Testbed(local_backend=False) as testbed:
        testbed.start_service()
        calibrationID = create_via_rpc(testbed, folder / "big", truth=TRUTH, samples={"gamma": (workers, 10)},
                                       settings={**GRID, "numberOfJobs": workers, "gammaEventsPerFile": 10})
        alice, host = testbed.rpc("alice"), testbed.rpc("host")
        answer, seconds = timed(alice.getCalibrationStatus, [calibrationID])
        results["status, 1 calibration of 1000 workers"] = {"bytes": size(answer["Value"]), "seconds": seconds}
        answer, seconds = timed(host.getAgentWork)
        results["getAgentWork, 1 calibration of 1000 workers"] = {"bytes": size(answer["Value"]), "seconds": seconds}
        answer, seconds = timed(alice.getCalibrationStatus, [calibrationID] * 2000)
        results["status, 2000 repeats of one ID"] = {"rows": len(answer["Value"]), "seconds": seconds}
        answer, seconds = timed(alice.getCalibrationStatus, list(range(1, 22)))
        results["status, 21 distinct IDs"] = {"refusal": answer["Message"], "seconds": seconds}
        path = Scenario(testbed, folder / "huge", TRUTH, {"gamma": (2, 10)}, {**GRID, "numberOfJobs": 2}).prepare()
        from ILCDIRAC.CalibrationSystem.Client.Submission import collect_input_files
        from ILCDIRAC.CalibrationSystem.Utilities.settings import load_settings

        resolved = load_settings(path).to_dict()
        files = collect_input_files(resolved, folder / "huge")
        answer, seconds = timed(alice.createCalibration, {**resolved, "numberOfJobs": 100_000}, files)
        results["create, 100000 workers"] = {"refusal": answer["Message"], "seconds": seconds}
        answer, seconds = timed(alice.createCalibration, resolved, {**files, "x" * 10_000_000: "<x/>"})
        results["create, 10 MB file name"] = {"refusal characters": len(answer["Message"]), "seconds": seconds}
    bomb = folder / "bomb.yaml"
    # 10^7 sample files once expanded, in 700 bytes
    bomb.write_text(
        "detectorModel: CLD\nsteeringFile: steering.xml\nx0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7))
        + "gammaFiles: *a6\n"
    )
    seconds, message = loader(bomb, folder, loaderCode)
    results["settings, YAML alias bomb (10^7 sample files)"] = {"seconds": seconds, "refusal": message,
                                                           "in-process seconds": in_process(bomb)}
    large = folder / "large.yaml"
    with open(large, "w") as out:
        out.write("detectorModel: CLD\nsteeringFile: steering.xml\ngammaFiles:\n")
        line = "  - /ilc/prod/clic/gamma/10GeV/gamma_0000000000000000000000000000.slcio\n"
        out.write(line * (54_000_000 // len(line)))
    seconds, message = loader(large, folder, loaderCode)
    results["settings, 54 MB file"] = {"seconds": seconds, "refusal": message, "in-process seconds": in_process(large)}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--loader-code", type=Path, default=CODE_ROOT, help="code the settings loader runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="limits-") as folder:
        results = measure(Path(folder), args.loader_code.resolve())
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for name, values in results.items():
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        print(f"{name}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
