#!/usr/bin/env python
"""Compute time of a step close, and the constants against today's per-event computation.

N workers (default 100) each reconstruct their slice of 1 000 K0L, 1 000 photons and 1 000 muons
with the emulator and reduce it exactly as ``Client/Worker.py`` does (CLD, the model's starting
constants, 10-20 % from the truth). Then the service's pure close function ``decide_close``
(merge the stored reports, estimators, the fast strategy's offline replay, the state machine and
the bootstrap uncertainties) runs on those reports for three kinds of step: the hadronic scale
alone, the fast strategy's second pass (MIP confirmation, EM and hadronic scale) and its first
pass (ECAL and HCAL digitisation, MIP prediction). Each is timed ``--repeat`` times; the
uncertainties (part of every close) are also timed alone, on the same inputs.

``--compare`` also runs today's per-event chi-square method (``test/percsm.py``) on the very
events the workers binned (read back from their ROOT files with the phase's selection) and prints
how far the constants of the fixed-size summaries are from it, relative and in units of the
requested accuracy.

Usage: .venv/bin/python benchmarks/close.py [--workers N] [--events N] [--accuracy D P]
                                           [--repeat N] [--compare] [--json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uproot

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ILCDIRAC.CalibrationSystem.Client.Worker import Worker  # noqa: E402
from ILCDIRAC.CalibrationSystem.DB.CalibrationDB import CalibrationDB  # noqa: E402
from ILCDIRAC.CalibrationSystem.localdirac.configurations import CONFIGURATIONS  # noqa: E402
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import CALLER, EmulatorRunner, LogicRPC, input_files, make_samples  # noqa: E402
from ILCDIRAC.CalibrationSystem.logic import calibrations as logic  # noqa: E402
from ILCDIRAC.CalibrationSystem.logic.uncertainties import step_uncertainties  # noqa: E402
from ILCDIRAC.CalibrationSystem.test import percsm  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import K0L_MASS  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.procedure import ProcedureState, start  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.settings import settings_from_dict  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary  # noqa: E402
from marlin_emulator import STEERING  # noqa: E402

STEPS = {"hadronic scale": ["1.4"], "fast pass 2": ["1.2", "1.3", "1.4"], "fast pass 1": ["1.0", "1.1", "1.2"]}
ALL_PHASES = ["1.0", "1.1", "1.2", "1.3", "1.4"]
KAON_BRANCHES = ("nPfoTargetsTotal", "nPfoTargetsNeutralHadrons", "nPfosTotal", "nPfosNeutralHadrons",
                 "pfoMinHCalLayerToEdge", "pfoECalToHadEnergy", "pfoHCalToHadEnergy")


def worker_reports(
    folder: Path, workers: int, events: int, accuracy: tuple[float, float]
) -> tuple[dict, list, list[Path]]:
    """(resolved settings, [(workerID, report)], worker folders): every worker reconstructs its
    slices once and reports every phase of stage 1."""
    configuration = next(c for c in CONFIGURATIONS if c.name == "CLD")
    truth = configuration.truth()
    settings = {
        "detectorModel": configuration.model,
        "numberOfJobs": workers,
        "marlinExecutable": "marlin-emulator",
        "strategy": "fast",
        "phaseSequence": ALL_PHASES,
        "digitisationAccuracy": accuracy[0],
        "pandoraPFAAccuracy": accuracy[1],
        **configuration.settings,
        **make_samples(
            truth, folder, {"gamma": (workers, events), "kaon": (workers, events), "muon": (workers, events)}
        ),
    }
    resolved = settings_from_dict({**settings, "steeringFile": str(STEERING), "backend": "local"}).to_dict()
    db = CalibrationDB(f"sqlite+pysqlite:///{folder / 'calibration.sqlite'}")
    rpc = LogicRPC(db)
    calibrationID = logic.create_calibration(db, CALLER, resolved, input_files(resolved))
    params = {"step": 1, "phases": ALL_PHASES, "constants": resolved["startingConstants"], "inputs": {}}
    stored, folders = [], []
    runner = EmulatorRunner()
    for workerID in range(workers):
        worker = Worker(rpc, calibrationID, workerID, folder / f"worker_{workerID}", runner=runner)
        worker.prepare(worker.call("getWorkerSetup", calibrationID, workerID))
        stored.append((workerID, worker.reconstruct(params)))
        folders.append(worker.workDir)
    return resolved, stored, folders


def time_close(settings: dict, stored: list, phases: list[str], repeat: int) -> dict:
    state = start(phases, settings["startingConstants"], "fast", 30)
    state.active = list(phases)
    calibration = {"CalibrationID": 1, "State": state.to_dict(), "Settings": settings, "Stage": 1,
                   "Phase": int(phases[0].split(".")[1])}
    step = {"Step": 1, "Phases": phases}
    reports = [(w, {"phases": {k: r["phases"][k] for k in phases}}) for w, r in stored]
    seconds, uncertainty = [], []
    for _ in range(repeat):
        began = time.perf_counter()
        decision = logic.decide_close(calibration, step, reports)
        seconds.append(time.perf_counter() - began)
        if "error" in decision.outcome:
            raise RuntimeError(decision.outcome["error"])
        # the bootstrap's share, timed on its own with the same inputs
        ctx = PhaseContext.from_settings(settings)
        merged = {
            k: Summary.merge_payloads((r["phases"][k] for _, r in reports), phase_for(k).spec(ctx)) for k in phases
        }
        began = time.perf_counter()
        step_uncertainties(phases, state.constants, ProcedureState.from_dict(decision.state).constants, merged, ctx, 1)
        uncertainty.append(time.perf_counter() - began)
    size = statistics.mean(len(json.dumps(r)) for _, r in reports)
    return {"seconds_min": min(seconds), "seconds_median": statistics.median(seconds),
            "uncertainty_seconds_median": statistics.median(uncertainty), "report_bytes_mean": round(size),
            "constants": decision.outcome["constantsAfter"], "uncertainties": decision.outcome["uncertainties"]}


def per_event_comparison(settings: dict, stored: list, folders: list[Path]) -> dict:
    """Today's per-event chi-square method on the same events against the binned one."""
    ctx = PhaseContext.from_settings(settings)
    phase = phase_for("1.4")
    minLayers = math.ceil(round(0.1 * ctx.nHcalLayers, 9))
    eEcal, eHcal = [], []
    for folder in folders:
        with uproot.open(folder / "step1_kaon.root") as rootFile:
            tree = rootFile["PfoAnalysisTree"].arrays(list(KAON_BRANCHES), library="np")
        selected = (
            (tree["nPfoTargetsTotal"] == 1)
            & (tree["nPfoTargetsNeutralHadrons"] == 1)
            & (tree["nPfosTotal"] == 1)
            & (tree["nPfosNeutralHadrons"] == 1)
            & (tree["pfoMinHCalLayerToEdge"] > minLayers)
        )
        eEcal.append(tree["pfoECalToHadEnergy"][selected].astype(float))
        eHcal.append(tree["pfoHCalToHadEnergy"][selected].astype(float))
    eEcal, eHcal = np.concatenate(eEcal), np.concatenate(eHcal)
    nonEmpty = eEcal + eHcal > 0
    eEcal, eHcal = eEcal[nonEmpty], eHcal[nonEmpty]
    energy, accuracy = ctx.energies["kaon"], ctx.pandoraPFAAccuracy
    target = energy - K0L_MASS
    constants = settings["startingConstants"]
    a, b = float(constants["ECalToHadGeVCalibrationBarrel"]), float(constants["HCalToHadGeVCalibration"])
    began = time.perf_counter()
    band = percsm.csm_band_selection(eEcal, eHcal, target)
    grid = percsm.chi_square_hadronic_scale(eEcal[band], eHcal[band], target, accuracy, beamEnergy=energy)
    replayed = percsm.replay_fixed_point(eEcal, eHcal, target, accuracy, energy, a, b)
    referenceSeconds = time.perf_counter() - began
    merged = Summary.merge_payloads((r["phases"]["1.4"] for _, r in stored), phase.spec(ctx))
    binned = phase.measure(merged, ctx)
    solved = phase.solve(constants, merged, ctx)
    updateReference = phase.update(constants, percsm_measurement(grid), ctx)
    updateBinned = phase.update(constants, binned, ctx)
    rows = {}
    for name in ("ECalToHadGeVCalibrationBarrel", "HCalToHadGeVCalibration"):
        reference = {"ECalToHadGeVCalibrationBarrel": replayed[0], "HCalToHadGeVCalibration": replayed[1]}[name]
        for kind, got, want in (
            ("ratio update", updateBinned[name], updateReference[name]),
            ("offline replay", solved[name], reference),
        ):
            relative = got / want - 1
            rows[f"{name} ({kind})"] = {"relative": relative, "of_accuracy": abs(relative) / accuracy}
    return {"events": int(eEcal.size), "per_event_seconds": referenceSeconds, "differences": rows}


def percsm_measurement(result):
    from ILCDIRAC.CalibrationSystem.Utilities.phases import Measurement

    return Measurement({"interceptEcal": result.interceptEcal, "interceptHcal": result.interceptHcal})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000, help="events per worker and sample")
    parser.add_argument(
        "--accuracy", nargs=2, type=float, default=(0.02, 0.005), metavar=("DIGITISATION", "PANDORAPFA")
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", action="store_true", help="also run today's per-event chi-square method")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="close-") as scratch:
        began = time.perf_counter()
        settings, stored, folders = worker_reports(Path(scratch), args.workers, args.events, tuple(args.accuracy))
        generated = time.perf_counter() - began
        results = {name: time_close(settings, stored, phases, args.repeat) for name, phases in STEPS.items()}
        comparison = per_event_comparison(settings, stored, folders) if args.compare else None
    if args.json:
        print(json.dumps({"workers": args.workers, "events": args.events, "accuracy": args.accuracy, "steps": results,
                          "comparison": comparison}, indent=1))
        return 0
    print(
        f"{args.workers} workers x {args.events} events per sample, "
        f"accuracies {args.accuracy[0]} / {args.accuracy[1]}, "
        f"{os.cpu_count()} cores; reports made in {generated:.0f} s"
    )
    print(f"{'step':16s} {'close min s':>11s} {'median s':>9s} {'uncertainties alone s':>22s} {'report KB':>10s}")
    for name, row in results.items():
        print(
            f"{name:16s} {row['seconds_min']:11.2f} {row['seconds_median']:9.2f} "
            f"{row['uncertainty_seconds_median']:22.2f} "
            f"{row['report_bytes_mean'] / 1000:10.1f}"
        )
    if comparison:
        print(
            f"\nper-event chi-square method on the same {comparison['events']} K0L: "
            f"{comparison['per_event_seconds']:.1f} s "
            "(grid estimate and offline replay, no uncertainties)"
        )
        for name, row in comparison["differences"].items():
            print(f"  {name:52s} {row['relative']:+.2e}  = {row['of_accuracy']:.3f} x accuracy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
