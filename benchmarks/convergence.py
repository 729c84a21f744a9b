#!/usr/bin/env python
"""Passes and worker CPU seconds of the ``legacy`` and ``fast`` strategies, side by side.

Every configuration of ``ILCDIRAC.CalibrationSystem.localdirac.configurations`` (CLD and the four
FCC-ee ECAL layouts, true constants 10-20 % away from the starting ones) is calibrated through
all three stages in-process (service logic, real workers, the emulator) with each strategy.
A pass is one step: one round trip of all workers over their samples.

Usage: .venv/bin/python benchmarks/convergence.py [--json] [--config NAME ...]
                                                [--accuracy DIGITISATION PANDORAPFA]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ILCDIRAC.CalibrationSystem.localdirac.configurations import CONFIGURATIONS  # noqa: E402

STRATEGIES = ("legacy", "fast")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per configuration and strategy")
    parser.add_argument("--config", action="append", help="only these configurations (repeatable)")
    parser.add_argument("--accuracy", nargs=2, type=float, metavar=("DIGITISATION", "PANDORAPFA"),
                        help="digitisationAccuracy and pandoraPFAAccuracy (default: the tests' 0.02 0.025)")
    args = parser.parse_args(argv)
    overrides = {}
    if args.accuracy:
        overrides = {"digitisationAccuracy": args.accuracy[0], "pandoraPFAAccuracy": args.accuracy[1]}
    chosen = [c for c in CONFIGURATIONS if not args.config or c.name in args.config]
    rows = []
    with tempfile.TemporaryDirectory(prefix="convergence-") as scratch:
        for configuration in chosen:
            for strategy in STRATEGIES:
                outcome = configuration.calibrate(Path(scratch) / configuration.name, strategy, **overrides)
                row = {
                    "config": configuration.name,
                    "strategy": strategy,
                    "passes": outcome.passes,
                    "cpu_seconds": round(outcome.cpuSeconds, 2),
                    "converged": outcome.converged,
                }
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
    if not args.json:
        print(
            f"{'configuration':18s} {'legacy passes':>13s} {'fast passes':>11s} "
            f"{'legacy CPU s':>12s} {'fast CPU s':>10s}  converged"
        )
        for configuration in chosen:
            legacy, fast = (
                next(r for r in rows if r["config"] == configuration.name and r["strategy"] == s) for s in STRATEGIES
            )
            print(f"{configuration.name:18s} {legacy['passes']:13d} {fast['passes']:11d} {legacy['cpu_seconds']:12.1f} "
                  f"{fast['cpu_seconds']:10.1f}  {legacy['converged'] and fast['converged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
