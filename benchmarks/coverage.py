#!/usr/bin/env python
"""Coverage of the reported uncertainties: how often each constant lands within 1 and 2 sigma
of the estimators' fixed point, over calibrations repeated on independent samples.

The method is ``ILCDIRAC/CalibrationSystem/test/coverage.py`` (two calibrations per repeat,
digitisation 1.0-1.1 and Pandora scales 1.3-1.4 with the upstream constants fixed; references
from the other repeats' first-step reports); the test suite runs it with a dozen repeats, this
runs as many as asked, for both strategies.

Usage: .venv/bin/python benchmarks/coverage.py [--repeats N] [--strategy fast|legacy ...]
                                              [--config NAME] [--events N] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ILCDIRAC.CalibrationSystem.localdirac.configurations import CONFIGURATIONS  # noqa: E402
from ILCDIRAC.CalibrationSystem.test import coverage  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--strategy", action="append", choices=("fast", "legacy"),
                        help="strategies to judge (repeatable; default both)")
    parser.add_argument("--config", default="CLD", choices=[c.name for c in CONFIGURATIONS])
    parser.add_argument("--events", type=int, default=1000, help="events per worker and sample (4 workers)")
    parser.add_argument("--json", action="store_true", help="one JSON object per pull")
    args = parser.parse_args(argv)
    strategies = args.strategy or ["fast", "legacy"]
    configuration = next(c for c in CONFIGURATIONS if c.name == args.config)
    samples = {"gamma": (4, args.events), "kaon": (4, args.events)}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coverage-") as scratch:
        runs = {
            (name, strategy): [coverage.calibrate(configuration, name, strategy, 1000 + r, Path(scratch), samples)
                               for r in range(args.repeats)]
            for name in coverage.CALIBRATIONS
            for strategy in sorted(set(strategies) | {"fast"})  # the fast runs' first steps give the references
        }
    pulls = [p for (name, strategy), group in runs.items() if strategy in strategies
             for p in coverage.pulls(group, runs[(name, "fast")])]
    if args.json:
        for p in pulls:
            print(json.dumps({"constant": p.constant, "strategy": p.strategy, "seed": p.repeat, "value": p.value,
                              "reference": p.reference, "uncertainty": p.uncertainty, "pull": p.pull}))
        return 0
    print(f"{configuration.name}, {args.repeats} repeats x 4 workers x {args.events} photons and K0L, accuracies "
          f"{coverage.ACCURACY['digitisationAccuracy']} / {coverage.ACCURACY['pandoraPFAAccuracy']}; "
          f"{time.perf_counter() - began:.0f} s")
    print(f"{'strategy':8s} {'constant':32s} {'within 1 sigma':>14s} {'within 2':>9s} {'max |pull|':>10s} "
          f"{'mean pull':>9s} {'rms pull':>8s} {'sigma / value':>13s}")
    for strategy in strategies:
        for constant in coverage.DIGITISATION + coverage.PANDORA:
            chosen = [p for p in pulls if p.strategy == strategy and p.constant == constant]
            z = np.array([p.pull for p in chosen])
            relative = np.mean([p.uncertainty / abs(p.value) for p in chosen])
            print(f"{strategy:8s} {constant:32s} {np.mean(np.abs(z) < 1):14.2f} {np.mean(np.abs(z) < 2):9.2f} "
                  f"{np.max(np.abs(z)):10.2f} {z.mean():+9.2f} {z.std():8.2f} {relative:13.2e}")
        z = np.array([p.pull for p in pulls if p.strategy == strategy])
        print(f"{strategy:8s} {'all ' + str(z.size):32s} {np.mean(np.abs(z) < 1):14.2f} {np.mean(np.abs(z) < 2):9.2f} "
              f"{np.max(np.abs(z)):10.2f} {z.mean():+9.2f} {z.std():8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
