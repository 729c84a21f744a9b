#!/usr/bin/env python
"""The delivered result folder, run as delivered: the EM scale of fresh photons.

Each configuration of ``ILCDIRAC.CalibrationSystem.localdirac.configurations`` (true constants 10-20 %
away from the starting ones) is calibrated through all three stages in-process (service logic,
real workers, the emulator as Marlin), CLD with the CLDConfig-like fixture folder, the others
with the emulator's own folder. The result files the service stored are then written out as the
results command writes them, and photons the calibration never saw (another seed) are
reconstructed with that folder as it is, adding only what a physicist adds to look at them
(input files, a PfoAnalysis). The EM scale (phase 3.3's estimator) is compared with the
requested pandoraPFAAccuracy, and with what the same folder gives with the Pandora settings and
photon likelihood the user started from (what a result set without the retrained likelihood gave).

Usage: .venv/bin/python benchmarks/result_set.py [--json] [--config NAME ...]
                                                [--accuracy DIGITISATION PANDORAPFA] [--photons N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uproot  # noqa: E402

from ILCDIRAC.CalibrationSystem.localdirac.configurations import CONFIGURATIONS  # noqa: E402
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import run_calibration  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.pandora_settings import histogram_files  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.steering import FolderFiles, read_steering  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.steering_editor import SteeringEditor  # noqa: E402
from ILCDIRAC.CalibrationSystem.Utilities.stored_files import RESULT_PREFIX  # noqa: E402
from marlin_emulator import STEERING  # noqa: E402
from marlin_emulator.run import run as emulate  # noqa: E402
from marlin_emulator.samples import make_sample_files  # noqa: E402

CLD_LIKE = (
    Path(__file__).resolve().parents[1]
    / "ILCDIRAC/CalibrationSystem/test/data/configurations/CLDLike/CLDReconstruction.xml"
)


def em_scale(folder: Path, photons: list[Path], settings: dict, pandoraSettings: str | None = None) -> float:
    """EM mean / photon energy of ``photons`` reconstructed with the folder's steering.xml."""
    parsed = read_steering(FolderFiles(folder), "steering.xml")
    pandora = parsed.running("DDPandoraPFANewProcessor")[0]
    editor = SteeringEditor(parsed)
    editor.set_globals({"LCIOInputFiles": [str(p) for p in photons], "MaxRecordNumber": 0, "SkipNEvents": 0})
    if pandoraSettings:
        editor.set_parameters(pandora, {"PandoraSettingsXmlFile": pandoraSettings})
    pfo = parsed.running("PfoAnalysis")
    if pfo:
        editor.set_parameters(pfo[0], {"RootFile": "photons.root", "CollectCalibrationDetails": 1})
    else:
        editor.add_processor("PhotonAnalysis", "PfoAnalysis", {"RootFile": "photons.root"}, after=pandora)
    (folder / "photons.xml").write_text(editor.texts()["steering.xml"])
    emulate("photons.xml", folder)
    phase, ctx = phase_for("3.3"), PhaseContext.from_settings(settings)
    with uproot.open(folder / "photons.root") as rootFile:
        tree = {b: rootFile["PfoAnalysisTree"][b].array(library="np") for b in phase.branches["gamma"]}
    measured = phase.measure(phase.reduce({"gamma": tree}, ctx), ctx)
    return measured.values["emMean"] / ctx.energies["gamma"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per configuration")
    parser.add_argument("--config", action="append", help="only these configurations (repeatable)")
    parser.add_argument(
        "--accuracy",
        nargs=2,
        type=float,
        default=(0.02, 0.005),
        metavar=("DIGITISATION", "PANDORAPFA"),
        help="digitisationAccuracy and pandoraPFAAccuracy (default: the talk's 0.02 0.005)",
    )
    parser.add_argument("--photons", type=int, default=8000, help="fresh 10 GeV photons to reconstruct")
    args = parser.parse_args(argv)
    accuracy = {"digitisationAccuracy": args.accuracy[0], "pandoraPFAAccuracy": args.accuracy[1]}
    chosen = [c for c in CONFIGURATIONS if not args.config or c.name in args.config]
    rows = []
    with tempfile.TemporaryDirectory(prefix="result-set-") as scratch:
        for configuration in chosen:
            folder = Path(scratch) / configuration.name
            steering = CLD_LIKE if configuration.name == "CLD" else STEERING
            truth = configuration.truth()
            settings = configuration.settings_for(folder, "fast", truth, **accuracy)
            outcome = run_calibration(settings, folder / "calibration", steering=steering)
            delivered = folder / "delivered"
            for name in outcome.db.listFiles(outcome.calibrationID):
                if name.startswith(RESULT_PREFIX):
                    path = delivered / name.removeprefix(RESULT_PREFIX)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(outcome.db.getFile(outcome.calibrationID, name))
            photons = make_sample_files("gamma", 10.0, 4, args.photons // 4, truth, 7, folder / "photons")
            resolved = outcome.db.getCalibration(outcome.calibrationID)["Settings"]
            scale = em_scale(delivered, photons, resolved)
            # the same folder with the Pandora settings and likelihood the user started from
            user = read_steering(FolderFiles(steering.parent), steering.name)
            pandoraSettings = user.processors[user.running("DDPandoraPFANewProcessor")[0]].value(
                "PandoraSettingsXmlFile"
            )
            original = (steering.parent / pandoraSettings).read_text()
            for likelihood in histogram_files(original):
                target = delivered / likelihood
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text((steering.parent / likelihood).read_text())
            (delivered / "original_settings.xml").write_text(original)
            untrained = em_scale(delivered, photons, resolved, "original_settings.xml")
            rows.append(
                {
                    "config": configuration.name,
                    "passes": outcome.passes,
                    "status": outcome.status,
                    "requested": accuracy["pandoraPFAAccuracy"],
                    "delivered_em_scale_deviation": round(scale - 1, 5),
                    "starting_likelihood_em_scale_deviation": round(untrained - 1, 5),
                }
            )
            if args.json:
                print(json.dumps(rows[-1]), flush=True)
    if not args.json:
        print(f"{'configuration':16s} {'passes':>6s} {'requested':>9s} {'delivered':>10s} {'starting likelihood':>20s}")
        for row in rows:
            print(
                f"{row['config']:16s} {row['passes']:6d} {100 * row['requested']:8.2f}% "
                f"{100 * row['delivered_em_scale_deviation']:+9.2f}% "
                f"{100 * row['starting_likelihood_em_scale_deviation']:+19.2f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
