"""The settings keys, declared once: type, bounds, default and meaning of each.

The settings loader validates and fills in defaults from ``FIELDS``; the detector-model loader
checks a model file's settings keys (those whose default is ``MODEL``) with the same fields; the
key table of docs/SETTINGS.md is generated from them (``settings_doc``). Pure: imported by the
worker on the grid too.
"""
from __future__ import annotations

from types import MappingProxyType

from ILCDIRAC.CalibrationSystem.Utilities.schema import DERIVED, MODEL, REQUIRED, Field
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import StrategyName

DEFAULT_PHASE_SEQUENCE = ("1.0", "1.1", "1.2", "1.3", "1.4", "2.5", "3.0", "3.1", "3.2", "3.3", "3.4")
BACKENDS = ("dirac", "local")
STRATEGIES = tuple(name.value for name in StrategyName)
#: Stages are numbered 1..MAX_STAGE (stopStage's default, 99, means "to the end").
MAX_STAGE = 99

FIELDS: tuple[Field, ...] = (
    Field("numberOfJobs", "int", 100, low=1,
          doc="Number of worker jobs; each reconstructs one fixed slice of every sample for the whole calibration."),
    Field("fractionOfFinishedJobsNeededToStartNextStep", "float", 0.9, low=0, openLow=True, high=1,
          doc="A step closes as soon as ceil(fraction x numberOfJobs) workers have reported; slower ones are ignored for that step."),
    Field("digitisationAccuracy", "float", 0.05, low=0, openLow=True, high=0.5, openHigh=True,
          doc="Relative tolerance of the digitisation phases (x.0, x.1); also sets their histogram bin width (accuracy x E). The talk used 0.02."),
    Field("pandoraPFAAccuracy", "float", 0.025, low=0, openLow=True, high=0.5, openHigh=True,
          doc="Relative tolerance of the PandoraPFA phases (x.3, x.4); also their bin width and chi-square grid step. The talk used 0.005."),
    Field("startStage", "int", 1, low=0,
          doc="First stage to run; with `startPhase` it cuts the phase sequence: phases before (startStage, startPhase) are skipped."),
    Field("startPhase", "int", 0, low=0,
          doc="First phase within `startStage`."),
    Field("stopStage", "int", 99, low=0, high=MAX_STAGE,
          doc="Last stage to run; with `stopPhase` it cuts the phase sequence after (stopStage, stopPhase)."),
    Field("stopPhase", "int", 99, low=0,
          doc="Last phase within `stopStage`."),
    Field("phaseSequence", "phases", DEFAULT_PHASE_SEQUENCE, typeDoc="list of \"stage.phase\"",
          doc="The phases to run, in order. Phase numbers: 0 ECalDigi, 1 HCalDigi, 2 MuonAndHCalOtherDigi, 3 ElectroMagEnergy, 4 HadronicEnergy, 5 PhotonTraining; stages >= 1. A user list replaces the default (extra or skipped phases); the start/stop cut applies to it. Quote the entries in YAML (`\"1.0\"`); unquoted numbers are accepted. The resolved value is the sequence after the cut."),
    Field("disableSoftwareCompensation", "bool", True,
          doc="Run the calibration with `MaxClusterEnergyToApplySoftComp = 0`. The final steering file gets the user's own value back."),
    Field("detectorModel", "str", REQUIRED,
          doc="A model name or alias (`CLIC_o3_v14`, `CLD`, `FCCee_o1_v04`, `FCCee_01_v04_ecal20_10`, `ILD_l5_o1_v02`, ...) or a geometry tarball (`FCCee_01_v04_ecal20_10.tgz`, a path or an LFN). A tarball is kept as given (the jobs ship it); its name without the suffix selects the model data."),
    Field("ecalBarrelCosThetaRange", "range", MODEL,
          doc="abs(cos(theta)) window of the photons used for the ECAL barrel constant (phase x.0). Must end before the endcap window starts."),
    Field("ecalEndcapCosThetaRange", "range", MODEL,
          doc="abs(cos(theta)) window for the ECAL endcap correction factor (phase x.0)."),
    Field("hcalBarrelCosThetaRange", "range", MODEL,
          doc="abs(cos(theta)) window of the K0L used for the HCAL barrel constant (phase x.1). Must end before the endcap window starts."),
    Field("hcalEndcapCosThetaRange", "range", MODEL,
          doc="abs(cos(theta)) window for the HCAL endcap constant (phase x.1)."),
    Field("nEcalThinLayers", "int", MODEL, low=1,
          doc="ECAL layers of the first (thin) type. Thin + thick must equal the model's ECAL layer count."),
    Field("nEcalThickLayers", "int", MODEL, low=0,
          doc="ECAL layers of the second (thick) type, behind the thin ones. If > 0, `ECALLayers` is written into the DDCaloDigi processor."),
    Field("ecalResponseCorrectionForThickLayers", "float", MODEL, low=0, openLow=True, defaultDoc="model (1.0 without thick layers)",
          doc="Thick-layer constant = this x thin-layer constant (never fitted). Required when there are thick layers and the model does not give it."),
    Field("ecalFirstLayerNumber", "int", MODEL, low=0, high=1,
          doc="Number of the first ECAL layer in the cell ID (1 for the CLIC/CLD DD4hep drivers, 0 for ILD's SEcal06). `ECALLayers` = \"first+nThin first+nThin+nThick\", so every thin layer gets CalibrECAL[0] and every thick one CalibrECAL[1] (DDCaloDigi: layer < L0 -> group 0, L0 <= layer < L1 -> group 1)."),
    Field("nHcalLayers", "int", MODEL, low=1,
          doc="HCAL layers; phase x.4 keeps K0L with `pfoMinHCalLayerToEdge > ceil(0.1 x nHcalLayers)`."),
    Field("hcalAbsorberThicknessEndcap", "float", MODEL, low=0, openLow=True, unit="mm",
          doc="HCAL endcap absorber per layer; enters the CalibrHCALOther (ring) formula of phase x.2 (the old code hard-coded 20 mm)."),
    Field("hcalAbsorberThicknessRing", "float", MODEL, low=0, openLow=True, unit="mm",
          doc="HCAL ring absorber per layer (phase x.2)."),
    Field("hcalScintillatorThicknessEndcap", "float", MODEL, low=0, openLow=True, unit="mm",
          doc="HCAL endcap scintillator per layer (phase x.2; the old code hard-coded 3 mm)."),
    Field("hcalScintillatorThicknessRing", "float", MODEL, low=0, openLow=True, unit="mm",
          doc="HCAL ring scintillator per layer (phase x.2)."),
    Field("ecalMipThreshold", "float", MODEL, low=0, openLow=True, unit="MIP",
          doc="DDMarlinPandora's ECalMipThreshold of the model (informational: the steering file's value is used by Marlin)."),
    Field("hcalMipThreshold", "float", MODEL, low=0, openLow=True, unit="MIP",
          doc="DDMarlinPandora's HCalMipThreshold of the model (informational, as above)."),
    Field("marlinVersion", "optstr", None, word=True, defaultDoc="none; required for `backend: dirac`",
          doc="The iLCSoft/Key4hep release the grid jobs set up (e.g. `ILCSOft-2019-07-09_gcc62`; one word: letters, digits, `._+-`). Quote it in YAML if it looks like a number."),
    Field("DDCaloDigiName", "str", MODEL,
          doc="Name of the DDCaloDigi processor that carries the digitisation constants (CLD: `MyDDCaloDigi_10ns`, CLIC: `MyDDCaloDigi`). If no processor of this name is run, the one DDCaloDigi that `<execute>` runs is used; several is an error (see [STEERING.md](STEERING.md))."),
    Field("DDPandoraPFANewProcessorName", "str", MODEL,
          doc="Name of the DDMarlinPandora processor (CLD: `MyDDMarlinPandora_10ns`, CLIC: `MyDDMarlinPandora`); found by type like `DDCaloDigiName`."),
    Field("PfoAnalysisName", "str", MODEL, defaultDoc="model (`MyPfoAnalysis`)",
          doc="Name of the PfoAnalysis processor the workers read (they force `CollectCalibrationDetails`, the muon histogram binning and `RootFile`). Found by type like `DDCaloDigiName`; without one the workers add a PfoAnalysis after Pandora under this name."),
    Field("outputPath", "lfn", None, typeDoc="LFN or none",
          doc="Where the agent uploads the final results (as you, with your proxy): an LFN folder inside your grid user folder `/<vo>/user/<initial>/<you>` (`LFN:` prefix optional; kept in normal form, `..` refused). Never a local folder: without it, take the results with `dirac-clic-calibration-results`."),
    Field("outputSE", "optstr", None, word=True, defaultDoc="none; required with `outputPath`",
          doc="Storage element for `outputPath` (one word: letters, digits, `._+-`)."),
    Field("steeringFile", "str", REQUIRED,
          doc="The user's Marlin steering file, read as Marlin reads it (constants, includes, groups, conditions: [STEERING.md](STEERING.md)). Looked up next to the settings file; the resolved value is its absolute path. The files it includes and the Pandora files travel with it, with their paths relative to its folder."),
    Field("gammaFiles", "files", (),
          doc="10 GeV photon sample: needed by phases x.0 and x.3."),
    Field("kaonFiles", "files", (),
          doc="50 GeV K0L sample: needed by phases x.1, x.2 and x.4."),
    Field("muonFiles", "files", (),
          doc="10 GeV muon sample: needed by phase x.2."),
    Field("zudsFiles", "files", (),
          doc="Z -> uds sample: needed by the photon-training phase x.5."),
    Field("gammaEnergy", "float", 10.0, low=0, openLow=True, unit="GeV",
          doc="True energy of the photon sample."),
    Field("kaonEnergy", "float", 50.0, low=0, openLow=True, unit="GeV",
          doc="True (total) energy of the K0L sample; targets use T = E - 0.497672."),
    Field("muonEnergy", "float", 10.0, low=0, openLow=True, unit="GeV",
          doc="Energy of the muon sample."),
    Field("zudsEnergy", "float", 200.0, low=0, openLow=True, unit="GeV",
          doc="Label energy of the Z -> uds sample (unused by the physics)."),
    Field("gammaEventsPerFile", "int", 1000, low=1,
          doc="Events in each photon file (the files are opaque; this sets the worker slices)."),
    Field("kaonEventsPerFile", "int", 1000, low=1,
          doc="Events in each K0L file."),
    Field("muonEventsPerFile", "int", 1000, low=1,
          doc="Events in each muon file."),
    Field("zudsEventsPerFile", "int", 1000, low=1,
          doc="Events in each Z -> uds file."),
    Field("startingConstants", "constants", None, typeDoc="mapping", defaultDoc="model",
          doc="Marlin parameter name -> starting value, merged per key over the model's. `CalibrECAL` is `[thin, thick]` (one number means `[c, r x c]` with r = `ecalResponseCorrectionForThickLayers`); all other values are positive numbers. Allowed names: CalibrECAL, ECALEndcapCorrectionFactor, CalibrHCALBarrel, CalibrHCALEndcap, CalibrHCALOther, HCALEndcapCorrectionFactor (DDCaloDigi); ECalToMipCalibration, HCalToMipCalibration, MuonToMipCalibration, ECalToEMGeVCalibration, HCalToEMGeVCalibration, ECalToHadGeVCalibrationBarrel, ECalToHadGeVCalibrationEndCap, HCalToHadGeVCalibration, MaxHCalHitHadronicEnergy (DDMarlinPandora). `MaxClusterEnergyToApplySoftComp` is not a starting constant (see `disableSoftwareCompensation`)."),
    Field("maxIterationsPerPhase", "int", 30, low=1,
          doc="A phase that has not converged after this many steps fails the calibration."),
    Field("maxFailedWorkerFraction", "float", 0.5, low=0, openLow=True, high=1,
          doc="The calibration fails when this fraction of the workers has failed for good."),
    Field("maxResubmissionsPerWorker", "int", 3, low=0,
          doc="How often the agent resubmits one failed worker job."),
    Field("marlinExecutable", "str", "Marlin",
          doc="The reconstruction command; workers run `<marlinExecutable> step<N>_<sample>.xml` in a folder holding the user's files (tests and the demo point it at the emulator)."),
    Field("steeringConstants", "strmap", None, typeDoc="mapping",
          doc="Marlin constant name -> value, as `Marlin --constant.NAME=VALUE` sets them (e.g. ILDConfig's `DetectorModel: ILD_l5_o1_v02`). Each must be a `<constant>` the steering file (or an include) defines; the workers' and the delivered steering files carry the value in that `<constant>`. At most 100, each name and value at most 1000 characters."),
    Field("backend", "choice", "dirac", choices=BACKENDS,
          doc="Where workers run: grid jobs, or local processes on the service machine. `local` exists only on single-user installations, for the users the administrator lists (docs/SECURITY.md); a grid calibration's geometry tarball must then be an LFN."),
    Field("strategy", "choice", StrategyName.FAST.value, choices=STRATEGIES,
          doc="`legacy` reproduces the original one-phase-per-step procedure; `fast` skips confirming passes of phases whose observable is proportional to their constant."),
    Field("pandoraSettingsFile", "optstr", None, defaultDoc="the steering's",
          doc="Pandora settings used by the reconstruction, relative to the steering file's folder. By default the file the Pandora processor's `PandoraSettingsXmlFile` names; set it to use another (the workers then set `PandoraSettingsXmlFile` to it). From stage 3 on, a copy whose `<HistogramFile>` names the retrained photon likelihood."),
    Field("pandoraSettingsTrainingFile", "optstr", None, defaultDoc="found",
          doc="Pandora settings of the photon-training phase (x.5): a PhotonReconstruction with `ShouldMakePdfHistograms` and a `<HistogramFile>`. By default `PandoraSettingsPhotonTraining.xml` in `CalibrationPandoraSettings/` (CLDConfig, CLICPerformance), beside the Pandora settings (ILDConfig) or beside the steering file, whichever exists first."),
    Field("cpuTime", "int", 172800, low=1, unit="s",
          doc="CPU time requested for each grid job."),
    Field("platform", "str", "x86_64-el9-gcc13-opt", word=True,
          doc="Platform of the software release the grid jobs need (one word)."),
    Field("notifyByMail", "bool", True,
          doc="Mail the owner (at their DIRAC Registry `Email`) once when the calibration finished (after the results were delivered, saying where) or failed (with the reason). A killed calibration is not mailed about."),
    Field("detectorModelName", "derived", DERIVED, typeDoc="str",
          doc="The canonical model name behind `detectorModel` (an alias or tarball resolves to it). Output only: accepted on input only if it agrees with `detectorModel`."),
    Field("geometryTarball", "derived", DERIVED, typeDoc="str or none",
          doc="`detectorModel` when it names a geometry tarball the jobs must ship, else none. Output only, like `detectorModelName`."),
)

#: Every key by name, in the order of ``FIELDS`` (the order of the documentation and of ``Settings``).
BY_NAME = MappingProxyType({f.name: f for f in FIELDS})
#: Keys a user may set (the derived ones are output only).
INPUT_KEYS = tuple(f.name for f in FIELDS if f.default is not DERIVED)
#: Keys computed from ``detectorModel``; accepted on input only when they agree with it.
DERIVED_KEYS = tuple(f.name for f in FIELDS if f.default is DERIVED)
#: Keys whose default the detector model supplies (a model file spells them the same way).
MODEL_KEYS = tuple(f.name for f in FIELDS if f.default is MODEL)
