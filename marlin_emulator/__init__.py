"""Detector-response emulator standing in for Marlin + DDCaloDigi + DDMarlinPandora + PfoAnalysis.

It honours the reconstruction contract (docs/ARCHITECTURE.md): ``marlin-emulator steering.xml``
reads a Marlin steering file, reconstructs the events of its (emulator) input files with the
steering's calibration constants and leaves the PfoAnalysis ROOT file, or in photon-training mode
Pandora's likelihood file. Physics: docs/PHYSICS.md (the constants, the phases, section 8).

Modules: ``truth`` (detector truth as data), ``samples`` (input files), ``rng`` (counter-based
random numbers), ``geometry``, ``sim`` (simulated events), ``digitisation`` (DDCaloDigi and
Pandora's MIP scale), ``pandora`` (photon likelihood: settings, PDFs, training), ``reco`` with
``showers``, ``muons``, ``jets`` (Pandora) and ``pfo_tree`` (PfoAnalysis), ``rootio`` (the ROOT
file), ``steering_input``, ``run``, ``cli``.

The emulator's own data: detector truths (``data/truth``) and, in ``data/steering``, a cut-down
CLD-like calibration steering file with the Pandora settings and synthetic photon likelihood it
names (``PandoraSettings/``) and photon-training settings (``CalibrationPandoraSettings/``), laid
out as CLDConfig lays out its own. They serve the emulator's tests and demo only: a real
calibration uses the files its own steering names.
"""
from pathlib import Path

from marlin_emulator.run import RUN_ERRORS, RunReport, event_slices, run
from marlin_emulator.samples import (
    PARTICLES,
    SampleFile,
    SampleFileError,
    make_sample_files,
    read_sample_file,
)
from marlin_emulator.truth import (
    DetectorTruth,
    TruthError,
    available_truths,
    load_truth,
    truth_from_mapping,
)

DATA_DIR = Path(__file__).resolve().parent / "data"
#: The emulator's calibration steering file (CLD-like), in the folder of the files it names.
STEERING_DIR = DATA_DIR / "steering"
STEERING = STEERING_DIR / "calibrationReconstruction.xml"

__all__ = [
    "DATA_DIR",
    "STEERING",
    "STEERING_DIR",
    "PARTICLES",
    "RUN_ERRORS",
    "DetectorTruth",
    "RunReport",
    "SampleFile",
    "SampleFileError",
    "TruthError",
    "available_truths",
    "event_slices",
    "load_truth",
    "make_sample_files",
    "read_sample_file",
    "run",
    "truth_from_mapping",
]
