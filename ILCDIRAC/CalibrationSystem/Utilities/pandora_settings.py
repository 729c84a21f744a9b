"""What the calibration reads and edits in a Pandora settings XML: the photon likelihood file.

PhotonReconstruction reads its PDFs from ``<HistogramFile>`` (a path relative to the directory
Marlin runs in), or, with ``ShouldMakePdfHistograms``, writes the PDFs it trains there. The
calibration points the training settings at a file it then collects and, after stage 2, the
user's settings at the merged likelihood. Pandora reads its settings with TinyXML, so they are
located like steering files (comments may hold ``--``) and edited byte for byte.
"""
from __future__ import annotations

from ILCDIRAC.CalibrationSystem.Utilities.marlin_xml import Element, XmlError, apply, parse, set_value

HISTOGRAM_FILE = "HistogramFile"
PHOTON_RECONSTRUCTION = "PhotonReconstruction"


class PandoraSettingsError(ValueError):
    """Pandora settings the calibration cannot use."""


def _elements(name: str, text: str) -> tuple[bytes, list[Element], list[Element]]:
    """(file bytes, <HistogramFile> elements, PhotonReconstruction algorithms) of a settings file."""
    try:
        parsed = parse(name, text)
    except XmlError as exc:
        raise PandoraSettingsError(str(exc)) from None
    if parsed.root.tag != "pandora":
        raise PandoraSettingsError(
            f"{name}: not Pandora settings: the root element is <{parsed.root.tag}>, not <pandora>"
        )
    elements = list(parsed.root.iter())
    files = [e for e in elements if e.tag == HISTOGRAM_FILE]
    photon = [e for e in elements if e.tag == "algorithm" and e.attrs.get("type") == PHOTON_RECONSTRUCTION]
    return parsed.data, files, photon


def histogram_files(text: str, name: str = "Pandora settings") -> list[str]:
    """The likelihood files a Pandora settings file refers to, in order."""
    _, files, _ = _elements(name, text)
    return [e.text().strip() for e in files if e.text().strip()]


def makes_pdf_histograms(text: str, name: str = "Pandora settings") -> bool:
    """Whether a PhotonReconstruction of these settings trains PDFs (ShouldMakePdfHistograms)."""
    _, _, photon = _elements(name, text)
    return any(c.text().strip().lower() in ("true", "1") for a in photon for c in a.children
               if c.tag == "ShouldMakePdfHistograms")


def with_histogram_file(text: str, target: str, name: str = "Pandora settings") -> str:
    """The settings with every HistogramFile pointing at ``target``; refuses settings without one."""
    data, files, _ = _elements(name, text)
    if not files:
        raise PandoraSettingsError(f"{name} has no <{HISTOGRAM_FILE}> to point at the photon likelihood")
    return apply(data, [edit for e in files for edit in set_value(data, e, target)])


__all__ = ["PandoraSettingsError", "histogram_files", "makes_pdf_histograms", "with_histogram_file"]
