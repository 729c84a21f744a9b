"""The one thing the calibration edits in a Pandora settings XML: the photon likelihood file.

PhotonReconstruction reads its PDFs from ``<HistogramFile>``; after stage 2 the default settings
must name the merged likelihood instead of the file they shipped with.
"""
from __future__ import annotations

import re

HISTOGRAM_FILE = re.compile(r"<HistogramFile>\s*([^<\s]+)\s*</HistogramFile>")


def histogram_files(settingsXml: str) -> list[str]:
    """The likelihood files a Pandora settings file refers to."""
    return HISTOGRAM_FILE.findall(settingsXml)


def with_histogram_file(settingsXml: str, name: str) -> str:
    """The settings with every HistogramFile pointing at ``name``; refuses settings without one."""
    updated, count = HISTOGRAM_FILE.subn(f"<HistogramFile>{name}</HistogramFile>", settingsXml)
    if count == 0:
        raise ValueError("the Pandora settings have no <HistogramFile> to point at the new photon likelihood")
    return updated
