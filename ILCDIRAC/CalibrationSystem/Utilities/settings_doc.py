"""The generated tables of docs/SETTINGS.md: the settings keys (from ``settings_schema``) and the
detector models (from their data files).

The document's prose is written by hand; its two tables are made here from the same data the
loaders validate with, so the document cannot drift from the code (a unit test compares them).
``python -m ILCDIRAC.CalibrationSystem.Utilities.settings_doc docs/SETTINGS.md`` rewrites them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ILCDIRAC.CalibrationSystem.Utilities.detectors import DetectorModel, available_models, load_detector_model
from ILCDIRAC.CalibrationSystem.Utilities.schema import markdown_table
from ILCDIRAC.CalibrationSystem.Utilities.settings_schema import FIELDS

KEYS_HEADER = "| Key | Type | Default | Meaning |"
MODELS_HEADER = "| Model | Aliases | ECAL layers (thin + thick) | HCAL layers | Processors |"


def keys_table() -> str:
    return markdown_table(FIELDS)


def models_table() -> str:
    rows = [MODELS_HEADER, "|---|---|---|---|---|"]
    for name in available_models():
        model = load_detector_model(name)
        aliases = ", ".join(f"`{alias}`" for alias in model.aliases)
        processors = ", ".join(f"`{p}`" for p in (model.DDCaloDigiName, model.DDPandoraPFANewProcessorName,
                                                   model.PfoAnalysisName))
        rows.append(f"| `{name}` | {aliases} | {_ecal_layers(model)} | {model.nHcalLayers} | {processors} |")
    return "\n".join(rows) + "\n"


def _ecal_layers(model: DetectorModel) -> str:
    thin, thick = model.nEcalThinLayers, model.nEcalThickLayers
    tungsten = model.ecalAbsorberThicknessThin
    if thick == 0:
        return f"{thin} + 0" + (f" ({tungsten:g} mm W)" if tungsten else "")
    thickness = model.ecalAbsorberThicknessThick
    layers = (f"{thin} ({tungsten:g} mm) + {thick} ({thickness:g} mm)" if tungsten and thickness
              else f"{thin} + {thick}")
    return f"{layers}, r = {model.ecalResponseCorrectionForThickLayers:g}"


TABLES = {KEYS_HEADER: keys_table, MODELS_HEADER: models_table}


def documented_table(text: str, header: str) -> str:
    """The table that starts with ``header`` in the document's text (up to the first non-table line)."""
    lines = []
    for line in text[text.index(header):].splitlines(keepends=True):
        if not line.startswith("|"):
            break
        lines.append(line)
    return "".join(lines)


def rewrite_document(path: Path) -> None:
    """Replace the generated tables of the settings document at ``path`` with today's."""
    text = path.read_text()
    for header, table in TABLES.items():
        text = text.replace(documented_table(text, header), table(), 1)
    path.write_text(text)


if __name__ == "__main__":
    rewrite_document(Path(sys.argv[1]))
