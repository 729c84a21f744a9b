"""The catalogue of calibration phases, by phase number (as in the original procedure).

The phase *sequence* (which stage runs which phases, in which order) is data in the settings;
this catalogue only says what each phase number means.
"""
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import Measurement, Phase, PhaseContext
from ILCDIRAC.CalibrationSystem.Utilities.phases.ecal_digitisation import EcalDigitisation
from ILCDIRAC.CalibrationSystem.Utilities.phases.em_scale import EmScale
from ILCDIRAC.CalibrationSystem.Utilities.phases.hadronic_scale import HadronicScale
from ILCDIRAC.CalibrationSystem.Utilities.phases.hcal_digitisation import HcalDigitisation
from ILCDIRAC.CalibrationSystem.Utilities.phases.mip_scale import MipScale
from ILCDIRAC.CalibrationSystem.Utilities.phases.photon_training import PhotonTraining
from ILCDIRAC.CalibrationSystem.Utilities.vocabulary import PhaseKey

PHASES: dict[int, Phase] = {
    phase.number: phase
    for phase in (EcalDigitisation(), HcalDigitisation(), MipScale(), EmScale(), HadronicScale(), PhotonTraining())
}


def phase_for(key: str) -> Phase:
    """The phase of a "stage.phase" key such as "1.0"."""
    number = PhaseKey.parse(key).phase
    try:
        return PHASES[number]
    except KeyError:
        raise KeyError(f"no calibration phase number {number} (known: {sorted(PHASES)})") from None


__all__ = ["PHASES", "Measurement", "Phase", "PhaseContext", "phase_for"]
