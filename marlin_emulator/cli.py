"""Console scripts: ``marlin-emulator steering.xml`` (behaves like ``Marlin steering.xml``) and
``marlin-emulator-samples`` (writes the emulator's input files).

Like a failed Marlin, a run that cannot be done exits non-zero with one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from marlin_emulator.run import RUN_ERRORS, run
from marlin_emulator.samples import PARTICLES, SampleFileError, make_sample_files
from marlin_emulator.truth import TruthError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="marlin-emulator",
        description="Detector-response emulator standing in for Marlin: reads the steering file's input\n"
        "files and writes what its processors would (PfoAnalysis ROOT file, photon PDF histograms).",
        epilog="example:\n  marlin-emulator steering.xml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("steering", help="Marlin steering XML (paths in it are relative to the current directory)")
    args = parser.parse_args(argv)
    try:
        report = run(args.steering)
    except RUN_ERRORS as exc:
        print(f"marlin-emulator: error: {exc}", file=sys.stderr)
        return 1
    print(f"[ MESSAGE \"marlin-emulator\"] processed {report.events} events from {report.files} input file(s) "
          f"in {report.seconds:.2f} s CPU")
    if report.rootFile is not None:
        print(f"[ MESSAGE \"PfoAnalysis\"] Rootfile: {report.rootFile.name}")
    if report.trainingFile is not None:
        print(f"[ MESSAGE \"PhotonReconstruction\"] wrote PDF histograms to {report.trainingFile.name}")
    elif report.photonId is not None:
        values = " ".join(f"{m:.2f}" for m in report.photonId.mismatch)
        print(f"[ MESSAGE \"PhotonReconstruction\"] photon likelihood mismatch per energy bin: {values}")
    return 0


def samples_main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="marlin-emulator-samples",
        description="Write emulator sample (input) files: single particles or Z->uds events of a detector\n"
        "truth, one file name per line on stdout.",
        epilog="example:\n  marlin-emulator-samples --particle gamma --energy 10 --files 4 --events-per-file 1000 \\\n"
        "      --truth FCCee_o1_v04 --seed 1 --outdir samples/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--particle", required=True, choices=list(PARTICLES), help="particle type")
    parser.add_argument("--energy", required=True, type=float, help="GeV (Z->uds: centre-of-mass energy)")
    parser.add_argument("--files", required=True, type=int, help="number of files")
    parser.add_argument("--events-per-file", required=True, type=int, help="events in each file")
    parser.add_argument("--truth", required=True, help="shipped detector truth name or alias, or a YAML file")
    parser.add_argument("--seed", required=True, type=int, help="random seed (the same seed writes the same events)")
    parser.add_argument("--outdir", required=True, type=Path, help="folder for the files (created if missing)")
    args = parser.parse_args(argv)
    try:
        paths = make_sample_files(
            args.particle, args.energy, args.files, args.events_per_file, args.truth, args.seed, args.outdir
        )
    except (SampleFileError, TruthError, OSError) as exc:
        print(f"marlin-emulator-samples: error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


__all__ = ["main", "samples_main"]
